-- The record an in-app notification is about (a registration or access request id), so the
-- inbox can link to it. Empty for notifications about nothing in particular.
ALTER TABLE notifications ADD COLUMN subject_id text NOT NULL DEFAULT '';
