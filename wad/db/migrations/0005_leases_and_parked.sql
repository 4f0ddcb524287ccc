-- Issue 16. Owners' leases: the daemon that holds an organization's advisory lock renews its
-- lease here every few seconds; once `expires_at` has passed (the owner froze, hung or was cut
-- off), another daemon may end the session `backend_pid` (the owner's lock connection) and take
-- the organization over (wad/org/ownership.py).
CREATE TABLE org_leases (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    node_id text NOT NULL,
    backend_pid integer NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Parked messages (processing failed repeatedly: `processing_state = 'FAILED'`), counted per
-- organization by `wad status` and the metrics.
CREATE INDEX messages_parked ON messages (organization_id, created_at)
    WHERE processing_state = 'FAILED';
