-- Processing an incoming message in fewer round trips (issue 20). A lone message from a new
-- sender made about 22 round trips; each costs the daemon's event loop and PostgreSQL more than
-- the statement itself. Four of its transactions (BEGIN, statements, feed entries, COMMIT)
-- become one call each here:
--   * `wad_record_changes`: the feed's entries (`changes`), the organization's cursor and the
--     NOTIFY; `wad.db.repo.changes.record` calls it too, so the feed is written
--     in one place;
--   * `wad_finish_processing`: messages processed (`DONE`, conversation, language), their
--     conversations' `last_message_at`, and their `message.stored` entries;
--   * `wad_update_client`: a client's metadata, name and preferred language, and its
--     `client.updated` entry;
--   * `wad_upsert_clients`: new clients (and changed push names), with their entries.
-- The entries' payloads are built here as `wad.db.repo.changes.message_data` and `client_data`
-- build them (tests/db/test_feed_sql.py holds the two to the same output).

-- A time as Python's `datetime.isoformat()` writes an aware UTC time: microseconds only when
-- there are any.
CREATE FUNCTION wad_iso(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN extract(microseconds FROM t) % 1000000 = 0 THEN ''
                   ELSE to_char(t AT TIME ZONE 'UTC', '.US') END
           || '+00:00'
$$;

CREATE FUNCTION wad_message_data(m messages, p_client_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'messageId', m.id::text, 'waMessageId', m.wa_message_id,
        'conversationId', m.conversation_id::text, 'clientId', p_client_id::text,
        'waChatId', m.wa_chat_id, 'direction', m.direction, 'sender', m.sender,
        'type', m.type, 'body', m.body, 'caption', m.caption,
        'timestamp', wad_iso(m.sent_at), 'status', m.status, 'language', m.language,
        'editedAt', wad_iso(m.edited_at))
$$;

CREATE FUNCTION wad_client_data(c clients) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'clientId', c.id::text, 'phone', c.phone, 'name', c.name, 'pushName', c.push_name,
        'savedName', c.saved_name, 'profilePictureUrl', c.profile_picture_url,
        'preferredLanguage', c.preferred_language, 'status', c.status,
        'metadata', c.metadata, 'createdAt', wad_iso(c.created_at),
        'updatedAt', wad_iso(c.updated_at))
$$;

-- Entries of one organization's feed, with consecutive cursors in the order given; answers the
-- last cursor (0 for none). The cursor's row stays locked until the transaction ends, so
-- cursors grow in commit order.
CREATE FUNCTION wad_record_changes(p_org uuid, p_kinds text[], p_data jsonb[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_count int := coalesce(cardinality(p_kinds), 0);
    v_last bigint;
BEGIN
    IF v_count = 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO change_cursors AS c (organization_id, last) VALUES (p_org, v_count)
    ON CONFLICT (organization_id) DO UPDATE SET last = c.last + v_count
    RETURNING last INTO v_last;
    INSERT INTO changes (organization_id, seq, kind, data)
    SELECT p_org, v_last - v_count + u.n, u.kind, u.data
    FROM unnest(p_kinds, p_data) WITH ORDINALITY AS u(kind, data, n);
    PERFORM pg_notify('wad_changes', p_org::text);
    RETURN v_last;
END
$$;

-- Messages processed: `DONE` (one attempt counted, the error cleared), in their conversation
-- and language (each kept when NULL), their conversations' `last_message_at` moved up to them,
-- and a `message.stored` entry each in the feed, in the order given. Answers how many were
-- found.
CREATE FUNCTION wad_finish_processing(p_org uuid, p_ids uuid[], p_conversation_ids uuid[],
                                      p_languages text[], p_client_ids uuid[])
RETURNS int LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_data jsonb[];
BEGIN
    UPDATE conversations c SET last_message_at = greatest(c.last_message_at, t.at)
    FROM (SELECT u.conversation_id, max(m.sent_at) AS at
          FROM unnest(p_ids, p_conversation_ids) AS u(id, conversation_id)
          JOIN messages m ON m.id = u.id
          WHERE u.conversation_id IS NOT NULL
          GROUP BY u.conversation_id) t
    WHERE c.id = t.conversation_id;
    WITH u AS (
        SELECT * FROM unnest(p_ids, p_conversation_ids, p_languages, p_client_ids)
            WITH ORDINALITY AS u(id, conversation_id, language, client_id, n)
    ), done AS (
        UPDATE messages m SET processing_state = 'DONE', processing_error = NULL,
            processing_attempts = m.processing_attempts + 1,
            conversation_id = coalesce(u.conversation_id, m.conversation_id),
            language = coalesce(u.language, m.language)
        FROM u WHERE m.id = u.id AND m.organization_id = p_org
        RETURNING u.n, wad_message_data(m, u.client_id) AS data
    )
    SELECT array_agg(done.data ORDER BY done.n) INTO v_data FROM done;
    PERFORM wad_record_changes(p_org, array_fill('message.stored'::text,
                                                 ARRAY[coalesce(cardinality(v_data), 0)]),
                               v_data);
    RETURN coalesce(cardinality(v_data), 0);
END
$$;

-- A client's metadata merged with P_METADATA (its keys replaced or added), its name set to the
-- best one known (saved, else push, else the metadata's given name) and its preferred language
-- to P_PREFERRED when given; written, with a `client.updated` entry, only when something
-- changes. Answers the client as it is now (no row: no such client).
CREATE FUNCTION wad_update_client(p_id uuid, p_metadata jsonb, p_preferred text)
RETURNS SETOF clients LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_old clients;
    v_new clients;
    v_metadata jsonb;
    v_best text;
    v_preferred text := nullif(p_preferred, '');
BEGIN
    SELECT * INTO v_old FROM clients WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_metadata := v_old.metadata || coalesce(p_metadata, '{}'::jsonb);
    v_best := coalesce(nullif(v_old.saved_name, ''), nullif(v_old.push_name, ''),
                       nullif(v_metadata->>'given_name', ''));
    IF v_metadata = v_old.metadata
       AND (v_best IS NULL OR v_best = v_old.name)
       AND (v_preferred IS NULL OR v_preferred = v_old.preferred_language) THEN
        RETURN NEXT v_old;
        RETURN;
    END IF;
    UPDATE clients SET metadata = v_metadata, name = coalesce(v_best, name),
                       preferred_language = coalesce(v_preferred, preferred_language)
    WHERE id = p_id RETURNING * INTO v_new;
    PERFORM wad_record_changes(v_new.organization_id, ARRAY['client.updated'],
                               ARRAY[wad_client_data(v_new)]);
    RETURN NEXT v_new;
END
$$;

-- Clients by phone, created when missing, their push names refreshed when given and different
-- (as `wad.db.repo.clients.upsert_many` asks, for the phones it did not find as wanted): each
-- creation or change with its `client.created` or `client.updated` entry, in the order of the
-- phones. Answers the clients written, each with whether it was created; a phone whose client
-- needed no change is not answered.
CREATE FUNCTION wad_upsert_clients(p_org uuid, p_phones text[], p_push_names text[])
RETURNS TABLE (client clients, created boolean) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_rows clients[];
    v_created boolean[];
BEGIN
    WITH written AS (
        INSERT INTO clients AS c (organization_id, phone, push_name)
        SELECT p_org, u.phone, u.push_name
        FROM unnest(p_phones, p_push_names) AS u(phone, push_name)
        ON CONFLICT (organization_id, phone) DO UPDATE
            SET push_name = coalesce(EXCLUDED.push_name, c.push_name)
            WHERE EXCLUDED.push_name IS NOT NULL
                  AND EXCLUDED.push_name IS DISTINCT FROM c.push_name
        RETURNING c AS row, (c.xmax = 0) AS made
    )
    SELECT array_agg(w.row ORDER BY (w.row).phone), array_agg(w.made ORDER BY (w.row).phone)
    INTO v_rows, v_created FROM written w;
    PERFORM wad_record_changes(
        p_org,
        ARRAY(SELECT CASE WHEN v_created[i] THEN 'client.created' ELSE 'client.updated' END
              FROM generate_subscripts(v_rows, 1) AS i ORDER BY i),
        ARRAY(SELECT wad_client_data(v_rows[i]) FROM generate_subscripts(v_rows, 1) AS i
              ORDER BY i));
    RETURN QUERY SELECT v_rows[i], v_created[i] FROM generate_subscripts(v_rows, 1) AS i
                 ORDER BY i;
END
$$;
