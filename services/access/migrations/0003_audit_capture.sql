-- Before/after values of access's records for the audit trail (audit_capture, in
-- 0002_audit_chain.sql). Not captured: request_keys (request-id keys).
CREATE TRIGGER invitations_audit AFTER INSERT OR UPDATE OR DELETE ON invitations
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id', 'token_hash');
CREATE TRIGGER registrations_audit AFTER INSERT OR UPDATE OR DELETE ON registrations
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id');
CREATE TRIGGER access_requests_audit AFTER INSERT OR UPDATE OR DELETE ON access_requests
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id');
