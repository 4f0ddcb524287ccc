-- Issue 17, least privilege and an audit trail.
--
-- METRICS tokens read `/metrics` and nothing else. Like a super admin's, such a token belongs to
-- no organization (the metrics name every organization); every other token to exactly one.
-- (The constraint keeps its name: what it says of the super admin still holds.)
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('SUPER_ADMIN', 'ADMIN', 'AGENT', 'VIEWER', 'METRICS'));
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_super_admin_has_no_org;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_super_admin_has_no_org
    CHECK ((role IN ('SUPER_ADMIN', 'METRICS')) = (organization_id IS NULL));

-- The audit trail: who changed what, and when. Rows are only ever added. `organization_id` is
-- the organization acted on (NULL for what concerns none, e.g. a super admin token); it has no
-- foreign key so that the trail outlives what it speaks of. `actor` is `socket` (the unix control
-- socket) or `token`, then with the token's id.
CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    organization_id uuid,
    actor text NOT NULL CHECK (actor IN ('socket', 'token')),
    token_id uuid,
    action text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    detail jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object'),
    CONSTRAINT audit_log_token_actor CHECK ((actor = 'token') = (token_id IS NOT NULL))
);
CREATE INDEX audit_log_org ON audit_log (organization_id, id);
