//! The first account of a new deployment (API.md, run-time contract).
//!
//! On start, when the accounts table is empty and `CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL` is set,
//! a NATIONAL account is created for that address in PENDING_REGISTRATION and its
//! registration link goes out through the outbox like any other. The check and the insert
//! run under a transaction-scoped advisory lock, so replicas starting together create it
//! once; a later start finds accounts and does nothing, even if the variable is still set.
//!
//! The service-desk organisation and the account's SERVICE_DESK grant belong to the
//! directory service and are made there.
//!
//! The address is not checked against the generic-mailbox list: it is chosen by the operator
//! deploying the suite, not typed by a user.

use cqrs_runtime::audit::Actor;
use uuid::Uuid;

use crate::api::{IdentityApi, IdentityError, Inserted};
use crate::config::BootstrapConfig;
use crate::domain::account::Realm;
use crate::store::NewAccount;

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
