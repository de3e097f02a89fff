-- E-mail deliveries. One row per accepted EnqueueEmail; the idempotency key makes retries
-- from producers' outbox relays safe. `params` holds what the template needs until the mail
-- is delivered or dead-lettered; then link tokens are scrubbed (content_hash keeps the
-- idempotency comparison working without them).
CREATE TABLE emails (
    id              uuid PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    content_hash    bytea       NOT NULL,
    template        text        NOT NULL,
    recipient       text        NOT NULL,
    params          jsonb       NOT NULL,
    account_id      uuid,
    security        boolean     NOT NULL,
    state           text        NOT NULL CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD_LETTER', 'SUPPRESSED')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz
);

-- The worker's claim query: due, pending rows in order.
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE state = 'PENDING';
-- ListDeliveries: newest first, optionally by state.
CREATE INDEX emails_listing ON emails (state, created_at DESC, id DESC);
CREATE INDEX emails_created ON emails (created_at DESC, id DESC);

-- In-app inbox.
CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    account_id      uuid        NOT NULL,
    kind            text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL,
    idempotency_key text,
    created_at      timestamptz NOT NULL,
    read_at         timestamptz
);

CREATE INDEX notifications_inbox ON notifications (account_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX notifications_idempotency ON notifications (idempotency_key, account_id)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE preferences (
    account_id    uuid PRIMARY KEY,
    email_enabled boolean     NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- Append-only audit trail, written in the same transaction as the change it records.
CREATE TABLE audit_events (
    id          uuid PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    actor_kind  text        NOT NULL,
    actor_id    text        NOT NULL,
    action      text        NOT NULL,
    target_type text        NOT NULL,
    target_id   text        NOT NULL,
    outcome     text        NOT NULL,
    request_id  text,
    details     jsonb       NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_events_time ON audit_events (occurred_at DESC, id DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
