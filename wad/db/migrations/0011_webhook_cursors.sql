-- Webhooks deliver from the change feed (issue 18): each webhook (its URL, hashed) keeps, per
-- organization, the cursor of the last change it delivered, so a restart resumes exactly
-- there and changes go out in order, at least once. `webhooks.since` is when the webhook was
-- first seen: it starts after the changes made before then.
CREATE TABLE webhooks (
    webhook text PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_cursors (
    webhook text NOT NULL REFERENCES webhooks (webhook) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    after bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    leased_until timestamptz,
    PRIMARY KEY (webhook, organization_id)
);
