//! The notification service end to end, in-process, against a real Postgres database, a
//! real Redis (sessions) and a real SMTP server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{ActiveGrant, RedisSessionCheck, Role};
use cqrs_notifications::{NotificationsConfig, Store, worker};
use cqrs_proto::notifications::v1::{
    self as pb, EmailTemplate, notification_service_client::NotificationServiceClient,
};
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_testkit::{
    RunningServer, SmtpSink, TestDb, TestKeys, TestRedis, field_violations, spawn, status_reason,
    with_token,
};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const BASE_URL: &str = "https://cqrs.example.nhs.uk/portal/";

struct Harness {
    db: TestDb,
    redis: TestRedis,
    smtp: SmtpSink,
    keys: TestKeys,
    config: NotificationsConfig,
    server: RunningServer,
    service_token: String,
}

impl Harness {
    async fn start(extra: &[(&str, &str)]) -> Harness {
        let db = TestDb::new(&cqrs_notifications::MIGRATOR).await;
        let redis = TestRedis::new().await;
        let smtp = SmtpSink::start().await;
        let keys = TestKeys::generate();
        let verify = keys.verify_env_value();
        let smtp_url = smtp.url();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("CQRS_TOKEN_VERIFY_KEYS", &verify),
            ("CQRS_SMTP_URL", &smtp_url),
            ("CQRS_PUBLIC_BASE_URL", BASE_URL),
            ("NOTIFICATIONS_POLL_INTERVAL_MS", "20"),
            ("NOTIFICATIONS_RETRY_BASE_MS", "50"),
            ("NOTIFICATIONS_RETRY_MAX_SECS", "1"),
            ("NOTIFICATIONS_SMTP_TIMEOUT_SECS", "5"),
        ];
        pairs.extend_from_slice(extra);
        let env = Env::from_pairs(&pairs);
        let config = NotificationsConfig::from_env(&env).unwrap();
        let server_config = ServerConfig::from_env(&env, "notifications", 0).unwrap();
        let sessions = Arc::new(RedisSessionCheck::new(
            redis.conn.clone(),
            redis.namespace.clone(),
        ));
        let server = spawn(
            cqrs_notifications::server(
                server_config,
                Store::new(db.pool.clone()),
                Arc::new(cqrs_runtime::clock::SystemClock),
            )
            .session_check(sessions),
        )
        .await;
        let service_token = keys.service_token("access");
        Harness {
            db,
            redis,
            smtp,
            keys,
            config,
            server,
            service_token,
        }
    }

    fn client(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.server.channel.clone())
    }

    fn store(&self) -> Store {
        Store::new(self.db.pool.clone())
    }

    /// Starts a delivery worker; dropping the sender stops it.
    fn start_worker(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel::<()>();
        let worker = worker(
            &self.config,
            self.store(),
            Arc::new(cqrs_runtime::clock::SystemClock),
        )
        .unwrap();
        tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        tx
    }

    async fn user_token(&self, account_id: Uuid) -> String {
        self.keys.user_token(&self.redis, account_id, None).await
    }

    /// A new user acting as `role` at some organisation.
    async fn token_as(&self, role: Role) -> String {
        let grant = ActiveGrant {
            organisation_id: Uuid::new_v4(),
            role,
        };
        self.keys
            .user_token(&self.redis, Uuid::new_v4(), Some(grant))
            .await
    }

    async fn enqueue(
        &self,
        request: pb::EnqueueEmailRequest,
    ) -> Result<pb::Delivery, tonic::Status> {
        self.client()
            .enqueue_email(with_token(request, &self.service_token))
            .await
            .map(|r| r.into_inner().delivery.unwrap())
    }

    async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n
    }

    async fn delivery(&self, id: &str) -> pb::Delivery {
        self.client()
            .get_delivery(with_token(
                pb::GetDeliveryRequest { id: id.into() },
                &self.service_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .delivery
            .unwrap()
    }

    async fn wait_for_state(&self, id: &str, state: pb::DeliveryState) -> pb::Delivery {
        for _ in 0..300 {
            let delivery = self.delivery(id).await;
            if delivery.state == state as i32 {
                return delivery;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "delivery {id} never reached {state:?}: {:?}",
            self.delivery(id).await
        );
    }
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
    let h = Harness::start(&[]).await;
    let _worker = h.start_worker();

    let delivery = h
        .enqueue(reset_request("k-1", "Ann.Smith@NHS.net"))
        .await
        .unwrap();
    assert_eq!(delivery.to, "Ann.Smith@nhs.net");
    assert!(delivery.security);

    let mails = h.smtp.wait_for(1, Duration::from_secs(10)).await;
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

    let delivered = h
        .wait_for_state(&delivery.id, pb::DeliveryState::Delivered)
        .await;
    assert_eq!(delivered.attempts, 1);
    assert!(delivered.deliver_time.is_some());

    // The link token is not kept once the mail has gone.
    let (params,): (serde_json::Value,) =
        sqlx::query_as("SELECT params FROM emails WHERE id = $1::uuid")
            .bind(&delivery.id)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert!(params.get("token").is_none(), "{params}");

    let actions = h.store().audit_actions(&delivery.id).await.unwrap();
    assert_eq!(actions, vec!["ENQUEUE_EMAIL", "DELIVER_EMAIL"]);
}

#[tokio::test]
async fn the_same_key_twice_sends_one_mail_and_other_content_is_refused() {
    let h = Harness::start(&[]).await;
    let first = h.enqueue(reset_request("same", "a@nhs.net")).await.unwrap();
    let again = h.enqueue(reset_request("same", "a@nhs.net")).await.unwrap();
    assert_eq!(first.id, again.id);

    let err = h
        .enqueue(reset_request("same", "b@nhs.net"))
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
        let client = h.client();
        let token = h.service_token.clone();
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
    assert_eq!(h.count("emails").await, 2);

    let _worker = h.start_worker();
    h.smtp.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.smtp.messages().len(), 2);
}

#[tokio::test]
async fn mail_accepted_while_smtp_is_down_is_delivered_once_when_it_returns() {
    let h = Harness::start(&[("NOTIFICATIONS_MAX_ATTEMPTS", "100")]).await;
    h.smtp.set_down(true);
    let _worker = h.start_worker();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            h.enqueue(reset_request(
                &format!("down-{i}"),
                &format!("u{i}@nhs.net"),
            ))
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
            let delivery = h.delivery(id).await;
            if delivery.attempts >= 1 && !delivery.last_error.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delivery = h.delivery(id).await;
        assert!(delivery.attempts >= 1, "{delivery:?}");
        assert_eq!(delivery.state, pb::DeliveryState::Pending as i32);
        assert!(!delivery.last_error.is_empty());
    }
    assert!(h.smtp.messages().is_empty());

    h.smtp.set_down(false);
    let mails = h.smtp.wait_for(20, Duration::from_secs(20)).await;
    for id in &ids {
        h.wait_for_state(id, pb::DeliveryState::Delivered).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails_after = h.smtp.messages();
    assert_eq!(mails_after.len(), 20, "no mail twice");
    let recipients: HashSet<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(recipients.len(), 20);
}

#[tokio::test]
async fn two_workers_racing_over_500_mails_deliver_each_exactly_once() {
    let h = Harness::start(&[("NOTIFICATIONS_BATCH_SIZE", "25")]).await;
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let client = h.client();
        let token = h.service_token.clone();
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
    assert_eq!(h.count("emails").await, 500);

    let _a = h.start_worker();
    let _b = h.start_worker();
    h.smtp.wait_for(500, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mails = h.smtp.messages();
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
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(delivered, 500);
}

#[tokio::test]
async fn a_mail_is_dead_lettered_after_the_attempt_limit() {
    let h = Harness::start(&[
        ("NOTIFICATIONS_MAX_ATTEMPTS", "3"),
        ("NOTIFICATIONS_RETRY_BASE_MS", "10"),
    ])
    .await;
    h.smtp.set_down(true);
    let _worker = h.start_worker();
    let delivery = h.enqueue(reset_request("dead", "d@nhs.net")).await.unwrap();
    let dead = h
        .wait_for_state(&delivery.id, pb::DeliveryState::DeadLetter)
        .await;
    assert_eq!(dead.attempts, 3);
    assert!(!dead.last_error.is_empty());

    // It stays dead: the server coming back sends nothing.
    h.smtp.set_down(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.smtp.messages().is_empty());
    assert_eq!(h.delivery(&delivery.id).await.attempts, 3);

    let listed = h
        .client()
        .list_deliveries(with_token(
            pb::ListDeliveriesRequest {
                state: pb::DeliveryState::DeadLetter as i32,
                ..Default::default()
            },
            &h.service_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deliveries.len(), 1);
    let actions = h.store().audit_actions(&delivery.id).await.unwrap();
    assert_eq!(actions, vec!["ENQUEUE_EMAIL", "DEAD_LETTER_EMAIL"]);
}

#[tokio::test]
async fn the_inbox_shows_only_the_callers_own_notifications() {
    let h = Harness::start(&[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut client = h.client();
    let notify = |ids: Vec<Uuid>, title: &str, key: &str| pb::NotifyRequest {
        account_ids: ids.iter().map(Uuid::to_string).collect(),
        kind: "REGISTRATION_SUBMITTED".into(),
        title: title.into(),
        body: "A registration awaits review".into(),
        idempotency_key: key.into(),
    };
    client
        .notify(with_token(
            notify(vec![alice, bob], "for both", "n-1"),
            &h.service_token,
        ))
        .await
        .unwrap();
    // A retry with the same key adds nothing.
    client
        .notify(with_token(
            notify(vec![alice, bob], "for both", "n-1"),
            &h.service_token,
        ))
        .await
        .unwrap();
    let bobs = client
        .notify(with_token(
            notify(vec![bob], "for bob", ""),
            &h.service_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(h.count("notifications").await, 3);

    let alice_token = h.user_token(alice).await;
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

    let bob_token = h.user_token(bob).await;
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
    let h = Harness::start(&[]).await;
    let account = Uuid::new_v4();
    let token = h.user_token(account).await;
    let mut client = h.client();
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

    let workflow = h
        .enqueue(pb::EnqueueEmailRequest {
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
        })
        .await
        .unwrap();
    assert_eq!(workflow.state, pb::DeliveryState::Suppressed as i32);
    let security = h
        .enqueue(pb::EnqueueEmailRequest {
            account_id: account.to_string(),
            ..reset_request("sec", "user@nhs.net")
        })
        .await
        .unwrap();
    assert_eq!(security.state, pb::DeliveryState::Pending as i32);

    let _worker = h.start_worker();
    let mails = h.smtp.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.smtp.messages().len(), 1);
    assert_eq!(mails[0].subject, "Reset your CQRS password");
}

#[tokio::test]
async fn bad_input_is_refused_with_field_violations_and_nothing_is_stored() {
    let h = Harness::start(&[]).await;
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
    let mut client = h.client();
    for (request, field) in cases {
        let err = client
            .enqueue_email(with_token(request, &h.service_token))
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
            },
            &h.service_token,
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
            &h.service_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(h.count("emails").await, 0);
    assert_eq!(h.count("notifications").await, 0);
    assert_eq!(h.count("audit_events").await, 0);
}

#[tokio::test]
async fn callers_without_the_right_credentials_are_refused() {
    let h = Harness::start(&[]).await;
    let mut client = h.client();

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
    let user = h.user_token(Uuid::new_v4()).await;
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
    let desk = h.token_as(Role::ServiceDesk).await;
    client
        .list_deliveries(with_token(pb::ListDeliveriesRequest::default(), &desk))
        .await
        .unwrap();

    // A service has no inbox.
    let err = client
        .list_notifications(with_token(
            pb::ListNotificationsRequest::default(),
            &h.service_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A signed-out user's token dies with its session.
    let account = Uuid::new_v4();
    let token = h.user_token(account).await;
    client
        .get_preferences(with_token(pb::GetPreferencesRequest {}, &token))
        .await
        .unwrap();
    let mut conn = h.redis.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}{}*",
            h.redis.namespace,
            cqrs_auth::SESSION_KEY_PREFIX
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = client
        .get_preferences(with_token(pb::GetPreferencesRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(h.count("emails").await, 0);
}

#[tokio::test]
async fn the_audit_trail_is_listed_for_the_desk_and_services_only() {
    let h = Harness::start(&[]).await;
    let mut client = h.client();
    let account = Uuid::new_v4();
    h.enqueue(pb::EnqueueEmailRequest {
        account_id: account.to_string(),
        ..reset_request("audit-1", "ann@example.test")
    })
    .await
    .unwrap();
    let user = h.user_token(account).await;
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
        let mut client = h.client();
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
    let all = list(h.service_token.clone(), "").await.unwrap();
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
    let changed = list(h.service_token.clone(), "UPDATE_PREFERENCES")
        .await
        .unwrap();
    assert_eq!(changed.audit_events.len(), 1);
    assert_eq!(changed.audit_events[0].actor_id, account.to_string());

    // The service desk may read it; an ordinary user or an administrator of a subtree may not.
    let desk = h.token_as(Role::ServiceDesk).await;
    assert_eq!(list(desk, "").await.unwrap().audit_events.len(), 2);
    let err = list(user, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let admin = h.token_as(Role::CommissioningAccountAdministrator).await;
    let err = list(admin, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Bad filters are refused by field.
    let err = client
        .list_audit_events(with_token(
            pb::ListAuditEventsRequest {
                page_size: -1,
                ..Default::default()
            },
            &h.service_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&err)[0].0, "page_size");
}
