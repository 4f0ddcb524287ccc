-- Each organization's pending messages (QUEUED or SENDING), kept by triggers (issue 20): the send
-- door used to count them on every message, and a queue can hold an hour's worth (up to 1,200
-- a day's limit allows); ten clients queueing at once then spent PostgreSQL's CPU recounting
-- them. The row of an organization is made with it; every insert, status change and deletion of
-- an outbox row moves its count when its transaction commits. A cascade from a deleted
-- organization only updates, so it can never recreate the row of the organization it is
-- deleting.
CREATE TABLE outbox_pending (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    pending bigint NOT NULL DEFAULT 0
);

INSERT INTO outbox_pending (organization_id, pending)
SELECT o.id, (SELECT count(*) FROM outbox x
              WHERE x.organization_id = o.id AND x.status IN ('QUEUED', 'SENDING'))
FROM organizations o;

CREATE FUNCTION wad_organization_made() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (organization_id) VALUES (NEW.id);
    RETURN NULL;
END
$$;

CREATE TRIGGER organization_made AFTER INSERT ON organizations
    FOR EACH ROW EXECUTE FUNCTION wad_organization_made();

CREATE FUNCTION wad_outbox_pending_moved() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_was int := 0;  -- whether the row counted before the change
    v_is int := 0;  -- and after it
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status IN ('QUEUED', 'SENDING') THEN
        v_was := 1;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN ('QUEUED', 'SENDING') THEN
        v_is := 1;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.organization_id <> NEW.organization_id THEN
        UPDATE outbox_pending SET pending = pending - v_was
        WHERE organization_id = OLD.organization_id AND v_was = 1;
        UPDATE outbox_pending SET pending = pending + v_is
        WHERE organization_id = NEW.organization_id AND v_is = 1;
    ELSIF v_is <> v_was THEN
        UPDATE outbox_pending SET pending = pending + v_is - v_was
        WHERE organization_id = CASE WHEN TG_OP = 'DELETE' THEN OLD.organization_id
                                     ELSE NEW.organization_id END;
    END IF;
    RETURN NULL;
END
$$;

-- Deferred to the commit: the count's row is locked only while a transaction commits, never
-- while it still waits for another lock. (Moved at once, a status change that then waited for
-- the queueing lock held the count's row against the door holding that lock, which waited for
-- the row to queue its message: a deadlock.)
CREATE CONSTRAINT TRIGGER outbox_pending_moved
    AFTER INSERT OR UPDATE OF status, organization_id OR DELETE ON outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION wad_outbox_pending_moved();

-- The door's two functions (0013) read the count instead of counting.
CREATE OR REPLACE FUNCTION wad_send_door(p_org uuid, p_key text, p_since timestamptz, p_phone text)
RETURNS TABLE (earlier_id uuid, session_state text, session_error text, sending_paused boolean,
               sending_paused_reason text, settings jsonb, sent timestamptz[], pending bigint,
               client_id uuid, conversation_id uuid)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('wad.outbox:' || p_org::text, 0));
    RETURN QUERY
    SELECT (SELECT e.id FROM outbox e
            WHERE p_key IS NOT NULL AND e.organization_id = p_org AND e.idempotency_key = p_key),
           s.state, s.last_error, s.sending_paused, s.sending_paused_reason, o.settings,
           coalesce((SELECT array_agg(x.sent_at ORDER BY x.sent_at) FROM outbox x
                     WHERE x.organization_id = p_org AND x.sent_at >= p_since), '{}'),
           coalesce((SELECT p.pending FROM outbox_pending p WHERE p.organization_id = p_org), 0),
           c.id, v.id
    FROM organizations o
    LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id
    LEFT JOIN clients c ON c.organization_id = o.id AND c.phone = p_phone
    LEFT JOIN conversations v ON v.client_id = c.id AND v.status = 'ACTIVE'
                             AND v.channel = 'WHATSAPP'
    WHERE o.id = p_org;
END
$$;

CREATE OR REPLACE FUNCTION wad_send(
    p_org uuid, p_key text, p_now timestamptz, p_phone text, p_settings jsonb,
    p_window_s double precision[], p_window_limit integer[], p_content text,
    p_priority integer, p_sender text, p_agent_name text, p_not_before timestamptz,
    p_expires_at timestamptz)
RETURNS SETOF outbox
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_client uuid;
    v_conversation uuid;
    v_pending bigint;
    v_used bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('wad.outbox:' || p_org::text, 0));
    IF p_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM outbox WHERE organization_id = p_org AND idempotency_key = p_key) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM organizations WHERE id = p_org AND settings = p_settings) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM whatsapp_sessions WHERE organization_id = p_org
               AND (state = 'BANNED' OR sending_paused)) THEN
        RETURN;
    END IF;
    SELECT c.id, v.id INTO v_client, v_conversation
    FROM clients c JOIN conversations v ON v.client_id = c.id AND v.status = 'ACTIVE'
                                       AND v.channel = 'WHATSAPP'
    WHERE c.organization_id = p_org AND c.phone = p_phone;
    IF v_conversation IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce((SELECT pending FROM outbox_pending WHERE organization_id = p_org), 0)
    INTO v_pending;
    FOR i IN 1 .. coalesce(array_length(p_window_s, 1), 0) LOOP
        SELECT count(*) INTO v_used FROM outbox
        WHERE organization_id = p_org AND sent_at <= p_now
          AND sent_at > p_now - make_interval(secs => p_window_s[i]);
        IF v_used + v_pending + 1 > p_window_limit[i] THEN
            RETURN;
        END IF;
    END LOOP;
    RETURN QUERY
    WITH queued AS (
        INSERT INTO outbox (organization_id, to_phone, content, priority, sender, agent_name,
                            idempotency_key, client_id, conversation_id, not_before, expires_at)
        VALUES (p_org, p_phone, p_content, p_priority, p_sender, p_agent_name, p_key, v_client,
                v_conversation, p_not_before, p_expires_at)
        ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL
            DO NOTHING
        RETURNING *
    ), event AS (
        INSERT INTO outbox_events (outbox_id, status) SELECT id, status FROM queued
    )
    SELECT * FROM queued;
END
$$;
