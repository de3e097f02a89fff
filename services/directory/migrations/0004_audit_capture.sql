-- Before/after values of the directory's records for the audit trail (audit_capture, in
-- 0003_audit_chain.sql). Not captured: request_keys (request-id keys) and
-- session_revocations (a work queue of sessions to end, each from an audited change).
CREATE TRIGGER organisations_audit AFTER INSERT OR UPDATE OR DELETE ON organisations
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id', 'name_key');
CREATE TRIGGER grants_audit AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id');
