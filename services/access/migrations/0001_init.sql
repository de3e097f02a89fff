-- The access workflows: invitations, self-registrations and access requests, keyed-create
-- answers and the audit trail. (The outbox table is created by cqrs-outbox at start.)
--
-- Every workflow row keeps the target organisation's ancestry as the directory gave it when
-- the row was created (`organisation_path`: the organisation itself, its parent, ... the
-- root). Organisations are never re-parented, so the copy stays true; scope filters are then
-- `$grant_org = ANY(organisation_path)` on a GIN index, without asking the directory per row.
-- Accounts live in identity and organisations in the directory: no foreign keys to either.

CREATE TABLE invitations (
    id                uuid        PRIMARY KEY,
    -- Normalised as identity normalises account addresses.
    email             text        NOT NULL,
    first_name        text        NOT NULL,
    last_name         text        NOT NULL,
    organisation_id   uuid        NOT NULL,
    organisation_name text        NOT NULL,
    organisation_path uuid[]      NOT NULL CHECK (organisation_path[1] = organisation_id),
    role              text        NOT NULL CHECK (role IN ('SERVICE_DESK', 'COMMISSIONING_ACCOUNT_ADMINISTRATOR',
                                                           'COMMISSIONING_APPROVER', 'COMMISSIONING_USER',
                                                           'COMMISSIONING_FINANCE', 'PRACTICE_MANAGER',
                                                           'PRACTICE_USER')),
    state             text        NOT NULL CHECK (state IN ('SENT', 'ACCEPTED', 'EXPIRED', 'CANCELLED')),
    -- Who invited: an account id (user) or a client id (service).
    inviter_kind      text        NOT NULL,
    inviter_id        text        NOT NULL,
    -- SHA-256 of the current link token; a resend replaces it, so older links stop working.
    token_hash        bytea       NOT NULL UNIQUE,
    -- Set once ACCEPTED.
    account_id        uuid,
    -- The last transition: who made it (kind and id) and why.
    changed_by_kind   text        NOT NULL,
    changed_by_id     text        NOT NULL,
    change_reason     text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    sent_at           timestamptz NOT NULL,
    CHECK ((state = 'ACCEPTED') = (account_id IS NOT NULL))
);

CREATE INDEX invitations_scope ON invitations USING gin (organisation_path);
CREATE INDEX invitations_newest ON invitations (created_at DESC, id DESC);
-- The expiry sweep's work list.
CREATE INDEX invitations_due ON invitations (expires_at) WHERE state = 'SENT';
-- One live invitation per person, organisation and role: a second is refused (resend instead).
CREATE UNIQUE INDEX invitations_one_sent ON invitations (email, organisation_id, role)
    WHERE state = 'SENT';

CREATE TABLE registrations (
    id                uuid        PRIMARY KEY,
    email             text        NOT NULL,
    first_name        text        NOT NULL,
    last_name         text        NOT NULL,
    organisation_id   uuid        NOT NULL,
    organisation_name text        NOT NULL,
    ods_code          text        NOT NULL,
    organisation_path uuid[]      NOT NULL CHECK (organisation_path[1] = organisation_id),
    role              text        NOT NULL CHECK (role IN ('COMMISSIONING_ACCOUNT_ADMINISTRATOR',
                                                           'COMMISSIONING_APPROVER', 'COMMISSIONING_USER',
                                                           'COMMISSIONING_FINANCE', 'PRACTICE_MANAGER',
                                                           'PRACTICE_USER')),
    state             text        NOT NULL CHECK (state IN ('PENDING', 'APPROVED', 'REJECTED')),
    -- Set once reviewed: account id (user) or client id (service).
    reviewer_kind     text,
    reviewer_id       text,
    decision_reason   text        NOT NULL DEFAULT '',
    reviewed_at       timestamptz,
    -- Set once APPROVED.
    account_id        uuid,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK ((state = 'PENDING') = (reviewed_at IS NULL)),
    CHECK ((state = 'APPROVED') = (account_id IS NOT NULL)),
    CHECK (state <> 'REJECTED' OR decision_reason <> '')
);

CREATE INDEX registrations_scope ON registrations USING gin (organisation_path);
CREATE INDEX registrations_newest ON registrations (created_at DESC, id DESC);

CREATE TABLE access_requests (
    id                uuid        PRIMARY KEY,
    -- The requester.
    account_id        uuid        NOT NULL,
    organisation_id   uuid        NOT NULL,
    organisation_name text        NOT NULL,
    organisation_path uuid[]      NOT NULL CHECK (organisation_path[1] = organisation_id),
    role              text        NOT NULL CHECK (role IN ('COMMISSIONING_ACCOUNT_ADMINISTRATOR',
                                                           'COMMISSIONING_APPROVER', 'COMMISSIONING_USER',
                                                           'COMMISSIONING_FINANCE', 'PRACTICE_MANAGER',
                                                           'PRACTICE_USER')),
    reason            text        NOT NULL CHECK (reason <> ''),
    state             text        NOT NULL CHECK (state IN ('PENDING', 'APPROVED', 'REJECTED', 'WITHDRAWN')),
    reviewer_kind     text,
    reviewer_id       text,
    decision_reason   text        NOT NULL DEFAULT '',
    -- When it was decided or withdrawn.
    reviewed_at       timestamptz,
    -- Set once APPROVED.
    grant_id          uuid,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK ((state = 'PENDING') = (reviewed_at IS NULL)),
    CHECK ((state = 'APPROVED') = (grant_id IS NOT NULL)),
    CHECK (state <> 'REJECTED' OR decision_reason <> '')
);

CREATE INDEX access_requests_scope ON access_requests USING gin (organisation_path);
CREATE INDEX access_requests_newest ON access_requests (created_at DESC, id DESC);
CREATE INDEX access_requests_mine ON access_requests (account_id, created_at DESC, id DESC);
-- At most one pending request per account, organisation and role.
CREATE UNIQUE INDEX access_requests_one_pending ON access_requests (account_id, organisation_id, role)
    WHERE state = 'PENDING';

-- Keyed creates (CreateInvitation, SubmitRegistration, RequestAccess): the request's
-- fingerprint and the encoded first answer, so a retry gets exactly that answer. The row is
-- claimed in the create's transaction, so a parallel duplicate waits for it, then reads it.
CREATE TABLE request_keys (
    request_id   uuid        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL
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
