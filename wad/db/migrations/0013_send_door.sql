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
