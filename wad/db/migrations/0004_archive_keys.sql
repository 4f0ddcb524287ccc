-- Login archives (issue 17): the id of the key that sealed each archive (NULL: format 1, sealed
-- before key ids existed; `wad secret rotate` re-seals those) and when an archive last restored
-- a profile successfully (the newest such archive is never pruned).
ALTER TABLE session_archives
    ADD COLUMN key_id text CHECK (key_id ~ '^[0-9a-f]{16}$'),
    ADD COLUMN restored_at timestamptz;
