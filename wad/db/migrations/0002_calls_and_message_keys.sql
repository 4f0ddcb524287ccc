-- Calls become messages (exported chats list them), and every message carries a derived key
-- that the live import and the export import both check, so that one chat imported both ways
-- is stored once (see wad.db.repo.messages.content_key).

ALTER TABLE messages DROP CONSTRAINT messages_type_check;
ALTER TABLE messages ADD CONSTRAINT messages_type_check CHECK (type IN (
    'text', 'image', 'video', 'audio', 'document', 'sticker', 'location', 'vcard', 'call',
    'other'));

-- Chat, minute of WhatsApp's time, direction and normalised content, hashed; not unique (two
-- "ok"s in one minute are two messages): the import counts them.
ALTER TABLE messages ADD COLUMN content_key text;
CREATE INDEX messages_content_key ON messages (organization_id, wa_chat_id, content_key)
    WHERE content_key IS NOT NULL;
