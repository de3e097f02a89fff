//! The notification service end to end, in-process over the suite ([`cqrs_suite::Suite`],
//! notifications alone): a real Postgres database, a real Redis (sessions) and a real SMTP
//! server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use cqrs_auth::{ActiveGrant, Role};
use cqrs_notifications::Store;
use cqrs_proto::notifications::v1::{self as pb, EmailTemplate};
use cqrs_suite::{Service, Suite};
use cqrs_testkit::{TestKeys, field_violations, status_reason, with_token};
use tonic::Code;
use uuid::Uuid;

const NOTIFICATIONS: Service = Service::Notifications;

/// The suite with the notification service alone, its settings overridden by `extra`. It
/// runs `NOTIFICATIONS_WORKERS` delivery workers (1 unless `extra` says otherwise) from the
/// start.
async fn start(extra: &[(&str, &str)]) -> Suite {
    Suite::builder()
        .only(&[NOTIFICATIONS])
        .env(NOTIFICATIONS, extra)
        .start()
        .await
}

/// No delivery worker runs until the test starts one ([`Suite::start_notifications_worker`]).
const NO_WORKERS: (&str, &str) = ("NOTIFICATIONS_WORKERS", "0");

/// The token of the service that sends mail (access).
fn service_token(suite: &Suite) -> String {
    suite.service_token_of("access")
}

fn store(suite: &Suite) -> Store {
    Store::new(suite.pool(NOTIFICATIONS).clone())
}

async fn user_token(suite: &Suite, account_id: Uuid) -> String {
    suite.user_token(account_id, None).await
}

/// A new user acting as `role` at some organisation.
async fn token_as(suite: &Suite, role: Role) -> String {
    let grant = ActiveGrant {
        organisation_id: Uuid::new_v4(),
        role,
    };
    suite.user_token(Uuid::new_v4(), Some(grant)).await
}

async fn enqueue(
    suite: &Suite,
    request: pb::EnqueueEmailRequest,
) -> Result<pb::Delivery, tonic::Status> {
    suite
        .notifications()
        .enqueue_email(with_token(request, &service_token(suite)))
        .await
        .map(|r| r.into_inner().delivery.unwrap())
}

async fn count(suite: &Suite, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(suite.pool(NOTIFICATIONS))
        .await
        .unwrap();
    n
}

async fn get_delivery(suite: &Suite, id: &str) -> pb::Delivery {
    suite
        .notifications()
        .get_delivery(with_token(
            pb::GetDeliveryRequest { id: id.into() },
            &service_token(suite),
        ))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap()
}

async fn wait_for_state(suite: &Suite, id: &str, state: pb::DeliveryState) -> pb::Delivery {
    for _ in 0..300 {
        let delivery = get_delivery(suite, id).await;
        if delivery.state == state as i32 {
            return delivery;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "delivery {id} never reached {state:?}: {:?}",
        get_delivery(suite, id).await
    );
}

fn reset_request(key: &str, to: &str) -> pb::EnqueueEmailRequest {
    pb::EnqueueEmailRequest {
        idempotency_key: key.into(),
        template: EmailTemplate::PasswordReset as i32,
        to: to.into(),
        params: HashMap::from([
            ("first_name".to_owned(), "Ann".to_owned()),
            ("token".to_owned(), format!("tok-{key}")),
        ]),
        account_id: String::new(),
    }
}

#[tokio::test]
async fn an_enqueued_mail_is_delivered_with_the_right_content() {
    let suite = start(&[]).await;

    let delivery = enqueue(&suite, reset_request("k-1", "Ann.Smith@NHS.net"))
        .await
        .unwrap();
    assert_eq!(delivery.to, "Ann.Smith@nhs.net");
    assert!(delivery.security);

    let mails = suite.smtp.wait_for(1, Duration::from_secs(10)).await;
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["Ann.Smith@nhs.net".to_owned()]);
    assert_eq!(mail.subject, "Reset your CQRS password");
    assert!(mail.text.contains("Dear Ann,"), "{}", mail.text);
    assert!(
        mail.text
            .contains("https://cqrs.example.nhs.uk/portal/password/reset?token=tok-k-1"),
        "{}",
        mail.text
    );
    assert_eq!(mail.link_token().as_deref(), Some("tok-k-1"));
    assert!(
        mail.html
            .as_deref()
            .unwrap_or_default()
            .contains("<a href=")
    );

    let delivered = wait_for_state(&suite, &delivery.id, pb::DeliveryState::Delivered).await;
    assert_eq!(delivered.attempts, 1);
    assert!(delivered.deliver_time.is_some());

    // The link token is not kept once the mail has gone.
    let (params,): (serde_json::Value,) =
        sqlx::query_as("SELECT params FROM emails WHERE id = $1::uuid")
            .bind(&delivery.id)
            .fetch_one(suite.pool(NOTIFICATIONS))
            .await
            .unwrap();
    assert!(params.get("token").is_none(), "{params}");

    let actions = store(&suite).audit_actions(&delivery.id).await.unwrap();
    assert_eq!(actions, vec!["ENQUEUE_EMAIL", "DELIVER_EMAIL"]);
}

#[tokio::test]
async fn the_same_key_twice_sends_one_mail_and_other_content_is_refused() {
    let suite = start(&[]).await;
    let first = enqueue(&suite, reset_request("same", "a@nhs.net"))
        .await
        .unwrap();
    let again = enqueue(&suite, reset_request("same", "a@nhs.net"))
        .await
        .unwrap();
    assert_eq!(first.id, again.id);

    let err = enqueue(&suite, reset_request("same", "b@nhs.net"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        status_reason(&err).as_deref(),
        Some("IDEMPOTENCY_KEY_REUSED")
    );

    // Parallel retries of one key: still one row.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = suite.notifications();
        let token = service_token(&suite);
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            client
                .enqueue_email(with_token(reset_request("race", "r@nhs.net"), &token))
                .await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(
            task.await
                .unwrap()
                .unwrap()
                .into_inner()
                .delivery
                .unwrap()
                .id,
        );
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(count(&suite, "emails").await, 2);
    suite.smtp.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(suite.smtp.messages().len(), 2);
}

#[tokio::test]
async fn mail_accepted_while_smtp_is_down_is_delivered_once_when_it_returns() {
    let suite = start(&[("NOTIFICATIONS_MAX_ATTEMPTS", "100")]).await;
    suite.smtp.set_down(true);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            enqueue(
                &suite,
                reset_request(&format!("down-{i}"), &format!("u{i}@nhs.net")),
            )
            .await
            .unwrap()
            .id,
        );
    }
    // Every mail has been tried (and failed) at least once while the server was down. An
    // attempt is counted when a worker claims the row, before it has failed: wait for the
    // failure to be recorded too.
    for id in &ids {
        for _ in 0..300 {
            let delivery = get_delivery(&suite, id).await;
            if delivery.attempts >= 1 && !delivery.last_error.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delivery = get_delivery(&suite, id).await;
        assert!(delivery.attempts >= 1, "{delivery:?}");
        assert_eq!(delivery.state, pb::DeliveryState::Pending as i32);
        assert!(!delivery.last_error.is_empty());
    }
    assert!(suite.smtp.messages().is_empty());

    suite.smtp.set_down(false);
    let mails = suite.smtp.wait_for(20, Duration::from_secs(20)).await;
    for id in &ids {
        wait_for_state(&suite, id, pb::DeliveryState::Delivered).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails_after = suite.smtp.messages();
    assert_eq!(mails_after.len(), 20, "no mail twice");
    let recipients: HashSet<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(recipients.len(), 20);
}

#[tokio::test]
async fn two_workers_racing_over_500_mails_deliver_each_exactly_once() {
    // The backlog is all there before two workers start claiming it side by side; the
    // suite's workers would start with it, so these two are the test's own.
    let batch = [("NOTIFICATIONS_BATCH_SIZE", "25")];
    let suite = start(&[NO_WORKERS]).await;
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let client = suite.notifications();
        let token = service_token(&suite);
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            for i in 0..50 {
                let n = chunk * 50 + i;
                client
                    .enqueue_email(with_token(
                        reset_request(&format!("bulk-{n}"), &format!("user{n}@nhs.net")),
                        &token,
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(count(&suite, "emails").await, 500);

    suite.start_notifications_worker(&batch);
    suite.start_notifications_worker(&batch);
    suite.smtp.wait_for(500, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mails = suite.smtp.messages();
    assert_eq!(mails.len(), 500);
    let mut per_recipient: BTreeMap<String, usize> = BTreeMap::new();
    for mail in &mails {
        for to in &mail.to {
            *per_recipient.entry(to.clone()).or_default() += 1;
        }
    }
    assert_eq!(per_recipient.len(), 500);
    assert!(per_recipient.values().all(|n| *n == 1));
    let (delivered,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM emails WHERE state = 'DELIVERED' AND attempts = 1")
            .fetch_one(suite.pool(NOTIFICATIONS))
            .await
            .unwrap();
    assert_eq!(delivered, 500);
}

#[tokio::test]
async fn a_mail_is_dead_lettered_after_the_attempt_limit() {
    let suite = start(&[
        ("NOTIFICATIONS_MAX_ATTEMPTS", "3"),
        ("NOTIFICATIONS_RETRY_BASE_MS", "10"),
    ])
    .await;
    suite.smtp.set_down(true);
    let delivery = enqueue(&suite, reset_request("dead", "d@nhs.net"))
        .await
        .unwrap();
    let dead = wait_for_state(&suite, &delivery.id, pb::DeliveryState::DeadLetter).await;
    assert_eq!(dead.attempts, 3);
    assert!(!dead.last_error.is_empty());

    // It stays dead: the server coming back sends nothing.
    suite.smtp.set_down(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(suite.smtp.messages().is_empty());
    assert_eq!(get_delivery(&suite, &delivery.id).await.attempts, 3);

    let listed = suite
        .notifications()
        .list_deliveries(with_token(
            pb::ListDeliveriesRequest {
                state: pb::DeliveryState::DeadLetter as i32,
                ..Default::default()
            },
            &service_token(&suite),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deliveries.len(), 1);
    let actions = store(&suite).audit_actions(&delivery.id).await.unwrap();
    assert_eq!(actions, vec!["ENQUEUE_EMAIL", "DEAD_LETTER_EMAIL"]);
}

#[tokio::test]
async fn the_inbox_shows_only_the_callers_own_notifications() {
    let suite = start(&[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut client = suite.notifications();
    let notify = |ids: Vec<Uuid>, title: &str, key: &str| pb::NotifyRequest {
        account_ids: ids.iter().map(Uuid::to_string).collect(),
        kind: "REGISTRATION_SUBMITTED".into(),
        title: title.into(),
        body: "A registration awaits review".into(),
        idempotency_key: key.into(),
        subject_id: String::new(),
    };
    client
        .notify(with_token(
            notify(vec![alice, bob], "for both", "n-1"),
            &service_token(&suite),
        ))
        .await
        .unwrap();
    // A retry with the same key adds nothing.
    client
        .notify(with_token(
            notify(vec![alice, bob], "for both", "n-1"),
            &service_token(&suite),
        ))
        .await
        .unwrap();
    let bobs = client
        .notify(with_token(
            notify(vec![bob], "for bob", ""),
            &service_token(&suite),
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(count(&suite, "notifications").await, 3);

    let alice_token = user_token(&suite, alice).await;
    let listed = client
        .list_notifications(with_token(
            pb::ListNotificationsRequest::default(),
            &alice_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.notifications.len(), 1);
    assert!(
        listed
            .notifications
            .iter()
            .all(|n| n.account_id == alice.to_string())
    );
    assert_eq!(listed.unread_count, 1);

    // Alice cannot touch Bob's notification, and cannot tell it exists.
    let err = client
        .mark_notification_read(with_token(
            pb::MarkNotificationReadRequest {
                notification_id: bobs[0].id.clone(),
            },
            &alice_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let bob_token = user_token(&suite, bob).await;
    let read = client
        .mark_notification_read(with_token(
            pb::MarkNotificationReadRequest {
                notification_id: bobs[0].id.clone(),
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert!(read.read);
    let unread = client
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                unread_only: true,
                page_size: 1,
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unread.notifications.len(), 1);
    assert_eq!(unread.notifications[0].title, "for both");
    assert_eq!(unread.unread_count, 1);
    assert!(unread.next_page_token.is_empty());

    // Paging walks every notification once.
    let page1 = client
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                page_size: 1,
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!page1.next_page_token.is_empty());
    let page2 = client
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                page_size: 1,
                page_token: page1.next_page_token.clone(),
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.notifications.len(), 1);
    assert_ne!(page1.notifications[0].id, page2.notifications[0].id);
    assert!(page2.next_page_token.is_empty());
}

#[tokio::test]
async fn opting_out_stops_workflow_mail_but_not_security_mail() {
    let suite = start(&[]).await;
    let account = Uuid::new_v4();
    let token = user_token(&suite, account).await;
    let mut client = suite.notifications();
    let prefs = client
        .get_preferences(with_token(pb::GetPreferencesRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(prefs.email_enabled, "mail is on until turned off");
    client
        .update_preferences(with_token(
            pb::UpdatePreferencesRequest {
                email_enabled: false,
            },
            &token,
        ))
        .await
        .unwrap();

    let workflow = enqueue(
        &suite,
        pb::EnqueueEmailRequest {
            idempotency_key: "wf".into(),
            template: EmailTemplate::AccessRequestApproved as i32,
            to: "user@nhs.net".into(),
            params: HashMap::from([
                ("first_name".to_owned(), "Ann".to_owned()),
                (
                    "organisation_name".to_owned(),
                    "Riverside Practice".to_owned(),
                ),
                ("role".to_owned(), "PRACTICE_USER".to_owned()),
            ]),
            account_id: account.to_string(),
        },
    )
    .await
    .unwrap();
    assert_eq!(workflow.state, pb::DeliveryState::Suppressed as i32);
    let security = enqueue(
        &suite,
        pb::EnqueueEmailRequest {
            account_id: account.to_string(),
            ..reset_request("sec", "user@nhs.net")
        },
    )
    .await
    .unwrap();
    assert_eq!(security.state, pb::DeliveryState::Pending as i32);
    let mails = suite.smtp.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(suite.smtp.messages().len(), 1);
    assert_eq!(mails[0].subject, "Reset your CQRS password");
}

#[tokio::test]
async fn bad_input_is_refused_with_field_violations_and_nothing_is_stored() {
    let suite = start(&[]).await;
    let long = "x".repeat(5000);
    let cases: Vec<(pb::EnqueueEmailRequest, &str)> = vec![
        (reset_request("b1", ""), "to"),
        (reset_request("b2", "not-an-address"), "to"),
        (
            reset_request("b3", "a@nhs.net\r\nBcc: evil@example.com"),
            "to",
        ),
        (
            pb::EnqueueEmailRequest {
                template: 0,
                ..reset_request("b4", "a@nhs.net")
            },
            "template",
        ),
        (
            pb::EnqueueEmailRequest {
                template: 999,
                ..reset_request("b5", "a@nhs.net")
            },
            "template",
        ),
        (
            pb::EnqueueEmailRequest {
                params: HashMap::from([("first_name".into(), "Ann".into())]),
                ..reset_request("b6", "a@nhs.net")
            },
            "params[token]",
        ),
        (
            pb::EnqueueEmailRequest {
                params: HashMap::from([
                    ("first_name".into(), long.clone()),
                    ("token".into(), "t".into()),
                ]),
                ..reset_request("b7", "a@nhs.net")
            },
            "params[first_name]",
        ),
        (
            reset_request(&"k".repeat(200), "a@nhs.net"),
            "idempotency_key",
        ),
        (reset_request("", "a@nhs.net"), "idempotency_key"),
        (
            pb::EnqueueEmailRequest {
                account_id: "nope".into(),
                ..reset_request("b8", "a@nhs.net")
            },
            "account_id",
        ),
    ];
    let mut client = suite.notifications();
    for (request, field) in cases {
        let err = client
            .enqueue_email(with_token(request, &service_token(&suite)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(status_reason(&err).as_deref(), Some("INVALID_ARGUMENT"));
        let fields: Vec<String> = field_violations(&err).into_iter().map(|(f, _)| f).collect();
        assert!(
            fields.contains(&field.to_owned()),
            "{field} not in {fields:?}"
        );
    }

    let err = client
        .notify(with_token(
            pb::NotifyRequest {
                account_ids: vec!["x".into()],
                kind: "k".into(),
                title: String::new(),
                body: long,
                idempotency_key: String::new(),
                subject_id: String::new(),
            },
            &service_token(&suite),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = field_violations(&err).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, vec!["account_ids[0]", "kind", "title", "body"]);

    let err = client
        .list_deliveries(with_token(
            pb::ListDeliveriesRequest {
                page_size: -1,
                page_token: "garbage!".into(),
                state: 42,
            },
            &service_token(&suite),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(count(&suite, "emails").await, 0);
    assert_eq!(count(&suite, "notifications").await, 0);
    assert_eq!(count(&suite, "audit_events").await, 0);
}

#[tokio::test]
async fn callers_without_the_right_credentials_are_refused() {
    let suite = start(&[]).await;
    let mut client = suite.notifications();

    let err = client
        .enqueue_email(reset_request("u1", "a@nhs.net"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .list_notifications(pb::ListNotificationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .enqueue_email(with_token(reset_request("u2", "a@nhs.net"), "not-a-jwt"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A token from another signing key.
    let other = TestKeys::generate().service_token("access");
    let err = client
        .enqueue_email(with_token(reset_request("u3", "a@nhs.net"), &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A user may not enqueue mail, and may not read deliveries without an operations role.
    let user = user_token(&suite, Uuid::new_v4()).await;
    let err = client
        .enqueue_email(with_token(reset_request("u4", "a@nhs.net"), &user))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .list_deliveries(with_token(pb::ListDeliveriesRequest::default(), &user))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The service desk may.
    let desk = token_as(&suite, Role::ServiceDesk).await;
    client
        .list_deliveries(with_token(pb::ListDeliveriesRequest::default(), &desk))
        .await
        .unwrap();

    // A service has no inbox.
    let err = client
        .list_notifications(with_token(
            pb::ListNotificationsRequest::default(),
            &service_token(&suite),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A signed-out user's token dies with its session.
    let account = Uuid::new_v4();
    let token = user_token(&suite, account).await;
    client
        .get_preferences(with_token(pb::GetPreferencesRequest {}, &token))
        .await
        .unwrap();
    let mut conn = suite.redis.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(cqrs_auth::session_key_pattern(&suite.redis.namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in &keys {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    cqrs_auth::announce_ended(&mut conn, &suite.redis.namespace, &keys)
        .await
        .unwrap();
    let err = client
        .get_preferences(with_token(pb::GetPreferencesRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(count(&suite, "emails").await, 0);
}

#[tokio::test]
async fn the_audit_trail_is_listed_for_the_desk_and_services_only() {
    // No worker: the trail holds only what the calls below did.
    let suite = start(&[NO_WORKERS]).await;
    let mut client = suite.notifications();
    let account = Uuid::new_v4();
    enqueue(
        &suite,
        pb::EnqueueEmailRequest {
            account_id: account.to_string(),
            ..reset_request("audit-1", "ann@example.test")
        },
    )
    .await
    .unwrap();
    let user = user_token(&suite, account).await;
    client
        .update_preferences(with_token(
            pb::UpdatePreferencesRequest {
                email_enabled: false,
            },
            &user,
        ))
        .await
        .unwrap();

    let list = |token: String, action: &str| {
        let mut client = suite.notifications();
        let request = pb::ListAuditEventsRequest {
            action: action.to_owned(),
            ..Default::default()
        };
        async move {
            client
                .list_audit_events(with_token(request, &token))
                .await
                .map(|r| r.into_inner())
        }
    };

    // Newest first, in the common shape, with who did it.
    let all = list(service_token(&suite), "").await.unwrap();
    let actions: Vec<&str> = all.audit_events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["UPDATE_PREFERENCES", "ENQUEUE_EMAIL"]);
    let enqueued = &all.audit_events[1];
    assert_eq!(
        enqueued.actor_kind,
        cqrs_proto::common::v1::ActorKind::Service as i32
    );
    assert_eq!(enqueued.actor_id, "access");
    assert_eq!(
        enqueued.outcome,
        cqrs_proto::common::v1::AuditOutcome::Success as i32
    );
    assert!(
        !format!("{:?}", all.audit_events).contains("tok-audit-1"),
        "no link token in the trail"
    );
    // Filters apply.
    let changed = list(service_token(&suite), "UPDATE_PREFERENCES")
        .await
        .unwrap();
    assert_eq!(changed.audit_events.len(), 1);
    assert_eq!(changed.audit_events[0].actor_id, account.to_string());

    // The service desk may read it; an ordinary user or an administrator of a subtree may not.
    let desk = token_as(&suite, Role::ServiceDesk).await;
    assert_eq!(list(desk, "").await.unwrap().audit_events.len(), 2);
    let err = list(user, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let admin = token_as(&suite, Role::CommissioningAccountAdministrator).await;
    let err = list(admin, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Bad filters are refused by field.
    let err = client
        .list_audit_events(with_token(
            pb::ListAuditEventsRequest {
                page_size: -1,
                ..Default::default()
            },
            &service_token(&suite),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&err)[0].0, "page_size");
}

/// One recipient's mail leaves in the order it was queued: a mail waits while an earlier one
/// to the same address is pending, even one waiting for its retry. And an attempt's result
/// counts only under the lease it was claimed with: a worker whose lease ran out can neither
/// mark delivered a mail another worker now holds nor dead-letter one that worker delivered.
#[tokio::test]
async fn one_recipients_mail_leaves_in_order_and_results_need_the_lease() {
    use cqrs_runtime::clock::Clock as _;
    let suite = start(&[NO_WORKERS]).await;
    let first = enqueue(&suite, reset_request("a1", "ann@nhs.net"))
        .await
        .unwrap();
    let second = enqueue(&suite, reset_request("a2", "ann@nhs.net"))
        .await
        .unwrap();
    let other = enqueue(&suite, reset_request("b1", "bob@nhs.net"))
        .await
        .unwrap();
    let store = store(&suite);
    let lease = Duration::from_secs(60);
    let at = |secs: i64| suite.clock.now() + chrono::Duration::seconds(secs);
    let ids = |rows: &[cqrs_notifications::store::DeliveryRow]| {
        rows.iter()
            .map(|r| r.id.to_string())
            .collect::<HashSet<_>>()
    };

    let claimed = store.claim_due(at(0), lease, 10).await.unwrap();
    assert_eq!(
        ids(&claimed),
        HashSet::from([first.id.clone(), other.id.clone()])
    );
    let row_of = |rows: &[cqrs_notifications::store::DeliveryRow], id: &str| {
        rows.iter()
            .find(|r| r.id.to_string() == id)
            .unwrap()
            .clone()
    };
    assert!(
        store
            .mark_delivered(&row_of(&claimed, &other.id), at(0))
            .await
            .unwrap()
    );
    // The first fails and waits for its retry; the second waits behind it.
    let first_a = row_of(&claimed, &first.id);
    assert!(
        store
            .mark_failed(&first_a, "smtp: down", Some(at(5)), at(0))
            .await
            .unwrap()
    );
    assert!(store.claim_due(at(1), lease, 10).await.unwrap().is_empty());

    // Worker A claims the retry and stalls past its lease; worker B takes the mail over.
    let worker_a = store.claim_due(at(6), lease, 10).await.unwrap();
    assert_eq!(ids(&worker_a), HashSet::from([first.id.clone()]));
    let worker_b = store.claim_due(at(70), lease, 10).await.unwrap();
    assert_eq!(ids(&worker_b), HashSet::from([first.id.clone()]));
    assert!(!store.mark_delivered(&worker_a[0], at(71)).await.unwrap());
    assert_eq!(
        get_delivery(&suite, &first.id).await.state,
        pb::DeliveryState::Pending as i32
    );
    assert!(store.mark_delivered(&worker_b[0], at(72)).await.unwrap());
    assert!(
        !store
            .mark_failed(&worker_a[0], "smtp: timeout", None, at(73))
            .await
            .unwrap()
    );
    let delivered = get_delivery(&suite, &first.id).await;
    assert_eq!(delivered.state, pb::DeliveryState::Delivered as i32);
    let actions = store.audit_actions(&first.id).await.unwrap();
    assert_eq!(actions, vec!["ENQUEUE_EMAIL", "DELIVER_EMAIL"]);

    // Only now is the second mail to the same address due.
    let claimed = store.claim_due(at(74), lease, 10).await.unwrap();
    assert_eq!(ids(&claimed), HashSet::from([second.id.clone()]));
}
