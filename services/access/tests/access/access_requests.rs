//! Access requests: ask, list, review, withdraw; the approver rule, own requests, and a
//! review racing a withdrawal.

use cqrs_auth::Role;
use cqrs_auth::RoleProto;
use cqrs_proto::access::v1 as pb;
use cqrs_suite::Service;
use cqrs_testkit::{assert_reason, status_reason, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::AccessSuite;

fn state(request: &pb::AccessRequest) -> pb::AccessRequestState {
    pb::AccessRequestState::try_from(request.state).unwrap()
}

async fn listed(h: &AccessSuite, token: &str) -> Result<Vec<pb::AccessRequest>, tonic::Status> {
    h.access()
        .list_access_requests(with_token(
            pb::ListAccessRequestsRequest {
                organisation_id: String::new(),
                state: pb::AccessRequestState::Unspecified as i32,
                page_size: 0,
                page_token: String::new(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().access_requests)
}

#[tokio::test]
async fn access_request_journey() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.ccg)
        .await;
    let elsewhere = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.other_ccg)
        .await;
    let user = h
        .user(
            "locum@bridge-street.nhs.uk",
            Role::PracticeUser,
            h.tree.practice,
        )
        .await;

    let key = Uuid::new_v4().to_string();
    let request = h
        .request_access(&user.token, &key, h.tree.practice, Role::PracticeManager)
        .await
        .unwrap();
    assert_eq!(state(&request), pb::AccessRequestState::Pending);
    assert_eq!(request.account_id, user.account_id.to_string());
    assert_eq!(request.organisation_name, "Bridge Street Surgery");
    assert_eq!(
        h.request_access(&user.token, &key, h.tree.practice, Role::PracticeManager)
            .await
            .unwrap(),
        request
    );
    // One pending request per role and place; nothing for a role already held.
    let twice = h
        .request_access(
            &user.token,
            &Uuid::new_v4().to_string(),
            h.tree.practice,
            Role::PracticeManager,
        )
        .await
        .unwrap_err();
    assert_reason(&twice, Code::AlreadyExists, "ACCESS_REQUEST_PENDING");
    let held = h
        .request_access(
            &user.token,
            &Uuid::new_v4().to_string(),
            h.tree.practice,
            Role::PracticeUser,
        )
        .await
        .unwrap_err();
    assert_reason(&held, Code::FailedPrecondition, "ALREADY_GRANTED");
    let before = h.footprint().await;
    let bad = h
        .access()
        .request_access(with_token(
            pb::RequestAccessRequest {
                request_id: Uuid::new_v4().to_string(),
                organisation_id: h.tree.ccg.to_string(),
                role: Role::PracticeManager.to_proto() as i32,
                reason: String::new(),
            },
            &user.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["reason"]);
    let misplaced = h
        .request_access(
            &user.token,
            &Uuid::new_v4().to_string(),
            h.tree.ccg,
            Role::PracticeManager,
        )
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&misplaced), ["role"]);
    let service = h
        .request_access(
            &h.internal_token(),
            &Uuid::new_v4().to_string(),
            h.tree.ccg,
            Role::CommissioningUser,
        )
        .await
        .unwrap_err();
    assert_reason(&service, Code::PermissionDenied, "USER_REQUIRED");
    assert_eq!(h.footprint().await, before);

    let mine = h
        .access()
        .list_my_access_requests(with_token(
            pb::ListMyAccessRequestsRequest {
                state: pb::AccessRequestState::Pending as i32,
                page_size: 0,
                page_token: String::new(),
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_requests;
    assert_eq!(mine, vec![request.clone()]);
    assert_eq!(
        listed(&h, &admin.token).await.unwrap(),
        vec![request.clone()]
    );
    assert!(listed(&h, &elsewhere.token).await.unwrap().is_empty());

    let approved = h
        .review_request(&admin.token, &request.id, pb::Decision::Approve, "")
        .await
        .unwrap();
    assert_eq!(state(&approved), pb::AccessRequestState::Approved);
    assert_eq!(approved.reviewer_id, admin.account_id.to_string());
    assert!(!approved.grant_id.is_empty());
    assert!(
        h.grants(user.account_id)
            .await
            .contains(&(h.tree.practice, Role::PracticeManager))
    );
    h.mails(&user.email, "access request has been approved", 1)
        .await;
    let audit = h.audit("REVIEW_ACCESS_REQUEST", &request.id).await;
    assert_eq!(audit[0].3["to_state"], "APPROVED");
    assert_eq!(audit[0].3["grant_id"], approved.grant_id.as_str());

    // A rejection needs a reason, which is mailed.
    let second = h
        .request_access(
            &user.token,
            &Uuid::new_v4().to_string(),
            h.tree.ccg,
            Role::CommissioningUser,
        )
        .await
        .unwrap();
    let no_reason = h
        .review_request(&admin.token, &second.id, pb::Decision::Reject, "")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_reason), ["reason"]);
    let rejected = h
        .review_request(
            &admin.token,
            &second.id,
            pb::Decision::Reject,
            "Practice staff only",
        )
        .await
        .unwrap();
    assert_eq!(state(&rejected), pb::AccessRequestState::Rejected);
    let mail = &h
        .mails(&user.email, "access request has been rejected", 1)
        .await[0];
    assert!(mail.text.contains("Practice staff only"));

    // Withdrawal: the requester only, while pending.
    let third = h
        .request_access(
            &user.token,
            &Uuid::new_v4().to_string(),
            h.tree.ccg,
            Role::CommissioningFinance,
        )
        .await
        .unwrap();
    let not_mine = h.withdraw(&admin.token, &third.id).await.unwrap_err();
    assert_reason(&not_mine, Code::PermissionDenied, "NOT_REQUESTER");
    let missing = h
        .withdraw(&user.token, &Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_reason(&missing, Code::PermissionDenied, "NOT_REQUESTER");
    let withdrawn = h.withdraw(&user.token, &third.id).await.unwrap();
    assert_eq!(state(&withdrawn), pb::AccessRequestState::Withdrawn);
    assert!(withdrawn.reviewer_id.is_empty());
    let again = h.withdraw(&user.token, &third.id).await.unwrap_err();
    assert_reason(
        &again,
        Code::FailedPrecondition,
        "ACCESS_REQUEST_NOT_PENDING",
    );
    let late = h
        .review_request(&admin.token, &third.id, pb::Decision::Approve, "")
        .await
        .unwrap_err();
    assert_reason(
        &late,
        Code::FailedPrecondition,
        "ACCESS_REQUEST_NOT_PENDING",
    );
    let outcomes: Vec<String> = h
        .audit("WITHDRAW_ACCESS_REQUEST", &third.id)
        .await
        .into_iter()
        .map(|(_, _, outcome, _)| outcome)
        .collect();
    assert_eq!(outcomes, ["denied", "success"]);
}

#[tokio::test]
async fn nobody_reviews_their_own_and_only_approvers_approve_approvers() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.ccg)
        .await;
    let regional = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.region)
        .await;
    let approver = h.grantee(Role::CommissioningApprover, h.tree.region).await;

    let own = h
        .request_access(
            &admin.token,
            &Uuid::new_v4().to_string(),
            h.tree.practice,
            Role::PracticeManager,
        )
        .await
        .unwrap();
    let refused = h
        .review_request(&admin.token, &own.id, pb::Decision::Approve, "")
        .await
        .unwrap_err();
    assert_reason(&refused, Code::PermissionDenied, "OWN_REQUEST");
    let denied = h.audit("REVIEW_ACCESS_REQUEST", &own.id).await;
    assert_eq!(denied[0].2, "denied");
    assert_eq!(denied[0].3["reason"], "OWN_REQUEST");
    h.review_request(&regional.token, &own.id, pb::Decision::Approve, "")
        .await
        .unwrap();

    let user = h.grantee(Role::CommissioningUser, h.tree.ccg).await;
    let tier2 = h
        .request_access(
            &user.token,
            &Uuid::new_v4().to_string(),
            h.tree.ccg,
            Role::CommissioningApprover,
        )
        .await
        .unwrap();
    // Administrators neither see nor decide approver-role requests; approvers see only those.
    assert!(
        listed(&h, &admin.token)
            .await
            .unwrap()
            .iter()
            .all(|r| r.id != tier2.id)
    );
    let ids: Vec<String> = listed(&h, &approver.token)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [tier2.id.as_str()]);
    let by_admin = h
        .review_request(&admin.token, &tier2.id, pb::Decision::Approve, "")
        .await
        .unwrap_err();
    assert_reason(&by_admin, Code::PermissionDenied, "ROLE_LACKS_PERMISSION");
    let approved = h
        .review_request(&approver.token, &tier2.id, pb::Decision::Approve, "")
        .await
        .unwrap();
    assert_eq!(state(&approved), pb::AccessRequestState::Approved);
    assert!(
        h.grants(user.account_id)
            .await
            .contains(&(h.tree.ccg, Role::CommissioningApprover))
    );
}

#[tokio::test]
async fn a_review_racing_a_withdrawal_ends_in_one_state() {
    let h = AccessSuite::start().await;
    let admin = h
        .grantee(Role::CommissioningAccountAdministrator, h.tree.region)
        .await;
    let user = h.grantee(Role::PracticeUser, h.tree.practice).await;
    let roles = [
        Role::CommissioningUser,
        Role::CommissioningFinance,
        Role::CommissioningAccountAdministrator,
    ];
    let mut outcomes = Vec::new();
    for (round, role) in roles.into_iter().enumerate() {
        let org = if round % 2 == 0 {
            h.tree.ccg
        } else {
            h.tree.other_ccg
        };
        let request = h
            .request_access(&user.token, &Uuid::new_v4().to_string(), org, role)
            .await
            .unwrap();
        let decision = if round == 1 {
            pb::Decision::Reject
        } else {
            pb::Decision::Approve
        };
        // Vary which side gets a head start, so both orders are exercised.
        let head_start = std::time::Duration::from_millis(15 * round as u64);
        let (review, withdrawal) = tokio::join!(
            h.review_request(&admin.token, &request.id, decision, "Not needed"),
            async {
                tokio::time::sleep(head_start).await;
                h.withdraw(&user.token, &request.id).await
            },
        );
        let final_state = match (&review, &withdrawal) {
            (Ok(reviewed), Err(status)) => {
                assert_eq!(
                    status_reason(status).as_deref(),
                    Some("ACCESS_REQUEST_NOT_PENDING")
                );
                state(reviewed)
            }
            (Err(status), Ok(withdrawn)) => {
                assert_eq!(
                    status_reason(status).as_deref(),
                    Some("ACCESS_REQUEST_NOT_PENDING")
                );
                state(withdrawn)
            }
            other => panic!("exactly one must win: {other:?}"),
        };
        let stored: (String,) = sqlx::query_as("SELECT state FROM access_requests WHERE id = $1")
            .bind(Uuid::parse_str(&request.id).unwrap())
            .fetch_one(h.pool(Service::Access))
            .await
            .unwrap();
        assert_eq!(
            format!("ACCESS_REQUEST_STATE_{}", stored.0),
            final_state.as_str_name()
        );
        let granted = h.grants(user.account_id).await.contains(&(org, role));
        assert_eq!(granted, final_state == pb::AccessRequestState::Approved);
        outcomes.push(final_state);
    }
    assert_eq!(outcomes.len(), 3);
}
