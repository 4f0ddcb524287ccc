-- The door of the send queue in one round trip (issue 20): `wad_send_door` takes the
-- organization's queueing lock (the advisory lock `wad.outbox:<org>` that bulk sends take too)
-- and then, with a snapshot taken after the lock (a VOLATILE function's statements each take
-- their own), reads everything the door decides on: the message queued earlier with the same
-- idempotency key, the session's sending state, the settings, the sends of the last day and
-- the messages pending, and the client and active conversation of the number. The lock lasts
-- until the caller's transaction ends. No row: no such organization.
CREATE FUNCTION wad_send_door(p_org uuid, p_key text, p_since timestamptz, p_phone text)
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
           (SELECT count(*) FROM outbox q
            WHERE q.organization_id = p_org AND q.status IN ('QUEUED', 'SENDING')),
           c.id, v.id
    FROM organizations o
    LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id
    LEFT JOIN clients c ON c.organization_id = o.id AND c.phone = p_phone
    LEFT JOIN conversations v ON v.client_id = c.id AND v.status = 'ACTIVE'
                             AND v.channel = 'WHATSAPP'
    WHERE o.id = p_org;
END
$$;

-- A plain send in one statement: `wad_send` takes the same lock, checks what `wad_send_door`
-- reads, and queues the message when nothing stands in its way; it queues nothing (no row)
-- whenever anything does: the idempotency key was used, the settings are not the document
-- the caller decided on (`p_settings`), the session is banned or its sending paused, the number
-- has no client with an active conversation yet, or one more message does not fit in a window
-- (`p_window_s[i]` seconds long, at most `p_window_limit[i]` messages, counting the sends in
-- `(p_now - length, p_now]` and every pending message). The caller then goes through the full
-- door, which answers each of these cases.
CREATE FUNCTION wad_send(
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
    SELECT count(*) INTO v_pending FROM outbox
    WHERE organization_id = p_org AND status IN ('QUEUED', 'SENDING');
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
