-- Before/after values of the notification service's records for the audit trail
-- (audit_capture, in 0003_audit_chain.sql). A mail is captured when it is queued and when its
-- state changes, never its parameters (they hold links) or the delivery worker's lease and
-- retry bookkeeping.
CREATE TRIGGER emails_audit AFTER INSERT OR DELETE ON emails
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id', 'params', 'content_hash', 'lease_until',
        'attempts', 'next_attempt_at', 'last_error');
CREATE TRIGGER emails_state_audit AFTER UPDATE ON emails
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION audit_capture('id', 'params', 'content_hash', 'lease_until',
        'attempts', 'next_attempt_at', 'last_error');
CREATE TRIGGER notifications_audit AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW EXECUTE FUNCTION audit_capture('id');
CREATE TRIGGER preferences_audit AFTER INSERT OR UPDATE OR DELETE ON preferences
    FOR EACH ROW EXECUTE FUNCTION audit_capture('account_id');
