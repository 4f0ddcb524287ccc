-- Sends followed to the end (issue 18): an optional expiry on queued messages (`EXPIRED` once
-- it passed unsent), why a send failed for good (`fail_reason`, a code such as
-- `NOT_ON_WHATSAPP`; the circuit breaker counts only the codes that say something about the
-- account), and the organization's cache of numbers asked of WhatsApp before a first send.
ALTER TABLE outbox ADD COLUMN expires_at timestamptz;
ALTER TABLE outbox ADD COLUMN fail_reason text;
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN (
    'QUEUED', 'SENDING', 'SENT', 'DELIVERED', 'READ', 'FAILED', 'CANCELLED', 'EXPIRED'));
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_status_check;
ALTER TABLE outbox_events ADD CONSTRAINT outbox_events_status_check CHECK (status IN (
    'QUEUED', 'SENDING', 'SENT', 'DELIVERED', 'READ', 'FAILED', 'CANCELLED', 'EXPIRED'));
-- The queued messages that carry an expiry, for the actor's "expire what is overdue".
CREATE INDEX outbox_expiring ON outbox (organization_id, expires_at)
    WHERE status = 'QUEUED' AND expires_at IS NOT NULL;

-- What WhatsApp answered when asked whether a number uses it (`wa_id` its id when it does).
CREATE TABLE number_checks (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    phone text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    on_whatsapp boolean NOT NULL,
    wa_id text,
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, phone)
);
