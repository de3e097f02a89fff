-- Every change to grants tells the directory's replicas which account's grants to forget from
-- their in-memory permission cache (src/store/cache.rs). NOTIFY is delivered at commit, so a
-- replica never hears of a change before it can read it; identical notifications of one
-- transaction are delivered once. TRUNCATE has no rows to name: its payload is '*', "forget
-- everything". Grants are inserted and deleted by the service; UPDATE is covered in case an
-- operator edits a row by hand.
CREATE FUNCTION grants_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('directory_grants', '*');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('directory_grants', OLD.account_id::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('directory_grants', NEW.account_id::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER grants_notify AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION grants_notify();

CREATE TRIGGER grants_notify_truncate AFTER TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION grants_notify();
