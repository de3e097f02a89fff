//! GetRegistration and GetAccessRequest: one row, to the callers its list would show it to
//! (and an access request to its requester); out of scope answers exactly like missing; the
//! role is checked before anything is looked up; a read changes nothing.

use cqrs_auth::Role;
use cqrs_proto::access::v1 as pb;
use cqrs_proto::access::v1::submit_registration_request::Organisation;
use cqrs_testkit::{assert_reason, violated_fields};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::calls::AccessSuite;

/// Asserts two refusals cannot be told apart: code, message and details.
#[track_caller]
fn alike(what: &str, a: &Status, b: &Status) {
    assert_eq!(a.code(), b.code(), "{what}: {a:?} / {b:?}");
    assert_eq!(a.message(), b.message(), "{what}: {a:?} / {b:?}");
    assert_eq!(a.details(), b.details(), "{what}: {a:?} / {b:?}");
}

#[tokio::test]
async fn get_registration_answers_within_scope_only() {
    let h = AccessSuite::start().await;
    let t = h.tree;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, t.ccg)
        .await;
    let regional = h
        .grantee(Role::CommissioningAccountAdministrator, t.region)
        .await;
    let elsewhere = h
        .grantee(Role::CommissioningAccountAdministrator, t.other_ccg)
        .await;
    let approver = h.grantee(Role::CommissioningApprover, t.ccg).await;
    let manager = h.grantee(Role::PracticeManager, t.practice).await;
    let commissioner = h.grantee(Role::CommissioningUser, t.ccg).await;
    let no_grant = h.user_token(Uuid::new_v4(), None).await;
    // A token for a grant the directory does not (or no longer) hold.
    let revoked = h
        .token(
            Uuid::new_v4(),
            Role::CommissioningAccountAdministrator,
            t.ccg,
        )
        .await;
    let internal = h.internal_token();

    let submit = |email: &'static str, org: Uuid, role: Role| {
        let h = &h;
        async move {
            h.submit(
                &Uuid::new_v4().to_string(),
                email,
                Organisation::OrganisationId(org.to_string()),
                role,
            )
            .await
            .unwrap()
        }
    };
    let practice = submit(
        "sam.patel@bridge-street.nhs.uk",
        t.practice,
        Role::PracticeUser,
    )
    .await;
    let other = submit(
        "jo.shah@mill-lane.nhs.uk",
        t.other_practice,
        Role::PracticeUser,
    )
    .await;
    let tier2 = submit(
        "kim.lee@riverside.nhs.uk",
        t.ccg,
        Role::CommissioningApprover,
    )
    .await;
    let unknown = Uuid::new_v4().to_string();
    let before = h.footprint().await;

    // In scope, of a role the caller may approve into: the registration as submitted.
    for (caller, token) in [
        ("admin", &admin.token),
        ("regional", &regional.token),
        ("internal", &internal),
    ] {
        let got = h.get_registration(token, &practice.id).await;
        assert_eq!(got.as_ref().ok(), Some(&practice), "{caller}: {got:?}");
    }
    assert_eq!(
        h.get_registration(&approver.token, &tier2.id)
            .await
            .unwrap(),
        tier2
    );
    assert_eq!(
        h.get_registration(&internal, &other.id).await.unwrap(),
        other
    );

    // Out of scope, or of a role the caller's list leaves out, is refused exactly like a
    // registration that does not exist.
    let missing = h
        .get_registration(&admin.token, &unknown)
        .await
        .unwrap_err();
    assert_reason(&missing, Code::PermissionDenied, "NO_GRANT_IN_SCOPE");
    for (what, token, id) in [
        ("admin, other practice", &admin.token, &other.id),
        ("admin, approver role", &admin.token, &tier2.id),
        ("elsewhere", &elsewhere.token, &practice.id),
        ("approver, practice role", &approver.token, &practice.id),
        ("elsewhere, unknown", &elsewhere.token, &unknown),
        ("approver, unknown", &approver.token, &unknown),
        ("revoked, other practice", &revoked, &other.id),
    ] {
        let refused = h.get_registration(token, id).await.unwrap_err();
        alike(what, &refused, &missing);
    }
    // Only those who may see everything are told it is missing.
    let not_found = h.get_registration(&internal, &unknown).await.unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);

    // A grant that no longer exists is refused once the row is in its scope.
    let stale = h
        .get_registration(&revoked, &practice.id)
        .await
        .unwrap_err();
    assert_reason(&stale, Code::PermissionDenied, "GRANT_REVOKED");

    // A role without the permission is refused before anything is looked up.
    for (what, token, reason) in [
        ("manager", &manager.token, "ROLE_LACKS_PERMISSION"),
        ("commissioner", &commissioner.token, "ROLE_LACKS_PERMISSION"),
        ("no grant", &no_grant, "NO_ACTIVE_GRANT"),
    ] {
        let existing = h.get_registration(token, &practice.id).await.unwrap_err();
        assert_reason(&existing, Code::PermissionDenied, reason);
        let absent = h.get_registration(token, &unknown).await.unwrap_err();
        alike(what, &absent, &existing);
    }

    // A bad id names its field.
    for id in ["", "not-a-uuid"] {
        let bad = h.get_registration(&admin.token, id).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{id:?}: {bad:?}");
        assert_eq!(violated_fields(&bad), ["registration_id"], "{bad:?}");
    }
    let anonymous = h
        .access()
        .get_registration(pb::GetRegistrationRequest {
            registration_id: practice.id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&anonymous, Code::Unauthenticated, "AUTHENTICATION_REQUIRED");

    // Reads record nothing.
    assert_eq!(h.footprint().await, before);
}

#[tokio::test]
async fn get_access_request_answers_the_requester_and_reviewers_in_scope() {
    let h = AccessSuite::start().await;
    let t = h.tree;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, t.ccg)
        .await;
    let elsewhere = h
        .grantee(Role::CommissioningAccountAdministrator, t.other_ccg)
        .await;
    let approver = h.grantee(Role::CommissioningApprover, t.region).await;
    let requester = h.grantee(Role::PracticeUser, t.practice).await;
    let colleague = h.grantee(Role::PracticeUser, t.practice).await;
    let internal = h.internal_token();

    let ask = |org: Uuid, role: Role| {
        let (h, token) = (&h, requester.token.clone());
        async move {
            h.request_access(&token, &Uuid::new_v4().to_string(), org, role)
                .await
                .unwrap()
        }
    };
    let practice = ask(t.practice, Role::PracticeManager).await;
    let other = ask(t.other_practice, Role::PracticeUser).await;
    let tier2 = ask(t.ccg, Role::CommissioningApprover).await;
    let unknown = Uuid::new_v4().to_string();
    let before = h.footprint().await;

    // The requester reads every request of theirs, wherever it is, with or without an
    // active grant (as ListMyAccessRequests).
    let without_grant = h.user_token(requester.account_id, None).await;
    for request in [&practice, &other, &tier2] {
        for token in [&requester.token, &without_grant] {
            let got = h.get_access_request(token, &request.id).await;
            assert_eq!(got.as_ref().ok(), Some(request), "{got:?}");
        }
    }
    // Reviewers read those their list shows them.
    assert_eq!(
        h.get_access_request(&admin.token, &practice.id)
            .await
            .unwrap(),
        practice
    );
    assert_eq!(
        h.get_access_request(&approver.token, &tier2.id)
            .await
            .unwrap(),
        tier2
    );
    assert_eq!(
        h.get_access_request(&internal, &other.id).await.unwrap(),
        other
    );

    // Out of scope, or of a role the caller's list leaves out: exactly like missing.
    let missing = h
        .get_access_request(&admin.token, &unknown)
        .await
        .unwrap_err();
    assert_reason(&missing, Code::PermissionDenied, "NO_GRANT_IN_SCOPE");
    for (what, token, id) in [
        ("admin, other practice", &admin.token, &other.id),
        ("admin, approver role", &admin.token, &tier2.id),
        ("elsewhere", &elsewhere.token, &practice.id),
        ("approver, practice role", &approver.token, &practice.id),
        ("elsewhere, unknown", &elsewhere.token, &unknown),
    ] {
        let refused = h.get_access_request(token, id).await.unwrap_err();
        alike(what, &refused, &missing);
    }
    let not_found = h.get_access_request(&internal, &unknown).await.unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);

    // Anyone else is refused by role, whether or not the request exists.
    let no_grant = h.user_token(Uuid::new_v4(), None).await;
    for (what, token, reason) in [
        ("colleague", &colleague.token, "ROLE_LACKS_PERMISSION"),
        ("no grant", &no_grant, "NO_ACTIVE_GRANT"),
    ] {
        let existing = h.get_access_request(token, &practice.id).await.unwrap_err();
        assert_reason(&existing, Code::PermissionDenied, reason);
        let absent = h.get_access_request(token, &unknown).await.unwrap_err();
        alike(what, &absent, &existing);
    }

    // A bad id names its field, for reviewers and requesters alike.
    for token in [&admin.token, &requester.token] {
        for id in ["", "42"] {
            let bad = h.get_access_request(token, id).await.unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument, "{id:?}: {bad:?}");
            assert_eq!(violated_fields(&bad), ["access_request_id"], "{bad:?}");
        }
    }

    // A decided request still reads, with its decision.
    let rejected = h
        .review_request(
            &admin.token,
            &practice.id,
            pb::Decision::Reject,
            "Not in post",
        )
        .await
        .unwrap();
    let before = [before[0], before[1], before[2], before[3], before[4] + 1];
    assert_eq!(h.footprint().await, before);
    for token in [&admin.token, &requester.token] {
        assert_eq!(
            h.get_access_request(token, &practice.id).await.unwrap(),
            rejected
        );
    }
    assert_eq!(h.footprint().await, before);
}
