//! The directory's tests over the in-process [`Suite`]: how they start it, the directory calls
//! they repeat ([`DirectoryCalls`]: organisations, grants, members' tokens, a look into the
//! directory's tables, sessions in identity's store) and a small organisation [`Tree`].

use std::time::Duration;

use cqrs_auth::{ActiveGrant, Role, RoleProto};
use cqrs_directory::RevocationConfig;
use cqrs_identity::store::sessions::SessionStore;
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::directory::v1::{self as pb, OrganisationKind};
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_suite::{Service, Suite};
use cqrs_testkit::with_token;
use tonic::transport::Channel;
use tonic::{Code, Status};
use uuid::Uuid;

/// Client id of the service tokens the tests call with (the access workflow).
pub const CALLER: &str = "access";

/// Quick retries, for the tests in which identity comes (back) up.
pub fn revocation_config() -> RevocationConfig {
    RevocationConfig {
        poll_interval: Duration::from_millis(50),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        call_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(30),
        batch_size: 50,
    }
}

/// Like [`revocation_config`], but a failed session end is retried only after an hour: the
/// suite's directory runs its background task, and the tests without identity read a pending
/// row as the request left it.
fn pending_revocations() -> RevocationConfig {
    RevocationConfig {
        retry_base: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        ..revocation_config()
    }
}

/// The directory alone; identity's address answers nothing, so session ends stay pending.
/// GrantRole through `client` (any replica) with `token`.
pub async fn grant_through(
    client: &mut DirectoryServiceClient<Channel>,
    token: &str,
    request_id: &str,
    account: Uuid,
    org: Uuid,
    role: Role,
) -> Result<pb::Grant, Status> {
    client
        .grant_role(with_token(
            pb::GrantRoleRequest {
                request_id: request_id.into(),
                account_id: account.to_string(),
                organisation_id: org.to_string(),
                role: role.to_proto() as i32,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().grant.unwrap())
}

pub async fn directory_alone() -> Suite {
    Suite::builder()
        .only(&[Service::Directory])
        .directory_revocations(pending_revocations())
        .start()
        .await
}

/// The directory with the real identity service (serving), without the bootstrap (the tests
/// expect an empty directory).
pub async fn with_identity() -> Suite {
    with_identity_held(false).await
}

/// Like [`with_identity`], but identity is not serving yet: `suite.serve(Service::Identity)`.
pub async fn with_identity_down() -> Suite {
    with_identity_held(true).await
}

async fn with_identity_held(held: bool) -> Suite {
    let builder = Suite::builder()
        .only(&[Service::Identity, Service::Directory])
        .without_bootstrap()
        .directory_revocations(revocation_config());
    let builder = if held {
        builder.held(Service::Identity)
    } else {
        builder
    };
    builder.start().await
}

/// The directory calls and looks the tests repeat.
pub trait DirectoryCalls {
    /// A service token of [`CALLER`].
    fn svc(&self) -> String;

    /// A user token (backed by a live session) for `account`, acting as `active`.
    async fn user(&self, account: Uuid, active: Option<(Uuid, Role)>) -> String;

    /// A user token for a fresh account holding `role` at `org` (granted for real).
    async fn member(&self, org: Uuid, role: Role) -> (Uuid, String);

    async fn create_org(
        &self,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<pb::Organisation, Status>;

    async fn create_org_as(
        &self,
        token: &str,
        request_id: &str,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<pb::Organisation, Status>;

    async fn grant(&self, account: Uuid, org: Uuid, role: Role) -> Result<pb::Grant, Status>;

    async fn grant_keyed(
        &self,
        request_id: &str,
        account: Uuid,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Grant, Status>;

    /// Rows of a directory table.
    async fn count(&self, table: &str) -> i64;

    /// The directory's audit rows of `action`, as (outcome, target_id, details), read from its
    /// table (so without identity too).
    async fn audit_rows(&self, action: &str) -> Vec<(String, String, serde_json::Value)>;

    /// Whether `token` still gets through the directory's authentication.
    async fn alive(&self, token: &str) -> bool;

    /// A session in identity's store acting as `active`, and a token for it.
    async fn session(&self, account: Uuid, active: Option<(Uuid, Role)>) -> String;

    /// A `SELECT count(*) …` over identity's database.
    async fn identity_count(&self, sql: &'static str) -> i64;
}

impl DirectoryCalls for Suite {
    fn svc(&self) -> String {
        self.service_token_of(CALLER)
    }

    async fn user(&self, account: Uuid, active: Option<(Uuid, Role)>) -> String {
        let grant = active.map(|(organisation_id, role)| ActiveGrant {
            organisation_id,
            role,
        });
        self.user_token(account, grant).await
    }

    async fn member(&self, org: Uuid, role: Role) -> (Uuid, String) {
        let account = Uuid::new_v4();
        self.grant(account, org, role).await.unwrap();
        (account, self.user(account, Some((org, role))).await)
    }

    async fn create_org(
        &self,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<pb::Organisation, Status> {
        self.create_org_as(
            &self.svc(),
            &Uuid::new_v4().to_string(),
            kind,
            ods,
            name,
            parent,
        )
        .await
    }

    async fn create_org_as(
        &self,
        token: &str,
        request_id: &str,
        kind: OrganisationKind,
        ods: &str,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<pb::Organisation, Status> {
        self.directory()
            .create_organisation(with_token(
                pb::CreateOrganisationRequest {
                    request_id: request_id.into(),
                    kind: kind as i32,
                    ods_code: ods.into(),
                    name: name.into(),
                    parent_id: parent.map(|p| p.to_string()).unwrap_or_default(),
                    multi_level_approval: false,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().organisation.unwrap())
    }

    async fn grant(&self, account: Uuid, org: Uuid, role: Role) -> Result<pb::Grant, Status> {
        self.grant_keyed(&Uuid::new_v4().to_string(), account, org, role)
            .await
    }

    async fn grant_keyed(
        &self,
        request_id: &str,
        account: Uuid,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Grant, Status> {
        grant_through(
            &mut self.directory(),
            &self.svc(),
            request_id,
            account,
            org,
            role,
        )
        .await
    }

    async fn count(&self, table: &str) -> i64 {
        self.count_rows(Service::Directory, table).await
    }

    async fn audit_rows(&self, action: &str) -> Vec<(String, String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT outcome, target_id, details FROM audit_events WHERE action = $1 \
             ORDER BY occurred_at, id",
        )
        .bind(action)
        .fetch_all(self.pool(Service::Directory))
        .await
        .unwrap()
    }

    async fn alive(&self, token: &str) -> bool {
        let result = self
            .directory()
            .list_organisations(with_token(pb::ListOrganisationsRequest::default(), token))
            .await;
        match result {
            Ok(_) => true,
            Err(s) if s.code() == Code::Unauthenticated => false,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }

    async fn session(&self, account: Uuid, active: Option<(Uuid, Role)>) -> String {
        let config = &self.identity_service().config;
        let sessions = SessionStore::new(
            self.redis.conn.clone(),
            self.redis.namespace.clone(),
            config.session_idle_ttl,
            config.session_absolute_ttl,
        );
        let (_, record) = sessions.create(account, SystemClock.now()).await.unwrap();
        let grant = active.map(|(organisation_id, role)| ActiveGrant {
            organisation_id,
            role,
        });
        if grant.is_some() {
            assert!(
                sessions
                    .set_active(record.account_id, &record.session_id, grant)
                    .await
                    .unwrap()
            );
        }
        self.keys
            .issuer
            .issue_user(
                account,
                &record.session_id,
                grant.as_ref(),
                SystemClock.now(),
            )
            .unwrap()
            .token
    }

    async fn identity_count(&self, sql: &'static str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql)
            .fetch_one(self.pool(Service::Identity))
            .await
            .unwrap();
        n
    }
}

/// A small tree:
///
/// ```text
/// DESK (service desk)
/// R1 (region) ── C1 (commissioning) ── P1, P2 (practices)
///             └─ C2 ── P3
/// R2 ── C3 ── P4
/// ```
pub struct Tree {
    pub desk: Uuid,
    pub r1: Uuid,
    pub c1: Uuid,
    pub p1: Uuid,
    pub p2: Uuid,
    pub c2: Uuid,
    pub p3: Uuid,
    pub r2: Uuid,
    pub c3: Uuid,
    pub p4: Uuid,
}

impl Tree {
    pub async fn build(h: &Suite) -> Tree {
        use OrganisationKind as K;
        let id = |o: pb::Organisation| Uuid::parse_str(&o.id).unwrap();
        let org = |kind, ods: &'static str, name: &'static str, parent: Option<Uuid>| async move {
            id(h.create_org(kind, ods, name, parent).await.unwrap())
        };
        let desk = org(K::ServiceDesk, "DSK1", "National Service Desk", None).await;
        let r1 = org(K::Region, "Y56", "North Region", None).await;
        let c1 = org(
            K::CommissioningOrganisation,
            "15N",
            "Riverside CCG",
            Some(r1),
        )
        .await;
        let p1 = org(K::ServiceProvider, "A81001", "Riverside Surgery", Some(c1)).await;
        let p2 = org(K::ServiceProvider, "A81002", "Hill Practice", Some(c1)).await;
        let c2 = org(K::CommissioningOrganisation, "QWO", "Moor CCG", Some(r1)).await;
        let p3 = org(K::ServiceProvider, "B82001", "Moor Surgery", Some(c2)).await;
        let r2 = org(K::Region, "Y60", "South Region", None).await;
        let c3 = org(K::CommissioningOrganisation, "99A", "Coast CCG", Some(r2)).await;
        let p4 = org(K::ServiceProvider, "C83001", "Harbour Surgery", Some(c3)).await;
        Tree {
            desk,
            r1,
            c1,
            p1,
            p2,
            c2,
            p3,
            r2,
            c3,
            p4,
        }
    }
}
