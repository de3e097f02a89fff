//! The first account of a new deployment (API.md, run-time contract).
//!
//! On start, when the accounts table is empty and `CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL` is set,
//! a NATIONAL account is created for that address in PENDING_REGISTRATION and its
//! registration link goes out through the outbox like any other. The check and the insert
//! run under a transaction-scoped advisory lock, so replicas starting together create it
//! once; a later start finds accounts and does nothing, even if the variable is still set.
//!
//! The service-desk organisation and the account's SERVICE_DESK grant belong to the
//! directory service. The account commits together with a `bootstrap_grants` row; then
//! [`grant_task`] asks the directory for the organisation and the grant (keyed calls, so a
//! repeat creates nothing twice) until it has them, and marks the row done. The directory may
//! start after identity, or be down for a while: the grant is late then, never lost. Until it
//! arrives the account signs in without grants. A done row is never revisited, so an operator
//! who later revokes that grant is not overruled by a restart.
//!
//! The address is not checked against the generic-mailbox list: it is chosen by the operator
//! deploying the suite, not typed by a user.

use cqrs_rules::backoff::Backoff;
use std::future::Future;
use std::time::Duration;

use cqrs_runtime::audit::Actor;
use uuid::Uuid;

use crate::api::{IdentityApi, IdentityError, Inserted};
use crate::config::BootstrapConfig;
use crate::directory::DirectoryError;
use crate::domain::account::Realm;
use crate::store::{NewAccount, StoreError, accounts as account_store};

/// First wait after a failed attempt; doubles up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// Creates the bootstrap account if there is no account yet; its id when it was created now.
pub async fn bootstrap(
    api: &IdentityApi,
    config: &BootstrapConfig,
) -> Result<Option<Uuid>, IdentityError> {
    let new = NewAccount {
        realm: Realm::National,
        email: &config.email,
        first_name: &config.first_name,
        last_name: &config.last_name,
        request: None,
    };
    match api
        .insert_account(&new, &Actor::system("bootstrap"), api.now(), true)
        .await?
    {
        Inserted::Created(row) => {
            tracing::info!(account_id = %row.id, "bootstrap service-desk account created; registration link queued");
            Ok(Some(row.id))
        }
        Inserted::Skipped | Inserted::Retry => Ok(None),
    }
}

/// One pass over the bootstrap accounts still waiting for their directory grant; how many are
/// still waiting afterwards.
pub async fn grant_pending(
    api: &IdentityApi,
    config: &BootstrapConfig,
) -> Result<usize, GrantError> {
    let pool = api.store().pool();
    let mut waiting = 0;
    for account_id in account_store::pending_bootstrap_grants(pool).await? {
        match api
            .directory()
            .ensure_service_desk(
                account_id,
                &config.organisation_ods_code,
                &config.organisation_name,
            )
            .await
        {
            Ok(grant) => {
                account_store::finish_bootstrap_grant(pool, account_id, api.now()).await?;
                tracing::info!(%account_id, organisation_id = %grant.organisation_id, "bootstrap service-desk grant made");
            }
            Err(e) => {
                tracing::warn!(%account_id, error = %e, "bootstrap service-desk grant not made yet; will retry");
                waiting += 1;
            }
        }
    }
    Ok(waiting)
}

/// Runs [`grant_pending`] until nothing waits or `stop` resolves, backing off between
/// failed passes.
pub async fn grant_task(api: IdentityApi, config: BootstrapConfig, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
    let mut failures = 1;
    loop {
        match grant_pending(&api, &config).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "bootstrap grant pass failed; will retry"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(backoff.delay(failures)) => {}
        }
        failures += 1;
    }
}
