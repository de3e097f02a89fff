-- The bootstrap account's service-desk organisation and grant live in the directory service.
-- The account and this row commit together; a background task asks the directory for both
-- until it has them and then sets done_at, so a directory that is down at first start (or a
-- crash between the two) delays the grant but never loses it.
CREATE TABLE bootstrap_grants (
    account_id uuid        PRIMARY KEY REFERENCES accounts (id),
    created_at timestamptz NOT NULL,
    done_at    timestamptz
);
