-- When the current login began to be linked (the first QR or pairing code of a linking
-- attempt). The inbound catch-up of an organization that has stored no message yet reads its
-- chats from this moment: what arrived after it is the organization's traffic, what came before
-- is earlier history (`wad import`'s work).
ALTER TABLE whatsapp_sessions ADD COLUMN link_started_at timestamptz;
