-- Second factors: one authenticator app (TOTP) per account, and its recovery codes.
--
-- The TOTP secret must be readable to compute codes, so it is stored as it is (like the
-- signing key, it is protected by the database's access control, never returned after
-- enrolment and never logged). last_step is the highest time step accepted: a code of that
-- step or an earlier one is refused, so a code works once (replay).
CREATE TABLE totp_factors (
    account_id   uuid        PRIMARY KEY REFERENCES accounts (id),
    secret       bytea       NOT NULL,
    -- NULL while the enrolment waits for its first code; the factor counts only once set.
    confirmed_at timestamptz,
    last_step    bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL
);

-- Ten single-use codes per confirmed factor. Only SHA-256 is kept: each code has 80 random
-- bits, so a fast hash is enough (unlike passwords).
CREATE TABLE recovery_codes (
    account_id uuid        NOT NULL REFERENCES accounts (id),
    code_hash  bytea       NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (account_id, code_hash)
);

-- Mirrors "a confirmed factor exists" on the account row, set and cleared in the same
-- transaction as totp_factors, so every read of an account knows without a join.
ALTER TABLE accounts ADD COLUMN second_factor_at timestamptz;
