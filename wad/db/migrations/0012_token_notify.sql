-- API tokens are cached by the daemons that serve the API (issue 20): a token's revocation (or
-- any change that decides what it may do, or its deletion with its organization) is announced
-- on `wad_api_tokens` with the token's id, so that every daemon drops it from its cache at once.
CREATE FUNCTION wad_api_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wad_api_tokens', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_tokens_changed
    AFTER UPDATE OF revoked_at, role, organization_id, token_hash OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION wad_api_token_changed();
