-- wad's initial schema (SPEC section 9). The invariants live here, not only in Python:
-- every status/role/direction column is checked, phone numbers are E.164, and an organization's
-- rows go with it. `updated_at` columns are kept by one trigger, so every writer gets it right.
-- Portable to PostgreSQL 13+ (gen_random_uuid is built in since 13).

CREATE FUNCTION wad_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Organizations ------------------------------------------------------------------------------

CREATE TABLE organizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    settings jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API tokens: only a hash of the token is stored; `prefix` lets a person recognise one.

CREATE TABLE api_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid REFERENCES organizations (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('SUPER_ADMIN', 'ADMIN', 'AGENT', 'VIEWER')),
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) >= 16),
    prefix text NOT NULL CHECK (char_length(prefix) BETWEEN 1 AND 16),
    name text NOT NULL DEFAULT '' CHECK (char_length(name) <= 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz,
    -- A super admin token belongs to no organization; every other token to exactly one.
    CONSTRAINT api_tokens_super_admin_has_no_org
        CHECK ((role = 'SUPER_ADMIN') = (organization_id IS NULL))
);
CREATE INDEX api_tokens_org ON api_tokens (organization_id);

-- WhatsApp sessions: one row per organization ----------------------------------------------

CREATE TABLE whatsapp_sessions (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'DISCONNECTED' CHECK (state IN (
        'DISCONNECTED', 'CONNECTING', 'QR_CODE_PENDING', 'PAIRING_CODE_PENDING', 'CONNECTED',
        'ERROR', 'LOGGED_OUT', 'BANNED')),
    -- Desired state: the organization was connected and not disconnected since.
    should_run boolean NOT NULL DEFAULT false,
    qr_payload text,
    qr_issued_at timestamptz,
    pairing_code text,
    pairing_code_issued_at timestamptz,
    last_error text,
    last_connected_at timestamptz,
    last_disconnected_at timestamptz,
    wa_version text,
    phone_number text CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    push_name text,
    node_id text,
    -- The outbound circuit breaker (restricted or banned account): the queue is kept.
    sending_paused boolean NOT NULL DEFAULT false,
    sending_paused_reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX whatsapp_sessions_should_run ON whatsapp_sessions (organization_id)
    WHERE should_run;
CREATE TRIGGER whatsapp_sessions_updated_at BEFORE UPDATE ON whatsapp_sessions
    FOR EACH ROW EXECUTE FUNCTION wad_touch_updated_at();

-- Every archive version is kept (the daemon never deletes login data); the newest is restored.
CREATE TABLE session_archives (
    id bigserial PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    archive bytea NOT NULL,  -- encrypted by the caller
    sha256 bytea NOT NULL CHECK (octet_length(sha256) = 32),  -- of the plaintext
    size bigint NOT NULL CHECK (size >= 0),  -- of the plaintext, in bytes
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_archives_latest ON session_archives (organization_id, id DESC);

-- Clients and their place in the sales funnel -----------------------------------------------

CREATE TABLE clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    phone text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    name text,
    push_name text,
    saved_name text,
    profile_picture_url text,
    preferred_language text,
    status text NOT NULL DEFAULT 'NEW_LEAD' CHECK (status IN (
        'NEW_LEAD', 'QUALIFIED', 'WARMED', 'PROPOSAL_SENT', 'NEGOTIATION', 'SOLD', 'SERVICE',
        'CLOSED')),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clients_org_phone UNIQUE (organization_id, phone),
    -- Lets child tables insist that their client belongs to the same organization.
    CONSTRAINT clients_org_id UNIQUE (organization_id, id)
);
CREATE TRIGGER clients_updated_at BEFORE UPDATE ON clients
    FOR EACH ROW EXECUTE FUNCTION wad_touch_updated_at();

CREATE TABLE client_status_history (
    id bigserial PRIMARY KEY,
    client_id uuid NOT NULL,
    organization_id uuid NOT NULL,
    from_status text CHECK (from_status IN (
        'NEW_LEAD', 'QUALIFIED', 'WARMED', 'PROPOSAL_SENT', 'NEGOTIATION', 'SOLD', 'SERVICE',
        'CLOSED')),
    to_status text NOT NULL CHECK (to_status IN (
        'NEW_LEAD', 'QUALIFIED', 'WARMED', 'PROPOSAL_SENT', 'NEGOTIATION', 'SOLD', 'SERVICE',
        'CLOSED')),
    detector text NOT NULL,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id)
        ON DELETE CASCADE
);
CREATE INDEX client_status_history_client ON client_status_history (client_id, id);

-- Conversations ------------------------------------------------------------------------------

CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    client_id uuid NOT NULL,
    channel text NOT NULL DEFAULT 'WHATSAPP' CHECK (channel ~ '^[A-Z][A-Z_]*$'),
    status text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'CLOSED')),
    wa_chat_id text,
    last_message_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id)
        ON DELETE CASCADE
);
-- At most one active WhatsApp conversation per client.
CREATE UNIQUE INDEX conversations_one_active_whatsapp ON conversations (client_id)
    WHERE status = 'ACTIVE' AND channel = 'WHATSAPP';
CREATE INDEX conversations_org ON conversations (organization_id, last_message_at DESC);

-- Messages: stored first (keyed by WhatsApp id), linked to a conversation afterwards ----------

CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    conversation_id uuid REFERENCES conversations (id) ON DELETE SET NULL,
    wa_message_id text NOT NULL CHECK (wa_message_id <> ''),
    wa_chat_id text NOT NULL CHECK (wa_chat_id <> ''),
    direction text NOT NULL CHECK (direction IN ('IN', 'OUT')),
    sender text NOT NULL CHECK (sender IN ('CLIENT', 'HUMAN', 'AI')),
    type text NOT NULL DEFAULT 'text' CHECK (type IN (
        'text', 'image', 'video', 'audio', 'document', 'sticker', 'location', 'vcard', 'other')),
    body text,
    caption text,
    media jsonb,
    sent_at timestamptz NOT NULL,  -- WhatsApp's time
    status text NOT NULL CHECK (status IN (
        'RECEIVED', 'PENDING', 'SENT', 'DELIVERED', 'READ', 'PLAYED', 'FAILED', 'REVOKED')),
    edited_at timestamptz,
    language text,
    processing_state text NOT NULL DEFAULT 'PENDING' CHECK (processing_state IN (
        'PENDING', 'DONE', 'FAILED', 'SKIPPED')),
    processing_error text,
    processing_attempts integer NOT NULL DEFAULT 0 CHECK (processing_attempts >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_org_wa_id UNIQUE (organization_id, wa_message_id),
    -- Incoming messages come from the client; outgoing ones from a human or the AI.
    CONSTRAINT messages_sender_matches_direction CHECK ((direction = 'IN') = (sender = 'CLIENT'))
);
-- The inbound pipeline's work list: unprocessed messages of an organization, in arrival order.
CREATE INDEX messages_unprocessed ON messages (organization_id, created_at, sent_at)
    WHERE processing_state = 'PENDING';
-- Catch-up after a reconnect: the latest stored message of each chat.
CREATE INDEX messages_chat_latest ON messages (organization_id, wa_chat_id, sent_at DESC);
CREATE INDEX messages_conversation ON messages (conversation_id, sent_at);

-- The durable outbound queue ------------------------------------------------------------------

CREATE TABLE outbox (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    client_id uuid REFERENCES clients (id) ON DELETE SET NULL,
    conversation_id uuid REFERENCES conversations (id) ON DELETE SET NULL,
    message_id uuid REFERENCES messages (id) ON DELETE SET NULL,  -- the stored message once sent
    to_phone text NOT NULL CHECK (to_phone ~ '^\+[1-9][0-9]{6,14}$'),
    content text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 4096),
    priority smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 1 AND 10),
    sender text NOT NULL CHECK (sender IN ('HUMAN', 'AI')),
    agent_name text,
    idempotency_key text CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'QUEUED' CHECK (status IN (
        'QUEUED', 'SENDING', 'SENT', 'DELIVERED', 'READ', 'FAILED', 'CANCELLED')),
    -- Chosen before the send, so that a send interrupted by a crash can be recognised in the chat.
    wa_message_id text,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    not_before timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sending_started_at timestamptz,
    sent_at timestamptz,
    delivered_at timestamptz,
    read_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_sending_has_wa_id CHECK (status <> 'SENDING' OR wa_message_id IS NOT NULL)
);
CREATE UNIQUE INDEX outbox_idempotency ON outbox (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX outbox_wa_message_id ON outbox (organization_id, wa_message_id)
    WHERE wa_message_id IS NOT NULL;
-- THE queue index: the outbound actor's "next message to send for this organization" is
-- WHERE organization_id = $1 AND status = 'QUEUED' AND not_before <= now()
-- ORDER BY priority DESC, created_at, id. Only queued rows are in it, so it stays small however
-- long the history grows, and it yields rows already in the wanted order (no sort).
CREATE INDEX outbox_next ON outbox (organization_id, priority DESC, created_at, id)
    INCLUDE (not_before) WHERE status = 'QUEUED';
-- Rate windows are counted from what was actually sent.
CREATE INDEX outbox_sent ON outbox (organization_id, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_in_flight ON outbox (organization_id) WHERE status = 'SENDING';
CREATE TRIGGER outbox_updated_at BEFORE UPDATE ON outbox
    FOR EACH ROW EXECUTE FUNCTION wad_touch_updated_at();

CREATE TABLE outbox_events (
    id bigserial PRIMARY KEY,
    outbox_id uuid NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN (
        'QUEUED', 'SENDING', 'SENT', 'DELIVERED', 'READ', 'FAILED', 'CANCELLED')),
    detail text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_events_outbox ON outbox_events (outbox_id, id);

-- Historical imports --------------------------------------------------------------------------

CREATE TABLE import_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    source text NOT NULL CHECK (source <> ''),
    status text NOT NULL DEFAULT 'RUNNING' CHECK (status IN (
        'RUNNING', 'COMPLETED', 'FAILED', 'INTERRUPTED')),
    options jsonb NOT NULL DEFAULT '{}'::jsonb,
    chats_total integer CHECK (chats_total >= 0),
    chats_done integer NOT NULL DEFAULT 0 CHECK (chats_done >= 0),
    messages_stored integer NOT NULL DEFAULT 0 CHECK (messages_stored >= 0),
    duplicates integer NOT NULL DEFAULT 0 CHECK (duplicates >= 0),
    errors jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(errors) = 'array'),
    done_chats text[] NOT NULL DEFAULT '{}',  -- finished chats, skipped on resume
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT import_runs_finished CHECK ((status = 'RUNNING') = (finished_at IS NULL))
);
CREATE INDEX import_runs_latest ON import_runs (organization_id, started_at DESC);
CREATE TRIGGER import_runs_updated_at BEFORE UPDATE ON import_runs
    FOR EACH ROW EXECUTE FUNCTION wad_touch_updated_at();

-- Plugin deliveries (durable, retried notifications such as webhooks) -------------------------

CREATE TABLE plugin_deliveries (
    id bigserial PRIMARY KEY,
    organization_id uuid REFERENCES organizations (id) ON DELETE CASCADE,
    plugin text NOT NULL CHECK (plugin <> ''),
    event text NOT NULL CHECK (event <> ''),
    payload jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX plugin_deliveries_due ON plugin_deliveries (plugin, next_attempt_at)
    WHERE status = 'PENDING';
