-- The directory: organisations, grants, keyed-create answers, pending session ends and the
-- audit trail.

-- The organisation tree: REGION > COMMISSIONING_ORGANISATION > SERVICE_PROVIDER, plus
-- SERVICE_DESK (no parent). Organisations are never re-parented or removed in v1, so each
-- row's ancestry is written once, on insert: `path` holds the organisation itself first,
-- then its parent, ... the root. Scope checks ("is the grant's organisation this one or an
-- ancestor?") are then `grant_org = ANY(path)`, and descendants are `path @> ARRAY[org]`,
-- both without recursive queries.
CREATE TABLE organisations (
    id                   uuid        PRIMARY KEY,
    kind                 text        NOT NULL CHECK (kind IN ('REGION', 'COMMISSIONING_ORGANISATION',
                                                             'SERVICE_PROVIDER', 'SERVICE_DESK')),
    -- Normalised upper case; the same rule as the domain code (3-6 of A-Z0-9, a letter).
    ods_code             text        NOT NULL CHECK (ods_code ~ '^[A-Z0-9]{3,6}$' AND ods_code ~ '[A-Z]'),
    name                 text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- The search key: the lower-cased name compared byte-wise ("C"), so a name prefix is a
    -- plain index range even under generic plans, and the same index gives the name order.
    name_key             text        COLLATE "C" GENERATED ALWAYS AS (lower(name)) STORED,
    parent_id            uuid        REFERENCES organisations (id),
    path                 uuid[]      NOT NULL,
    multi_level_approval boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    CHECK (path[1] = id),
    CHECK ((parent_id IS NULL) = (cardinality(path) = 1)),
    CHECK (parent_id IS NULL OR path[2] = parent_id),
    CHECK ((parent_id IS NULL) = (kind IN ('REGION', 'SERVICE_DESK'))),
    CHECK (NOT multi_level_approval OR kind = 'SERVICE_PROVIDER')
);

CREATE UNIQUE INDEX organisations_ods_code ON organisations (ods_code);
CREATE INDEX organisations_name ON organisations (name_key, id);
CREATE INDEX organisations_children ON organisations (parent_id, name_key, id);
CREATE INDEX organisations_descendants ON organisations USING gin (path);

-- account x organisation x role. The account lives in the identity service: no foreign key.
CREATE TABLE grants (
    id              uuid        PRIMARY KEY,
    account_id      uuid        NOT NULL,
    organisation_id uuid        NOT NULL REFERENCES organisations (id),
    role            text        NOT NULL CHECK (role IN ('SERVICE_DESK', 'COMMISSIONING_ACCOUNT_ADMINISTRATOR',
                                                         'COMMISSIONING_APPROVER', 'COMMISSIONING_USER',
                                                         'COMMISSIONING_FINANCE', 'PRACTICE_MANAGER',
                                                         'PRACTICE_USER')),
    created_at      timestamptz NOT NULL,
    -- Also the index of "an account's grants" (ListGrants, CheckPermission).
    UNIQUE (account_id, organisation_id, role)
);

-- Members of an organisation (newest first) and administrators at an ancestry.
CREATE INDEX grants_members ON grants (organisation_id, created_at DESC, id DESC);

-- Keyed creates (CreateOrganisation, GrantRole): the request's fingerprint and the encoded
-- first answer, so a retry gets exactly that answer. The row is claimed at the start of the
-- create's transaction, so a parallel duplicate waits for it and then reads the answer.
CREATE TABLE request_keys (
    request_id   uuid        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL
);

-- Sessions to end in the identity service because a grant was revoked. Written in the
-- transaction of the revocation and deleted once identity confirmed, so no accepted
-- revocation is lost while identity is unreachable; a background task retries due rows.
CREATE TABLE session_revocations (
    id              uuid        PRIMARY KEY,
    account_id      uuid        NOT NULL,
    organisation_id uuid        NOT NULL,
    role            text        NOT NULL,
    reason          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL
);

CREATE INDEX session_revocations_due ON session_revocations (next_attempt_at);

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
