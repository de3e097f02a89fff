-- At most one live (unused, unrevoked) link per account and purpose. Issuing a link revokes the
-- earlier ones and inserts the new one under a lock on the account row; this index makes the
-- rule the database's too, so no interleaving of two requests can leave two links that work.
--
-- Two live links can only exist from before this migration (two concurrent requests): the
-- newest stays, the others are revoked now. That repair is the migration's, not an action of
-- anyone's, so it leaves no captured changes waiting for an audit event.
UPDATE links SET revoked_at = now()
WHERE used_at IS NULL AND revoked_at IS NULL
  AND id NOT IN (
      SELECT DISTINCT ON (account_id, purpose) id FROM links
      WHERE used_at IS NULL AND revoked_at IS NULL
      ORDER BY account_id, purpose, created_at DESC, id DESC
  );
DELETE FROM audit_pending_changes WHERE txid = txid_current();

DROP INDEX links_open;
CREATE UNIQUE INDEX links_one_live ON links (account_id, purpose)
    WHERE used_at IS NULL AND revoked_at IS NULL;
