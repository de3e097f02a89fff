-- The audit trail's hash chain (crates/audit-chain has the rules): every event numbered
-- without gaps and linked to the one before; who acted, in which organisation and role, from
-- which address and browser; the fields the action changed. Signed checkpoints, this
-- service's own and the ones it keeps for the other services. One file, linked into every
-- service's migrations.

ALTER TABLE audit_events
    ADD COLUMN sequence              bigint,
    ADD COLUMN hash                  bytea,
    ADD COLUMN actor_name            text  NOT NULL DEFAULT '',
    ADD COLUMN actor_organisation_id text  NOT NULL DEFAULT '',
    ADD COLUMN actor_role            text  NOT NULL DEFAULT '',
    ADD COLUMN client_address        text  NOT NULL DEFAULT '',
    ADD COLUMN user_agent            text  NOT NULL DEFAULT '',
    ADD COLUMN changes               jsonb NOT NULL DEFAULT '{}';

-- Events from before the chain are numbered in the order they happened and keep no hash:
-- verification counts them and links the chain around them.
ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update;
UPDATE audit_events e SET sequence = n.sequence
FROM (SELECT id, row_number() OVER (ORDER BY occurred_at, id) AS sequence FROM audit_events) n
WHERE e.id = n.id;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update;

ALTER TABLE audit_events ALTER COLUMN sequence SET NOT NULL;
CREATE UNIQUE INDEX audit_events_sequence ON audit_events (sequence);

-- The chain's lock: a transaction-scoped advisory lock on ("audt", the schema), so services
-- sharing a database in different schemas do not wait on each other.
-- During a rolling upgrade the previous release still inserts events without a number: they
-- are numbered here, under the lock the chain's writer takes (audit_chain_head below), and stay
-- without a hash; verification counts them and links around them.
CREATE FUNCTION audit_events_number() RETURNS trigger AS $$
BEGIN
    IF NEW.sequence IS NULL THEN
        PERFORM pg_advisory_xact_lock(1635083380, hashtext(current_schema()));
        NEW.sequence := coalesce((SELECT max(sequence) FROM audit_events), 0) + 1;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_number BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_number();
CREATE INDEX audit_events_actor ON audit_events (actor_id, occurred_at DESC);

-- Rows can be neither changed nor removed, by anyone, except through audit_purge below.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events'
       AND current_setting('cqrs.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE audit_checkpoints (
    service     text        NOT NULL,
    sequence    bigint      NOT NULL,
    head_hash   bytea       NOT NULL,
    made_at     timestamptz NOT NULL,
    key_id      text        NOT NULL,
    signature   bytea       NOT NULL,
    -- This service's own checkpoint, or one fetched from the service named.
    own         boolean     NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (service, sequence)
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- Retention: removes the events up to `through`, only when this service's own signed
-- checkpoint at `through` matches the event there (it anchors the first kept event) and a
-- later event is kept. Runs with the owner's rights, so the application's role needs no
-- DELETE on audit_events (deploy/postgres/audit-grants.sql).
CREATE FUNCTION audit_purge(through bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    purged bigint;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM audit_checkpoints c
        JOIN audit_events e ON e.sequence = c.sequence AND e.hash = c.head_hash
        WHERE c.own AND c.sequence = through
    ) THEN
        RAISE EXCEPTION 'no checkpoint of this service anchors the events after %', through;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_events WHERE sequence > through) THEN
        RAISE EXCEPTION 'the last event is always kept';
    END IF;
    PERFORM set_config('cqrs.audit_purge', 'on', true);
    DELETE FROM audit_events WHERE sequence <= through;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('cqrs.audit_purge', 'off', true);
    RETURN purged;
END;
$$;

-- Before and after values. A trigger on each of the service's tables of record
-- (audit_capture, attached in the service's own migrations with the table's key column and
-- the columns never to record: secrets, hashes, tokens) notes every row change of a
-- transaction here; the next audit event the transaction appends takes them up as its
-- `changes` and removes them. A row left here after its transaction committed is a change
-- without an audit event: the completeness test and `cqrsctl audit verify` look for them.
CREATE TABLE audit_pending_changes (
    txid       bigint NOT NULL DEFAULT txid_current(),
    position   bigserial,
    table_name text   NOT NULL,
    row_id     text   NOT NULL,
    old        jsonb,
    new        jsonb
);
CREATE INDEX audit_pending_changes_txid ON audit_pending_changes (txid);

CREATE FUNCTION audit_capture() RETURNS trigger AS $$
DECLARE
    hidden text[] := TG_ARGV[1:TG_NARGS - 1];
    before jsonb;
    after  jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN before := to_jsonb(OLD) - hidden; END IF;
    IF TG_OP <> 'DELETE' THEN after := to_jsonb(NEW) - hidden; END IF;
    IF before IS NOT DISTINCT FROM after THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_pending_changes (table_name, row_id, old, new)
    VALUES (TG_TABLE_NAME, coalesce(after, before) ->> TG_ARGV[0], before, after);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- The chain writer's first step, in one round trip: take the chain's lock for the rest of the
-- transaction, then (each statement with a fresh snapshot, so after the lock) read the last
-- number and the last hash, and take up the row changes this transaction made so far.
CREATE FUNCTION audit_chain_head(OUT head bigint, OUT head_hash bytea, OUT pending jsonb)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1635083380, hashtext(current_schema()));
    SELECT coalesce(max(sequence), 0) INTO head FROM audit_events;
    SELECT hash INTO head_hash FROM audit_events
    WHERE hash IS NOT NULL ORDER BY sequence DESC LIMIT 1;
    WITH taken AS (
        DELETE FROM audit_pending_changes WHERE txid = txid_current()
        RETURNING position, table_name, row_id, old, new
    )
    SELECT coalesce(jsonb_agg(to_jsonb(taken) ORDER BY position), '[]'::jsonb)
    INTO pending FROM taken;
END;
$$;
