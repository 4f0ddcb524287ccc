-- The durable change feed (issue 18): every change the CRM follows, per organization, with a
-- cursor (`seq`) that grows by one in commit order. `change_cursors` holds each organization's
-- last cursor; taking the next one locks that row until the writing transaction ends, so a
-- reader that has seen cursor N never later finds a committed change below N.
CREATE TABLE change_cursors (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    last bigint NOT NULL
);

CREATE TABLE changes (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    data jsonb NOT NULL,
    PRIMARY KEY (organization_id, seq)
);
CREATE INDEX changes_at ON changes (at);
