-- The audit trail: one row per privileged action or admin login (who, what,
-- when, from where, with what outcome), written by auth and the console through
-- tessera.common.audit.AuditLog. Kept until an operator deletes old rows
-- (docs/OPERATIONS.md). Read newest first, by time or by actor or target.
CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    -- The account id of the verified token, '' when none was valid.
    actor   text NOT NULL,
    action  text NOT NULL,
    -- What the action was on: an account id, a zone, a player, a username.
    target  text NOT NULL,
    -- The client's address.
    source  text NOT NULL,
    -- ok | refused | failed
    outcome text NOT NULL,
    detail  text NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);
CREATE INDEX audit_log_target ON audit_log (target, at);
