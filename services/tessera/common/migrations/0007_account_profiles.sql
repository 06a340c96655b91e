-- An account's profile, readable and writable through auth's GetAccount and
-- UpdateAccount (the player for their own account, an admin for any); the rules
-- on each field are in tessera.auth.profiles. metadata is a JSON object of the
-- game's own (at most 16 KiB).
ALTER TABLE accounts
    ADD COLUMN display_name text NOT NULL DEFAULT '',
    ADD COLUMN avatar_url   text NOT NULL DEFAULT '',
    ADD COLUMN lang_tag     text NOT NULL DEFAULT '',
    ADD COLUMN location     text NOT NULL DEFAULT '',
    ADD COLUMN timezone     text NOT NULL DEFAULT '',
    ADD COLUMN metadata     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object');
