//! CheckPermission: scope over descendants, the approver-role rule, active grants, callers.

use cqrs_auth::Role;
use cqrs_auth::RoleProto;
use cqrs_proto::directory::v1 as pb;
use cqrs_suite::Suite;
use cqrs_testkit::{assert_reason, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::{DirectoryCalls, Tree, directory_alone};

struct Check<'a> {
    h: &'a Suite,
}

impl Check<'_> {
    async fn ask(
        &self,
        token: &str,
        account: Uuid,
        permission: &str,
        org: Uuid,
        active: Option<(Uuid, Role)>,
    ) -> Result<pb::CheckPermissionResponse, tonic::Status> {
        self.h
            .directory()
            .check_permission(with_token(
                pb::CheckPermissionRequest {
                    account_id: account.to_string(),
                    permission: permission.into(),
                    organisation_id: org.to_string(),
                    active_organisation_id: active.map(|a| a.0.to_string()).unwrap_or_default(),
                    active_role: active.map_or(0, |a| a.1.to_proto() as i32),
                    target_account_id: String::new(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn decide(
        &self,
        account: Uuid,
        permission: &str,
        org: Uuid,
        active: Option<(Uuid, Role)>,
    ) -> (bool, String) {
        let r = self
            .ask(&self.h.svc(), account, permission, org, active)
            .await
            .unwrap();
        (r.allowed, r.reason)
    }
}

fn yes() -> (bool, String) {
    (true, "GRANTED".into())
}

fn no(reason: &str) -> (bool, String) {
    (false, reason.into())
}

#[tokio::test]
async fn scope_covers_descendants_only() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let check = Check { h: &h };
    let admin = Uuid::new_v4();
    let grant = h
        .grant(admin, tree.c1, Role::CommissioningAccountAdministrator)
        .await
        .unwrap();
    // Own organisation and a descendant.
    assert_eq!(
        check.decide(admin, "INVITE_USERS", tree.c1, None).await,
        yes()
    );
    let r = check
        .ask(&h.svc(), admin, "INVITE_USERS", tree.p1, None)
        .await
        .unwrap();
    assert!(r.allowed);
    assert_eq!(r.grant.unwrap().id, grant.id);
    // Ancestor and sibling: out of scope.
    assert_eq!(
        check.decide(admin, "INVITE_USERS", tree.r1, None).await,
        no("NO_GRANT_IN_SCOPE")
    );
    assert_eq!(
        check.decide(admin, "INVITE_USERS", tree.c2, None).await,
        no("NO_GRANT_IN_SCOPE")
    );
    assert_eq!(
        check.decide(admin, "INVITE_USERS", tree.p3, None).await,
        no("NO_GRANT_IN_SCOPE")
    );
    // In scope but not the role's.
    assert_eq!(
        check
            .decide(admin, "SET_APPROVAL_LEVEL", tree.p1, None)
            .await,
        no("ROLE_LACKS_PERMISSION")
    );
    // Nobody at all.
    assert_eq!(
        check
            .decide(Uuid::new_v4(), "VIEW_SCOPE", tree.p1, None)
            .await,
        no("NO_GRANT_IN_SCOPE")
    );
    // The service desk's scope is the suite.
    let desk = Uuid::new_v4();
    h.grant(desk, tree.desk, Role::ServiceDesk).await.unwrap();
    assert_eq!(
        check.decide(desk, "UNLOCK_ACCOUNT", tree.p4, None).await,
        yes()
    );
    assert_eq!(
        check.decide(desk, "REVOKE_ROLES", tree.p4, None).await,
        no("ROLE_LACKS_PERMISSION")
    );
}

#[tokio::test]
async fn approver_role_rule_and_active_grants() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let check = Check { h: &h };
    let account = Uuid::new_v4();
    h.grant(account, tree.c1, Role::CommissioningAccountAdministrator)
        .await
        .unwrap();
    let approver = h
        .grant(account, tree.r1, Role::CommissioningApprover)
        .await
        .unwrap();
    let admin_active = Some((tree.c1, Role::CommissioningAccountAdministrator));
    // Only approvers grant the approver role; an approver acting as administrator still is one.
    let r = check
        .ask(
            &h.svc(),
            account,
            "GRANT_APPROVER_ROLE",
            tree.p1,
            admin_active,
        )
        .await
        .unwrap();
    assert!(r.allowed);
    assert_eq!(r.grant.unwrap().id, approver.id);
    // Other permissions count the active grant only.
    assert_eq!(
        check
            .decide(account, "DISABLE_ACCOUNT", tree.p1, admin_active)
            .await,
        no("ROLE_LACKS_PERMISSION")
    );
    assert_eq!(
        check
            .decide(account, "DISABLE_ACCOUNT", tree.p1, None)
            .await,
        yes()
    );
    // A plain administrator never may.
    let admin = Uuid::new_v4();
    h.grant(admin, tree.r1, Role::CommissioningAccountAdministrator)
        .await
        .unwrap();
    for permission in ["GRANT_APPROVER_ROLE", "INVITE_APPROVERS"] {
        assert_eq!(
            check.decide(admin, permission, tree.p1, None).await,
            no("ROLE_LACKS_PERMISSION")
        );
    }
    // An active grant the account does not hold (revoked since the token was issued).
    assert_eq!(
        check
            .decide(
                account,
                "VIEW_SCOPE",
                tree.p1,
                Some((tree.c2, Role::CommissioningUser))
            )
            .await,
        no("GRANT_REVOKED")
    );
}

#[tokio::test]
async fn callers_and_input() {
    let h = directory_alone().await;
    let tree = Tree::build(&h).await;
    let check = Check { h: &h };
    let (account, token) = h.member(tree.p1, Role::PracticeManager).await;
    // A user about itself.
    let r = check
        .ask(&token, account, "VIEW_PRACTICE_USERS", tree.p1, None)
        .await
        .unwrap();
    assert!(r.allowed);
    // ... not about someone else.
    let err = check
        .ask(&token, Uuid::new_v4(), "VIEW_SCOPE", tree.p1, None)
        .await
        .unwrap_err();
    assert_reason(&err, Code::PermissionDenied, "SELF_OR_INTERNAL_REQUIRED");
    // Unknown permission, unknown organisation, half an active grant.
    let err = check
        .ask(&h.svc(), account, "FLY", tree.p1, None)
        .await
        .unwrap_err();
    assert_reason(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&err), ["permission"]);
    let err = check
        .ask(&h.svc(), account, "VIEW_SCOPE", Uuid::new_v4(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .directory()
        .check_permission(with_token(
            pb::CheckPermissionRequest {
                account_id: account.to_string(),
                permission: String::new(),
                organisation_id: "x".into(),
                active_organisation_id: tree.p1.to_string(),
                active_role: 0,
                target_account_id: String::new(),
            },
            &h.svc(),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["permission", "organisation_id", "active_role"]
    );
    let err = h
        .directory()
        .check_permission(pb::CheckPermissionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
