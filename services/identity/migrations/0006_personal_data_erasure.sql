-- When a disabled account's personal data was erased (IDENTITY_DISABLED_RETENTION_DAYS).
ALTER TABLE accounts ADD COLUMN personal_data_erased_at timestamptz;
