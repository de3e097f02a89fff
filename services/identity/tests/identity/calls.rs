//! Identity's tests over the in-process suite ([`cqrs_suite::Suite`]): which services each
//! kind of test starts, and the identity calls and database reads they share
//! ([`IdentityCalls`]).

use cqrs_auth::{ActiveGrant, Role};
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::{Service, Suite, with_token};
use tonic::Status;
use uuid::Uuid;

/// The internal client whose (minted) service tokens the tests call with.
pub const SERVICE_CLIENT: &str = "access";
/// Passwords that pass both cqrs profiles, all different.
pub const PASSWORDS: [&str; 12] = [
    "Velvet#Harbor42",
    "Amber!Falcon77",
    "Quartz&Meadow19",
    "Copper%Lantern58",
    "Indigo*Willow31",
    "Saffron+Glacier64",
    "Cobalt=Orchard26",
    "Crimson~Thicket83",
    "Juniper^Canyon15",
    "Marble@Prairie92",
    "Topaz(Harvest47",
    "Walnut)Summit36",
];

/// Identity alone, with `extra` settings, no bootstrap. Its peers are down (calls refused at
/// once) and no relay runs, so queued mail stays in the outbox
/// ([`IdentityCalls::outbox_token`]).
pub async fn start(extra: &[(&str, &str)]) -> Suite {
    start_with(&[Service::Identity], extra).await
}

/// Identity and the notification service: mail goes through identity's outbox relay to
/// [`Suite::smtp`].
pub async fn start_with_mail(extra: &[(&str, &str)]) -> Suite {
    start_with(&[Service::Identity, Service::Notifications], extra).await
}

/// Identity and the directory, which identity asks for grants and which ends identity's
/// sessions on revocation.
pub async fn start_with_directory(extra: &[(&str, &str)]) -> Suite {
    start_with(&[Service::Identity, Service::Directory], extra).await
}

/// Identity alone over the Redis deployment at `redis_url`.
pub async fn start_on_redis(redis_url: &str, extra: &[(&str, &str)]) -> Suite {
    Suite::builder()
        .only(&[Service::Identity])
        .without_bootstrap()
        .redis(redis_url)
        .env(Service::Identity, extra)
        .start()
        .await
}

async fn start_with(services: &[Service], extra: &[(&str, &str)]) -> Suite {
    Suite::builder()
        .only(services)
        .without_bootstrap()
        .env(Service::Identity, extra)
        .start()
        .await
}

/// Identity calls and reads of its database, over a suite in which identity runs.
pub trait IdentityCalls {
    /// A user token acting as the service desk, for an account that need not exist.
    async fn desk_token(&self) -> String;

    /// A user token with `role` active (at some organisation), for an account that need not
    /// exist.
    async fn role_token(&self, account_id: Uuid, role: Option<Role>) -> String;

    /// CreateAccount as [`SERVICE_CLIENT`] with a fresh request id.
    async fn create(
        &self,
        realm: pb::Realm,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<pb::Account, Status>;

    /// CreateAccount as [`SERVICE_CLIENT`] with `request_id`.
    async fn create_keyed(
        &self,
        request_id: &str,
        realm: pb::Realm,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<pb::Account, Status>;

    /// A registered (ACTIVE) account with `password`, from the queued registration link.
    async fn active(&self, realm: pb::Realm, email: &str, password: &str) -> pb::Account;

    /// GetAccount with `token`.
    async fn get_account(&self, token: &str, id: &str) -> Result<pb::Account, Status>;

    /// The link token of the newest outbox mail of `template` to `account_id`.
    async fn outbox_token(&self, account_id: &str, template: &str) -> String;

    /// The payload of the newest outbox mail of `template` to `account_id`.
    async fn outbox_payload(&self, account_id: &str, template: &str) -> Option<serde_json::Value>;

    /// How many outbox mails of `template` there are.
    async fn outbox_count(&self, template: &str) -> i64;

    /// Rows of identity's `table` (which may carry a `WHERE`).
    async fn count(&self, table: &str) -> i64;

    /// Identity's audit rows of `action` for `target_id`, oldest first, as (outcome, details).
    async fn audit_rows(&self, action: &str, target_id: &str) -> Vec<(String, serde_json::Value)>;
}

impl IdentityCalls for Suite {
    async fn desk_token(&self) -> String {
        self.role_token(Uuid::new_v4(), Some(Role::ServiceDesk))
            .await
    }

    async fn role_token(&self, account_id: Uuid, role: Option<Role>) -> String {
        let grant = role.map(|role| ActiveGrant {
            organisation_id: Uuid::new_v4(),
            role,
        });
        self.user_token(account_id, grant).await
    }

    async fn create(
        &self,
        realm: pb::Realm,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<pb::Account, Status> {
        self.create_keyed(&Uuid::new_v4().to_string(), realm, email, first, last)
            .await
    }

    async fn create_keyed(
        &self,
        request_id: &str,
        realm: pb::Realm,
        email: &str,
        first: &str,
        last: &str,
    ) -> Result<pb::Account, Status> {
        self.identity()
            .create_account(with_token(
                pb::CreateAccountRequest {
                    request_id: request_id.into(),
                    realm: realm as i32,
                    email: email.into(),
                    first_name: first.into(),
                    last_name: last.into(),
                },
                &self.service_token_of(SERVICE_CLIENT),
            ))
            .await
            .map(|r| r.into_inner().account.unwrap())
    }

    async fn active(&self, realm: pb::Realm, email: &str, password: &str) -> pb::Account {
        let account = self.create(realm, email, "Ann", "Smith").await.unwrap();
        // With mail flowing, the relay blanks the outbox row once it is delivered: the link
        // is read from the mail instead.
        let token = if self.runs(Service::Notifications) {
            self.link_token(email, cqrs_suite::subject::REGISTRATION_LINK)
                .await
        } else {
            self.outbox_token(&account.id, "REGISTRATION_LINK").await
        };
        self.complete_registration(&token, password).await.unwrap()
    }

    async fn get_account(&self, token: &str, id: &str) -> Result<pb::Account, Status> {
        self.identity()
            .get_account(with_token(
                pb::GetAccountRequest {
                    account_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().account.unwrap())
    }

    async fn outbox_token(&self, account_id: &str, template: &str) -> String {
        let payload = self
            .outbox_payload(account_id, template)
            .await
            .unwrap_or_else(|| panic!("no {template} mail queued for {account_id}"));
        payload["params"]["token"].as_str().unwrap().to_owned()
    }

    async fn outbox_payload(&self, account_id: &str, template: &str) -> Option<serde_json::Value> {
        let row: Option<(serde_json::Value,)> = sqlx::query_as(
            "SELECT payload FROM outbox WHERE payload->>'account_id' = $1 \
               AND payload->>'template' = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(account_id)
        .bind(format!("EMAIL_TEMPLATE_{template}"))
        .fetch_optional(self.pool(Service::Identity))
        .await
        .unwrap();
        row.map(|(p,)| p)
    }

    async fn outbox_count(&self, template: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE payload->>'template' = $1")
                .bind(format!("EMAIL_TEMPLATE_{template}"))
                .fetch_one(self.pool(Service::Identity))
                .await
                .unwrap();
        n
    }

    async fn count(&self, table: &str) -> i64 {
        self.count_rows(Service::Identity, table).await
    }

    async fn audit_rows(&self, action: &str, target_id: &str) -> Vec<(String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT outcome, details FROM audit_events WHERE action = $1 AND target_id = $2 \
             ORDER BY occurred_at, id",
        )
        .bind(action)
        .bind(target_id)
        .fetch_all(self.pool(Service::Identity))
        .await
        .unwrap()
    }
}
