-- Before/after values of identity's records for the audit trail (audit_capture, in
-- 0004_audit_chain.sql). Not captured: password_history (only hashes), account_requests
-- (request-id keys), and the replay counter of authenticator codes.
CREATE TRIGGER accounts_audit AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id', 'password_hash');
CREATE TRIGGER links_audit AFTER INSERT OR UPDATE OR DELETE ON links
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id', 'token_hash');
CREATE TRIGGER bootstrap_grants_audit AFTER INSERT OR UPDATE OR DELETE ON bootstrap_grants
    FOR EACH ROW EXECUTE FUNCTION audit_capture('account_id');
CREATE TRIGGER totp_factors_audit AFTER INSERT OR UPDATE OR DELETE ON totp_factors
    FOR EACH ROW EXECUTE FUNCTION audit_capture('account_id', 'secret', 'last_step');
CREATE TRIGGER recovery_codes_audit AFTER INSERT OR UPDATE OR DELETE ON recovery_codes
    FOR EACH ROW EXECUTE FUNCTION audit_capture('account_id', 'code_hash');
