//! Account creation, bootstrap, reads, permissions, input validation and the audit trail.

use std::collections::HashSet;
use std::time::Duration;

use cqrs_auth::Role;
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::{Service, Suite};
use cqrs_testkit::{assert_reason, field_violations, violated_fields, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::{IdentityCalls, PASSWORDS, SERVICE_CLIENT, start, start_with_mail};

#[tokio::test]
async fn create_account_is_idempotent_and_refuses_generic_mailboxes() {
    let h = start(&[("CQRS_GENERIC_EMAIL_DOMAINS", "shared.nhs.net")]).await;
    let key = Uuid::new_v4().to_string();
    let first = h
        .create_keyed(
            &key,
            pb::Realm::National,
            " Tom.Ward@NHS.NET ",
            "Tom",
            "Ward",
        )
        .await
        .unwrap();
    assert_eq!(first.email, "Tom.Ward@nhs.net");
    assert!(first.user_id.starts_with("TWA"), "{}", first.user_id);
    let again = h
        .create_keyed(&key, pb::Realm::National, "Tom.Ward@nhs.net", "Tom", "Ward")
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.user_id, first.user_id);

    let err = h
        .create_keyed(&key, pb::Realm::National, "other@nhs.net", "Tom", "Ward")
        .await
        .unwrap_err();
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    // The address is taken in the realm, whatever the case of its local part.
    let err = h
        .create(pb::Realm::National, "tom.ward@nhs.net", "Thomas", "Ward")
        .await
        .unwrap_err();
    assert_reason(&err, Code::AlreadyExists, "EMAIL_ALREADY_REGISTERED");
    // The other realm is separate.
    h.create(pb::Realm::Local, "tom.ward@nhs.net", "Tom", "Ward")
        .await
        .unwrap();

    // Parallel retries of one request: one account, one mail.
    let key = Uuid::new_v4().to_string();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = h.identity();
        let request = pb::CreateAccountRequest {
            request_id: key.clone(),
            realm: pb::Realm::Local as i32,
            email: "una.vale@practice.org".into(),
            first_name: "Una".into(),
            last_name: "Vale".into(),
        };
        let token = h.service_token_of(SERVICE_CLIENT);
        tasks.push(tokio::spawn(async move {
            client.create_account(with_token(request, &token)).await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(
            task.await
                .unwrap()
                .unwrap()
                .into_inner()
                .account
                .unwrap()
                .id,
        );
    }
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    let (mails,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE payload->>'account_id' = $1")
            .bind(&id)
            .fetch_one(h.pool(Service::Identity))
            .await
            .unwrap();
    assert_eq!(mails, 1);

    for email in [
        "info@nhs.net",
        "Reception+ward2@practice.org",
        "ann@shared.nhs.net",
    ] {
        let err = h
            .create(pb::Realm::Local, email, "Ann", "Other")
            .await
            .unwrap_err();
        assert_reason(&err, Code::InvalidArgument, "GENERIC_EMAIL_NOT_PERMITTED");
        assert_eq!(violated_fields(&err), ["email"]);
    }

    // Who may create: internal callers and the service desk, nobody else.
    let request = |email: &str| pb::CreateAccountRequest {
        request_id: Uuid::new_v4().to_string(),
        realm: pb::Realm::Local as i32,
        email: email.into(),
        first_name: "Vic".into(),
        last_name: "Webb".into(),
    };
    for role in [
        None,
        Some(Role::PracticeManager),
        Some(Role::CommissioningAccountAdministrator),
    ] {
        let token = h.role_token(Uuid::new_v4(), role).await;
        let err = h
            .identity()
            .create_account(with_token(request("vic.webb@practice.org"), &token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role:?}");
    }
    let desk = h.desk_token().await;
    let created = h
        .identity()
        .create_account(with_token(request("vic.webb@practice.org"), &desk))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(created.user_id, "");
    assert_eq!(h.audit_rows("CREATE_ACCOUNT", &created.id).await.len(), 1);
    // The registration mail is queued with the account, token and (NATIONAL) User ID.
    let payload = h
        .outbox_payload(&first.id, "REGISTRATION_LINK")
        .await
        .unwrap();
    assert_eq!(payload["params"]["user_id"], first.user_id.as_str());
    assert_eq!(payload["params"]["first_name"], "Tom");
    assert_eq!(payload["params"]["token"].as_str().unwrap().len(), 43);
}

/// API.md bootstrap: on an empty database the desk account is created once, however many
/// replicas start together, and its registration link is mailed.
#[tokio::test]
async fn bootstrap_creates_the_desk_account_once_and_mails_it() {
    let extra = [("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", "desk.lead@nhs.net")];
    let h = start_with_mail(&extra).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(h.identity_replica(&[]).await);
    }
    let results = futures::future::join_all(
        replicas
            .iter()
            .chain(std::iter::once(h.identity_service()))
            .map(|identity| identity.bootstrap()),
    )
    .await;
    let created: Vec<Uuid> = results.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(created.len(), 1);
    assert_eq!(h.count("accounts").await, 1);
    // A later start does nothing.
    assert_eq!(h.identity_service().bootstrap().await.unwrap(), None);
    // The directory is not running here: the service-desk grant waits, durably.
    let config = h.identity_service().config.bootstrap.clone().unwrap();
    assert_eq!(
        cqrs_identity::bootstrap::grant_pending(&h.identity_service().api, &config)
            .await
            .unwrap(),
        1
    );
    assert_eq!(h.count("bootstrap_grants WHERE done_at IS NULL").await, 1);

    let mails = h.smtp.wait_for(1, Duration::from_secs(20)).await;
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["desk.lead@nhs.net".to_owned()]);
    assert!(mail.text.contains("Dear Service,"), "{}", mail.text);
    assert!(
        mail.links()[0]
            .as_str()
            .starts_with(&format!("{}register/complete?token=", Suite::BASE_URL))
    );

    let account = h
        .complete_registration(&mail.link_token().unwrap(), PASSWORDS[0])
        .await
        .unwrap();
    assert_eq!(account.realm, pb::Realm::National as i32);
    assert_eq!(account.first_name, "Service");
    assert_eq!(account.last_name, "Desk");
    h.sign_in(&account.user_id, PASSWORDS[0]).await.unwrap();
    let (actor,): (String,) =
        sqlx::query_as("SELECT actor_kind FROM audit_events WHERE action = 'CREATE_ACCOUNT'")
            .fetch_one(h.pool(Service::Identity))
            .await
            .unwrap();
    assert_eq!(actor, "system");
}

/// Bad input on every RPC: InvalidArgument with field violations, and nothing written.
#[tokio::test]
async fn bad_input_is_refused_with_field_violations_and_changes_nothing() {
    let h = start(&[]).await;
    let account = h
        .active(pb::Realm::Local, "wes.york@practice.org", PASSWORDS[0])
        .await;
    let signed = h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
    let user = signed.access_token.clone();
    let service = h.service_token_of(SERVICE_CLIENT);
    let desk = h.desk_token().await;

    let tables = [
        "accounts",
        "links",
        "audit_events",
        "outbox",
        "password_history",
    ];
    let mut before = Vec::new();
    for table in tables {
        before.push(h.count(table).await);
    }
    let redis_before = h.redis.keys().await;

    let mut c = h.identity();
    let long = "x".repeat(400);
    let checks: Vec<(&str, Result<(), tonic::Status>, &[&str])> = vec![
        (
            "CreateAccount",
            c.create_account(with_token(
                pb::CreateAccountRequest {
                    request_id: "not-a-uuid".into(),
                    realm: 9,
                    email: "not an address".into(),
                    first_name: " ".into(),
                    last_name: long.clone(),
                },
                &service,
            ))
            .await
            .map(drop),
            &["request_id", "realm", "email", "first_name", "last_name"],
        ),
        (
            "CompleteRegistration",
            c.complete_registration(pb::CompleteRegistrationRequest::default())
                .await
                .map(drop),
            &["token"],
        ),
        (
            "ChangePassword",
            c.change_password(with_token(pb::ChangePasswordRequest::default(), &user))
                .await
                .map(drop),
            &["current_password"],
        ),
        (
            "RequestPasswordReset",
            c.request_password_reset(pb::RequestPasswordResetRequest::default())
                .await
                .map(drop),
            &["login"],
        ),
        (
            "ResetPassword",
            c.reset_password(pb::ResetPasswordRequest::default())
                .await
                .map(drop),
            &["token"],
        ),
        (
            "RemindUserId",
            c.remind_user_id(pb::RemindUserIdRequest {
                email: "nope".into(),
            })
            .await
            .map(drop),
            &["email"],
        ),
        (
            "SendPasswordReset",
            c.send_password_reset(with_token(
                pb::SendPasswordResetRequest {
                    account_id: "x".into(),
                },
                &desk,
            ))
            .await
            .map(drop),
            &["account_id"],
        ),
        (
            "UnlockAccount",
            c.unlock_account(with_token(pb::UnlockAccountRequest::default(), &desk))
                .await
                .map(drop),
            &["account_id"],
        ),
        (
            "DisableAccount",
            c.disable_account(with_token(
                pb::DisableAccountRequest {
                    account_id: "x".into(),
                    reason: "a\u{7}".into(),
                },
                &user,
            ))
            .await
            .map(drop),
            &["account_id", "reason"],
        ),
        (
            "EnableAccount",
            c.enable_account(with_token(pb::EnableAccountRequest::default(), &desk))
                .await
                .map(drop),
            &["account_id"],
        ),
        (
            "GetAccount",
            c.get_account(with_token(pb::GetAccountRequest::default(), &user))
                .await
                .map(drop),
            &["account_id"],
        ),
        (
            "LookupAccount",
            c.lookup_account(with_token(pb::LookupAccountRequest { key: None }, &service))
                .await
                .map(drop),
            &["key"],
        ),
        (
            "LookupAccount(user_id)",
            c.lookup_account(with_token(
                pb::LookupAccountRequest {
                    key: Some(pb::lookup_account_request::Key::UserId("AB12".into())),
                },
                &service,
            ))
            .await
            .map(drop),
            &["user_id"],
        ),
        (
            "ListAccounts",
            c.list_accounts(with_token(
                pb::ListAccountsRequest {
                    realm: 7,
                    state: 9,
                    account_ids: vec!["nope".into()],
                    page_size: 1000,
                    page_token: "junk!".into(),
                    ..Default::default()
                },
                &service,
            ))
            .await
            .map(drop),
            &[
                "realm",
                "state",
                "account_ids[0]",
                "page_size",
                "page_token",
            ],
        ),
        (
            "EndSessions",
            c.end_sessions(with_token(
                pb::EndSessionsRequest {
                    account_id: "x".into(),
                    organisation_id: "y".into(),
                    role: 99,
                    reason: "lower case".into(),
                },
                &service,
            ))
            .await
            .map(drop),
            &["account_id", "organisation_id", "role", "reason"],
        ),
        (
            "ListAuditEvents",
            c.list_audit_events(with_token(
                pb::ListAuditEventsRequest {
                    page_size: 501,
                    page_token: "junk!".into(),
                    ..Default::default()
                },
                &service,
            ))
            .await
            .map(drop),
            &["page_size", "page_token"],
        ),
        (
            "SelectRole",
            c.select_role(with_token(pb::SelectRoleRequest::default(), &user))
                .await
                .map(drop),
            &["organisation_id", "role"],
        ),
        (
            "RefreshAccessToken",
            c.refresh_access_token(pb::RefreshAccessTokenRequest::default())
                .await
                .map(drop),
            &["session_token"],
        ),
        (
            "IssueServiceToken",
            c.issue_service_token(pb::IssueServiceTokenRequest {
                client_id: "bad id!".into(),
                client_secret: String::new(),
            })
            .await
            .map(drop),
            &["client_id", "client_secret"],
        ),
    ];
    for (rpc, result, fields) in checks {
        let err = result.expect_err(rpc);
        assert_eq!(err.code(), Code::InvalidArgument, "{rpc}: {err:?}");
        let got: HashSet<String> = violated_fields(&err).into_iter().collect();
        for field in fields {
            assert!(
                got.contains(*field),
                "{rpc}: {field} missing from {:?}",
                field_violations(&err)
            );
        }
    }
    for (table, count) in tables.iter().zip(before) {
        assert_eq!(h.count(table).await, count, "{table} changed");
    }
    assert_eq!(h.redis.keys().await, redis_before);
}

/// Reads: the account itself, internal callers and the desk; others are refused before any
/// lookup, so a missing account and someone else's look the same.
#[tokio::test]
async fn reads_lists_and_the_audit_trail() {
    let h = start(&[]).await;
    let ann = h
        .active(pb::Realm::Local, "ann.xu@practice.org", PASSWORDS[0])
        .await;
    let national = h
        .create(pb::Realm::National, "ann.xu@practice.org", "Ann", "Xu")
        .await
        .unwrap();
    for i in 0..5 {
        h.create(
            pb::Realm::Local,
            &format!("user{i}@practice.org"),
            "User",
            "Number",
        )
        .await
        .unwrap();
    }
    let signed = h.sign_in(&ann.email, PASSWORDS[0]).await.unwrap();
    let me = h.get_account(&signed.access_token, &ann.id).await.unwrap();
    assert_eq!(me.id, ann.id);
    for id in [national.id.clone(), Uuid::new_v4().to_string()] {
        let err = h.get_account(&signed.access_token, &id).await.unwrap_err();
        assert_reason(&err, Code::PermissionDenied, "NO_ACTIVE_GRANT");
    }
    let desk = h.desk_token().await;
    h.get_account(&desk, &national.id).await.unwrap();
    let err = h
        .get_account(&desk, &Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Lookup by address prefers the NATIONAL account; by User ID in any case.
    let service = h.service_token_of(SERVICE_CLIENT);
    let lookup = |key| pb::LookupAccountRequest { key: Some(key) };
    let found = h
        .identity()
        .lookup_account(with_token(
            lookup(pb::lookup_account_request::Key::Email(
                "ann.xu@PRACTICE.org".into(),
            )),
            &service,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(found.id, national.id);
    let found = h
        .identity()
        .lookup_account(with_token(
            lookup(pb::lookup_account_request::Key::UserId(
                national.user_id.to_lowercase(),
            )),
            &desk,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(found.id, national.id);
    let err = h
        .identity()
        .lookup_account(with_token(
            lookup(pb::lookup_account_request::Key::UserId("ZZZ000".into())),
            &signed.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Paging in e-mail order, with filters.
    let mut emails = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .identity()
            .list_accounts(with_token(
                pb::ListAccountsRequest {
                    realm: pb::Realm::Local as i32,
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &desk,
            ))
            .await
            .unwrap()
            .into_inner();
        emails.extend(page.accounts.iter().map(|a| a.email.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = emails.clone();
    sorted.sort();
    assert_eq!(emails, sorted);
    assert_eq!(emails.len(), 6);
    let queried = h
        .identity()
        .list_accounts(with_token(
            pb::ListAccountsRequest {
                query: "USER_".into(),
                ..Default::default()
            },
            &service,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(queried.accounts.is_empty(), "'_' is not a wildcard");
    let queried = h
        .identity()
        .list_accounts(with_token(
            pb::ListAccountsRequest {
                query: "xu".into(),
                state: pb::AccountState::PendingRegistration as i32,
                ..Default::default()
            },
            &service,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queried.accounts.len(), 1);
    assert_eq!(queried.accounts[0].id, national.id);
    let err = h
        .identity()
        .list_accounts(with_token(
            pb::ListAccountsRequest::default(),
            &signed.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The audit trail, for the desk and internal callers only.
    let events = h
        .identity()
        .list_audit_events(with_token(
            pb::ListAuditEventsRequest {
                target_id: ann.id.clone(),
                ..Default::default()
            },
            &desk,
        ))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["SIGN_IN", "COMPLETE_REGISTRATION", "CREATE_ACCOUNT"]
    );
    assert_eq!(
        events[0].actor_kind,
        cqrs_proto::common::v1::ActorKind::Anonymous as i32
    );
    assert_eq!(
        events[2].actor_kind,
        cqrs_proto::common::v1::ActorKind::Service as i32
    );
    assert_eq!(events[2].actor_id, "access");
    assert_eq!(events[2].details["realm"], "LOCAL");
    assert!(!events[0].request_id.is_empty());
    let err = h
        .identity()
        .list_audit_events(with_token(
            pb::ListAuditEventsRequest::default(),
            &signed.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// IDENTITY_DISABLED_RETENTION_DAYS: a month after it was disabled, an account's name and
/// address are gone, its User ID stays, and the erasure is audited without the values erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_accounts_personal_data_is_erased_after_retention() {
    let h = start(&[("IDENTITY_DISABLED_RETENTION_DAYS", "30")]).await;
    let kept = h
        .active(pb::Realm::National, "kept.active@nhs.net", PASSWORDS[0])
        .await;
    let leaver = h
        .active(pb::Realm::National, "lee.leaver@nhs.net", PASSWORDS[1])
        .await;
    h.identity()
        .disable_account(with_token(
            pb::DisableAccountRequest {
                account_id: leaver.id.clone(),
                reason: "left the practice".into(),
            },
            &h.service_token_of(SERVICE_CLIENT),
        ))
        .await
        .unwrap();
    let identity = h.identity_service();
    assert_eq!(identity.erase_expired_personal_data().await.unwrap(), 0);

    h.advance_clock(chrono::TimeDelta::days(31));
    assert_eq!(identity.erase_expired_personal_data().await.unwrap(), 1);
    assert_eq!(identity.erase_expired_personal_data().await.unwrap(), 0);
    let (email, first, last, user_id): (String, String, String, Option<String>) =
        sqlx::query_as("SELECT email, first_name, last_name, user_id FROM accounts WHERE id = $1")
            .bind(Uuid::parse_str(&leaver.id).unwrap())
            .fetch_one(h.pool(Service::Identity))
            .await
            .unwrap();
    assert!(
        email.starts_with("erased+") && email.ends_with("@erased.invalid"),
        "{email}"
    );
    assert_eq!((first.as_str(), last.as_str()), ("Erased", "account"));
    assert_eq!(user_id.as_deref(), Some(leaver.user_id.as_str()));
    let (kept_email,): (String,) = sqlx::query_as("SELECT email FROM accounts WHERE id = $1")
        .bind(Uuid::parse_str(&kept.id).unwrap())
        .fetch_one(h.pool(Service::Identity))
        .await
        .unwrap();
    assert_eq!(kept_email, "kept.active@nhs.net");

    let erasures = h
        .audit(
            Service::Identity,
            cqrs_suite::AuditQuery::action("ERASE_PERSONAL_DATA"),
        )
        .await;
    assert_eq!(erasures.len(), 1);
    assert_eq!(erasures[0].target_id, leaver.id);
    let recorded = format!("{:?}", erasures[0]);
    assert!(
        !recorded.contains("lee.leaver") && !recorded.contains("Lee"),
        "{recorded}"
    );
    h.assert_every_change_audited().await;
}
