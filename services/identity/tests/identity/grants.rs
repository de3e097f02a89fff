//! Grants through the real directory service: listed at sign-in, checked by SelectRole,
//! carried by the session's tokens, and dropped with the session when revoked.

use cqrs_auth::RoleProto;
use cqrs_auth::{ActiveGrant, Principal, Role};
use cqrs_identity::{Clock as _, SystemClock};
use cqrs_proto::directory::v1::{self as dir, OrganisationKind};
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::Suite;
use cqrs_testkit::{assert_reason, with_token};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::calls::{IdentityCalls, PASSWORDS, SERVICE_CLIENT, start, start_with_directory};

/// Directory calls made as [`SERVICE_CLIENT`], and the grant side of identity's sessions,
/// over a suite in which the directory runs.
pub trait GrantCalls {
    /// A new organisation of `kind` under `parent`.
    async fn org(&self, kind: OrganisationKind, ods: &str, parent: Option<Uuid>) -> Uuid;
    async fn practices(&self) -> (Uuid, Uuid);
    async fn grant_role(&self, account: &str, org: Uuid, role: Role) -> dir::Grant;
    /// SelectRole with `token`.
    async fn select_grant(
        &self,
        token: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::SelectRoleResponse, Status>;
    /// RefreshAccessToken; the new access token.
    async fn refresh(&self, session_token: &str) -> Result<String, Status>;
    /// The directory's ListMembers with `token`.
    async fn members(&self, token: &str, org: Uuid) -> Result<dir::ListMembersResponse, Status>;
    /// The grant a user token carries.
    fn active_grant(&self, token: &str) -> Option<ActiveGrant>;
}

impl GrantCalls for Suite {
    async fn org(&self, kind: OrganisationKind, ods: &str, parent: Option<Uuid>) -> Uuid {
        let org = self
            .directory()
            .create_organisation(with_token(
                dir::CreateOrganisationRequest {
                    request_id: Uuid::new_v4().to_string(),
                    kind: kind as i32,
                    ods_code: ods.into(),
                    name: format!("Organisation {ods}"),
                    parent_id: parent.map(|p| p.to_string()).unwrap_or_default(),
                    multi_level_approval: false,
                },
                &self.service_token_of(SERVICE_CLIENT),
            ))
            .await
            .unwrap()
            .into_inner()
            .organisation
            .unwrap();
        Uuid::parse_str(&org.id).unwrap()
    }

    async fn practices(&self) -> (Uuid, Uuid) {
        let region = self.org(OrganisationKind::Region, "Y56", None).await;
        let ccg = self
            .org(
                OrganisationKind::CommissioningOrganisation,
                "15N",
                Some(region),
            )
            .await;
        let p1 = self
            .org(OrganisationKind::ServiceProvider, "A81001", Some(ccg))
            .await;
        let p2 = self
            .org(OrganisationKind::ServiceProvider, "A81002", Some(ccg))
            .await;
        (p1, p2)
    }

    async fn grant_role(&self, account: &str, org: Uuid, role: Role) -> dir::Grant {
        self.directory()
            .grant_role(with_token(
                dir::GrantRoleRequest {
                    request_id: Uuid::new_v4().to_string(),
                    account_id: account.into(),
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                &self.service_token_of(SERVICE_CLIENT),
            ))
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap()
    }

    async fn select_grant(
        &self,
        token: &str,
        org: Uuid,
        role: Role,
    ) -> Result<pb::SelectRoleResponse, Status> {
        self.identity()
            .select_role(with_token(
                pb::SelectRoleRequest {
                    organisation_id: org.to_string(),
                    role: role.to_proto() as i32,
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn refresh(&self, session_token: &str) -> Result<String, Status> {
        self.identity()
            .refresh_access_token(pb::RefreshAccessTokenRequest {
                session_token: session_token.into(),
            })
            .await
            .map(|r| r.into_inner().access_token)
    }

    async fn members(&self, token: &str, org: Uuid) -> Result<dir::ListMembersResponse, Status> {
        self.directory()
            .list_members(with_token(
                dir::ListMembersRequest {
                    organisation_id: org.to_string(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    fn active_grant(&self, token: &str) -> Option<ActiveGrant> {
        match self.keys.verifier.verify(token, SystemClock.now()).unwrap() {
            Principal::User { active, .. } => active,
            other => panic!("not a user token: {other:?}"),
        }
    }
}

#[tokio::test]
async fn sign_in_lists_grants_and_select_role_scopes_the_token() {
    let h = start_with_directory(&[]).await;
    let (p1, p2) = h.practices().await;
    let account = h
        .active(pb::Realm::Local, "kim.ross@practice.org", PASSWORDS[0])
        .await;
    let manager = h.grant_role(&account.id, p1, Role::PracticeManager).await;
    let user = h.grant_role(&account.id, p2, Role::PracticeUser).await;

    let signed_in = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
    let mut listed: Vec<String> = signed_in.grants.iter().map(|g| g.id.clone()).collect();
    listed.sort();
    let mut expected = vec![manager.id.clone(), user.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        signed_in
            .grants
            .iter()
            .all(|g| !g.organisation_name.is_empty())
    );
    assert_eq!(h.active_grant(&signed_in.access_token), None);

    // Without an active role the directory refuses a role-bound RPC.
    let err = h.members(&signed_in.access_token, p1).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A grant the account does not hold (role held elsewhere) is refused.
    let err = h
        .select_grant(&signed_in.access_token, p2, Role::PracticeManager)
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "NO_GRANT");

    let selected = h
        .select_grant(&signed_in.access_token, p1, Role::PracticeManager)
        .await
        .unwrap();
    assert_eq!(selected.grant.as_ref().unwrap().id, manager.id);
    let wanted = ActiveGrant {
        organisation_id: p1,
        role: Role::PracticeManager,
    };
    assert_eq!(h.active_grant(&selected.access_token), Some(wanted));
    let members = h.members(&selected.access_token, p1).await.unwrap();
    assert!(members.grants.iter().any(|g| g.id == manager.id));

    // The session keeps the grant: refreshed tokens carry it.
    let refreshed = h.refresh(&signed_in.session_token).await.unwrap();
    assert_eq!(h.active_grant(&refreshed), Some(wanted));
    assert_eq!(h.audit_rows("SELECT_ROLE", &account.id).await.len(), 2);
}

#[tokio::test]
async fn revoking_the_active_grant_ends_only_that_session() {
    let h = start_with_directory(&[]).await;
    let (p1, p2) = h.practices().await;
    let account = h
        .active(pb::Realm::Local, "lee.hart@practice.org", PASSWORDS[1])
        .await;
    let manager = h.grant_role(&account.id, p1, Role::PracticeManager).await;
    h.grant_role(&account.id, p2, Role::PracticeUser).await;

    let a = h.sign_in(&account.email, PASSWORDS[1]).await.unwrap();
    let b = h.sign_in(&account.email, PASSWORDS[1]).await.unwrap();
    h.select_grant(&a.access_token, p1, Role::PracticeManager)
        .await
        .unwrap();
    h.select_grant(&b.access_token, p2, Role::PracticeUser)
        .await
        .unwrap();

    h.directory()
        .revoke_role(with_token(
            dir::RevokeRoleRequest {
                grant_id: manager.id.clone(),
            },
            &h.service_token_of(SERVICE_CLIENT),
        ))
        .await
        .unwrap();

    let err = h.refresh(&a.session_token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let refreshed = h.refresh(&b.session_token).await.unwrap();
    assert_eq!(
        h.active_grant(&refreshed),
        Some(ActiveGrant {
            organisation_id: p2,
            role: Role::PracticeUser,
        })
    );
    // The revoked grant can no longer be selected from the surviving session.
    let err = h
        .select_grant(&refreshed, p1, Role::PracticeManager)
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "NO_GRANT");
}

/// Sign-in does not depend on the directory; SelectRole does, and fails closed.
#[tokio::test]
async fn directory_down_omits_grants_and_refuses_select_role() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "sam.cole@practice.org", PASSWORDS[2])
        .await;
    let signed_in = h.sign_in(&account.email, PASSWORDS[2]).await.unwrap();
    assert!(signed_in.grants.is_empty());
    let err = h
        .select_grant(&signed_in.access_token, Uuid::new_v4(), Role::PracticeUser)
        .await
        .unwrap_err();
    assert_reason(&err, Code::Unavailable, "UNAVAILABLE");
    assert_eq!(
        h.active_grant(&h.refresh(&signed_in.session_token).await.unwrap()),
        None
    );
}
