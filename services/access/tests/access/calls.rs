//! The access tests' own vocabulary over the in-process [`Suite`]: an organisation [`Tree`]
//! built for every test, people holding a grant ([`User`]), and the access, identity and
//! directory calls the tests make, each with the suite's internal caller or a given token.
//!
//! Organisation tree of every test:
//!
//! ```text
//! DESK (SERVICE_DESK)
//! REGION
//! ├── CCG          ── PRACTICE
//! └── OTHER_CCG    ── OTHER_PRACTICE
//! ```
//!
//! The suite runs without the service-desk bootstrap: the tests make their own desk
//! organisation, and no account but theirs is an administrator anywhere.

use std::ops::Deref;

use cqrs_access::WorkflowSettings;
use cqrs_auth::{ActiveGrant, Role, RoleProto};
use cqrs_proto::access::v1 as pb;
use cqrs_proto::directory::v1::{self as dir_pb, OrganisationKind};
use cqrs_proto::identity::v1 as id_pb;
use cqrs_suite::{Org, Service, Suite, subject};
use cqrs_testkit::with_token;
use tonic::Status;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
pub struct Tree {
    pub desk: Uuid,
    pub region: Uuid,
    pub ccg: Uuid,
    pub other_ccg: Uuid,
    pub practice: Uuid,
    pub other_practice: Uuid,
}

/// A signed-in person acting through one grant.
#[derive(Clone, Debug)]
pub struct User {
    pub account_id: Uuid,
    pub email: String,
    pub token: String,
}

/// The suite (all four services, access with the given workflow settings) and the tree.
pub struct AccessSuite {
    suite: Suite,
    pub tree: Tree,
}

impl Deref for AccessSuite {
    type Target = Suite;

    fn deref(&self) -> &Suite {
        &self.suite
    }
}

impl AccessSuite {
    pub async fn start() -> AccessSuite {
        Self::start_with(WorkflowSettings::default()).await
    }

    pub async fn start_with(settings: WorkflowSettings) -> AccessSuite {
        Self::start_with_env(settings, &[]).await
    }

    /// With the access service's variables `env` on top of the suite's.
    pub async fn start_with_env(settings: WorkflowSettings, env: &[(&str, &str)]) -> AccessSuite {
        let suite = Suite::builder()
            .without_bootstrap()
            .access_workflow(settings)
            .env(cqrs_suite::Service::Access, env)
            .start()
            .await;
        let tree = build_tree(&suite).await;
        AccessSuite { suite, tree }
    }

    /// A service token of the suite's internal caller (a gateway acting for the system).
    pub fn internal_token(&self) -> String {
        self.service_token_of(Suite::GATEWAY_CLIENT_ID)
    }

    /// A person with an identity account at `email` holding `role` at `org`, signed in
    /// through that grant.
    pub async fn user(&self, email: &str, role: Role, org: Uuid) -> User {
        let account_id = self.account(email, "Pat", "Admin").await;
        self.grant(account_id, role, org).await;
        User {
            account_id,
            email: email.to_owned(),
            token: self.token(account_id, role, org).await,
        }
    }

    /// A person with no identity account: enough for calls that only need the grant.
    pub async fn grantee(&self, role: Role, org: Uuid) -> User {
        let account_id = Uuid::new_v4();
        self.grant(account_id, role, org).await;
        User {
            account_id,
            email: String::new(),
            token: self.token(account_id, role, org).await,
        }
    }

    /// A user token acting through (`role`, `org`), whether or not the grant exists.
    pub async fn token(&self, account_id: Uuid, role: Role, org: Uuid) -> String {
        self.user_token(
            account_id,
            Some(ActiveGrant {
                organisation_id: org,
                role,
            }),
        )
        .await
    }

    /// A NATIONAL account in identity (which mails it a registration link).
    pub async fn account(&self, email: &str, first: &str, last: &str) -> Uuid {
        let account = self
            .identity()
            .create_account(with_token(
                id_pb::CreateAccountRequest {
                    request_id: Uuid::new_v4().to_string(),
                    realm: id_pb::Realm::National as i32,
                    email: email.into(),
                    first_name: first.into(),
                    last_name: last.into(),
                },
                &self.internal_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        Uuid::parse_str(&account.id).unwrap()
    }

    pub async fn grant(&self, account_id: Uuid, role: Role, org: Uuid) -> dir_pb::Grant {
        self.directory()
            .grant_role(with_token(
                dir_pb::GrantRoleRequest {
                    request_id: Uuid::new_v4().to_string(),
                    account_id: account_id.to_string(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                &self.internal_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap()
    }

    /// `account_id`'s grants as (organisation, role).
    pub async fn grants(&self, account_id: Uuid) -> Vec<(Uuid, Role)> {
        self.directory()
            .list_grants(with_token(
                dir_pb::ListGrantsRequest {
                    account_id: account_id.to_string(),
                    page_size: 0,
                    page_token: String::new(),
                },
                &self.internal_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .grants
            .iter()
            .map(|g| {
                (
                    Uuid::parse_str(&g.organisation_id).unwrap(),
                    Role::from_proto(g.role).unwrap().unwrap(),
                )
            })
            .collect()
    }

    /// The identity account with this address, if any.
    pub async fn lookup(&self, email: &str) -> Option<id_pb::Account> {
        match self
            .identity()
            .lookup_account(with_token(
                id_pb::LookupAccountRequest {
                    key: Some(id_pb::lookup_account_request::Key::Email(email.into())),
                },
                &self.internal_token(),
            ))
            .await
        {
            Ok(answer) => answer.into_inner().account,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("LookupAccount: {status:?}"),
        }
    }

    pub async fn invite(
        &self,
        token: &str,
        email: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Invitation, Status> {
        self.invite_keyed(token, &Uuid::new_v4().to_string(), email, org, role)
            .await
    }

    pub async fn invite_keyed(
        &self,
        token: &str,
        request_id: &str,
        email: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::Invitation, Status> {
        self.access()
            .create_invitation(with_token(
                pb::CreateInvitationRequest {
                    request_id: request_id.into(),
                    email: email.into(),
                    first_name: "Jo".into(),
                    last_name: "Bloggs".into(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().invitation.unwrap())
    }

    pub async fn accept(&self, link: &str) -> Result<pb::Invitation, Status> {
        self.access()
            .accept_invitation(pb::AcceptInvitationRequest {
                token: link.into(),
                first_name: String::new(),
                last_name: String::new(),
            })
            .await
            .map(|r| r.into_inner().invitation.unwrap())
    }

    pub async fn get_invitation(&self, link: &str) -> Result<pb::Invitation, Status> {
        self.access()
            .get_invitation(pb::GetInvitationRequest { token: link.into() })
            .await
            .map(|r| r.into_inner().invitation.unwrap())
    }

    pub async fn submit(
        &self,
        request_id: &str,
        email: &str,
        organisation: pb::submit_registration_request::Organisation,
        role: Role,
    ) -> Result<pb::Registration, Status> {
        self.access()
            .submit_registration(pb::SubmitRegistrationRequest {
                request_id: request_id.into(),
                email: email.into(),
                organisation: Some(organisation),
                role: role.to_proto() as i32,
                first_name: "Sam".into(),
                last_name: "Patel".into(),
            })
            .await
            .map(|r| r.into_inner().registration.unwrap())
    }

    pub async fn review_registration(
        &self,
        token: &str,
        id: &str,
        decision: pb::Decision,
        reason: &str,
    ) -> Result<pb::Registration, Status> {
        self.access()
            .review_registration(with_token(
                pb::ReviewRegistrationRequest {
                    registration_id: id.into(),
                    decision: decision as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().registration.unwrap())
    }

    /// GetRegistration with `token`.
    pub async fn get_registration(
        &self,
        token: &str,
        id: &str,
    ) -> Result<pb::Registration, Status> {
        self.access()
            .get_registration(with_token(
                pb::GetRegistrationRequest {
                    registration_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().registration.unwrap())
    }

    pub async fn request_access(
        &self,
        token: &str,
        request_id: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::AccessRequest, Status> {
        self.access()
            .request_access(with_token(
                pb::RequestAccessRequest {
                    request_id: request_id.into(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                    reason: "I cover this practice on Tuesdays".into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    pub async fn review_request(
        &self,
        token: &str,
        id: &str,
        decision: pb::Decision,
        reason: &str,
    ) -> Result<pb::AccessRequest, Status> {
        self.access()
            .review_access_request(with_token(
                pb::ReviewAccessRequestRequest {
                    access_request_id: id.into(),
                    decision: decision as i32,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    /// GetAccessRequest with `token`.
    pub async fn get_access_request(
        &self,
        token: &str,
        id: &str,
    ) -> Result<pb::AccessRequest, Status> {
        self.access()
            .get_access_request(with_token(
                pb::GetAccessRequestRequest {
                    access_request_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    pub async fn withdraw(&self, token: &str, id: &str) -> Result<pb::AccessRequest, Status> {
        self.access()
            .withdraw_access_request(with_token(
                pb::WithdrawAccessRequestRequest {
                    access_request_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().access_request.unwrap())
    }

    /// The link token of the `n`-th (1-based) invitation mail to `to`.
    pub async fn invitation_link(&self, to: &str, n: usize) -> String {
        self.nth_link_token(to, subject::INVITATION, n).await
    }

    /// Access's audit rows of `action` for `target_id`, as
    /// (actor_kind, actor_id, outcome, details).
    pub async fn audit(
        &self,
        action: &str,
        target_id: &str,
    ) -> Vec<(String, String, String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT actor_kind, actor_id, outcome, details FROM audit_events \
             WHERE action = $1 AND target_id = $2 ORDER BY occurred_at, id",
        )
        .bind(action)
        .bind(target_id)
        .fetch_all(self.pool(Service::Access))
        .await
        .unwrap()
    }

    pub async fn audit_count(&self, action: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM audit_events WHERE action = $1 AND outcome = 'success'",
        )
        .bind(action)
        .fetch_one(self.pool(Service::Access))
        .await
        .unwrap();
        n
    }

    /// Rows of access's `table` (which may carry a WHERE clause).
    pub async fn count(&self, table: &str) -> i64 {
        self.count_rows(Service::Access, table).await
    }

    /// Every workflow row and audit event, to show that a refused call changed nothing.
    pub async fn footprint(&self) -> [i64; 5] {
        [
            self.count("invitations").await,
            self.count("registrations").await,
            self.count("access_requests").await,
            self.count("request_keys").await,
            self.count("audit_events WHERE outcome = 'success'").await,
        ]
    }
}

async fn build_tree(suite: &Suite) -> Tree {
    let token = suite.service_token_of(Suite::GATEWAY_CLIENT_ID);
    let create = |kind, ods, name, parent: Option<Org>| {
        let token = token.clone();
        async move {
            suite
                .create_organisation(&token, kind, ods, name, parent.as_ref())
                .await
                .unwrap_or_else(|s| panic!("CreateOrganisation {ods}: {s:?}"))
        }
    };
    let desk = create(OrganisationKind::ServiceDesk, "DSK01", "Service Desk", None).await;
    let region = create(OrganisationKind::Region, "Y56", "North Region", None).await;
    let ccg = create(
        OrganisationKind::CommissioningOrganisation,
        "15N",
        "Riverside CCG",
        Some(region.clone()),
    )
    .await;
    let other_ccg = create(
        OrganisationKind::CommissioningOrganisation,
        "QWO",
        "Hillside CCG",
        Some(region.clone()),
    )
    .await;
    let practice = create(
        OrganisationKind::ServiceProvider,
        "A81001",
        "Bridge Street Surgery",
        Some(ccg.clone()),
    )
    .await;
    let other_practice = create(
        OrganisationKind::ServiceProvider,
        "A81002",
        "Mill Lane Practice",
        Some(other_ccg.clone()),
    )
    .await;
    let id = |org: Org| Uuid::parse_str(&org.id).unwrap();
    Tree {
        desk: id(desk),
        region: id(region),
        ccg: id(ccg),
        other_ccg: id(other_ccg),
        practice: id(practice),
        other_practice: id(other_practice),
    }
}
