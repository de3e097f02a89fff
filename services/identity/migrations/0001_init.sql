-- Accounts of both realms. The lock-out counter lives in Redis; only the permanent lock is
-- recorded here (locked_at), because it must survive a Redis flush and only the service desk
-- lifts it. Passwords are stored only as argon2id PHC strings.
CREATE TABLE accounts (
    id                  uuid PRIMARY KEY,
    realm               text        NOT NULL CHECK (realm IN ('NATIONAL', 'LOCAL')),
    -- NATIONAL only: system-assigned, three letters and three digits.
    user_id             text,
    email               text        NOT NULL,
    first_name          text        NOT NULL,
    last_name           text        NOT NULL,
    state               text        NOT NULL
        CHECK (state IN ('PENDING_REGISTRATION', 'ACTIVE', 'DISABLED')),
    password_hash       text,
    password_changed_at timestamptz,
    locked_at           timestamptz,
    lock_reason         text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    CONSTRAINT accounts_user_id_realm CHECK ((realm = 'NATIONAL') = (user_id IS NOT NULL)),
    CONSTRAINT accounts_user_id_format CHECK (user_id IS NULL OR user_id ~ '^[A-Z]{3}[0-9]{3}$'),
    CONSTRAINT accounts_active_has_password CHECK (state = 'PENDING_REGISTRATION' OR password_hash IS NOT NULL)
);

CREATE UNIQUE INDEX accounts_user_id_key ON accounts (user_id) WHERE user_id IS NOT NULL;
-- One account per address and realm. The local part is compared without case as well, so
-- nobody can take "Ann.Smith@" next to "ann.smith@" and confuse sign-in or mail.
CREATE UNIQUE INDEX accounts_realm_email_key ON accounts (realm, lower(email));
-- ListAccounts pages in e-mail order.
CREATE INDEX accounts_email_order ON accounts (email, id);

-- Hashes of the current and previous passwords, newest first, for the history rule. Only the
-- newest few are kept (see the store).
CREATE TABLE password_history (
    id            uuid PRIMARY KEY,
    account_id    uuid        NOT NULL REFERENCES accounts (id),
    password_hash text        NOT NULL,
    set_at        timestamptz NOT NULL
);

CREATE INDEX password_history_account ON password_history (account_id, set_at DESC);

-- Registration and reset links. Only SHA-256 of the token is stored; a link is bound to its
-- purpose, account and address, used at most once, and revoked when a newer one of the same
-- purpose is issued. exempt_min_age marks resets sent by the service desk.
CREATE TABLE links (
    id             uuid PRIMARY KEY,
    token_hash     bytea       NOT NULL UNIQUE,
    purpose        text        NOT NULL CHECK (purpose IN ('REGISTRATION', 'PASSWORD_RESET')),
    account_id     uuid        NOT NULL REFERENCES accounts (id),
    email          text        NOT NULL,
    exempt_min_age boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    revoked_at     timestamptz
);

CREATE INDEX links_open ON links (account_id, purpose) WHERE used_at IS NULL AND revoked_at IS NULL;

-- CreateAccount is keyed on the client's request_id: a retry finds the first answer here, and
-- request_hash tells a retry from a different request reusing the id. The row is written
-- before the account (hence the deferred key) so that a parallel retry waits on the request
-- id and then finds the first answer, instead of tripping over the e-mail address.
CREATE TABLE account_requests (
    request_id   uuid PRIMARY KEY,
    request_hash bytea       NOT NULL,
    account_id   uuid        NOT NULL REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED,
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
CREATE INDEX audit_events_target ON audit_events (target_id, occurred_at DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
