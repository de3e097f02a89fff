-- Each recipient's mail leaves in the order it was queued: the worker claims a mail only when
-- no mail queued before it to the same recipient is still pending. `queued` numbers mails in
-- the order they were stored (across replicas, unlike the ids' milliseconds).
ALTER TABLE emails ADD COLUMN queued bigserial;
CREATE INDEX emails_pending_by_recipient ON emails (recipient, queued) WHERE state = 'PENDING';
