-- The grants that keep a service's audit trail append-only for the application itself.
--
-- Run once per service database (or schema), as its owner, after the first migration, with
-- `:app_role` the role the service connects as day to day (psql -v app_role=identity_app).
-- Migrations run as the owner (the migrate Job, or `cqrs-<service> migrate` with the owner's
-- URL); the service itself then connects as the application role, which
--   - may read and append audit events and checkpoints, never change or remove one;
--   - purges old events only through audit_purge(), which runs with the owner's rights and
--     refuses unless this service's own signed checkpoint anchors what is kept.
-- The triggers on both tables refuse UPDATE, DELETE and TRUNCATE to everyone (owner
-- included) as a second line; only someone who can disable triggers (the owner or a
-- superuser) could get past them, and `cqrsctl audit verify` catches what they change.

REVOKE ALL ON audit_events, audit_checkpoints FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_checkpoints FROM :app_role;
GRANT SELECT, INSERT ON audit_events, audit_checkpoints TO :app_role;
-- The pending row changes the audit_capture triggers note and the next event takes up.
GRANT SELECT, INSERT, DELETE ON audit_pending_changes TO :app_role;
GRANT USAGE ON SEQUENCE audit_pending_changes_position_seq TO :app_role;
GRANT EXECUTE ON FUNCTION audit_purge(bigint) TO :app_role;
