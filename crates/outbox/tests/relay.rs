//! The relay against a real Postgres database and a real in-process NotificationService.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use cqrs_auth::StaticToken;
use cqrs_outbox::{
    OutboxMessage, Relay, RelayConfig, dead_count, enqueue, ensure_schema, pending_count,
    purge_delivered,
};
use cqrs_peers::NotificationsPeer;
use cqrs_proto::notifications::v1::{
    Delivery, EmailTemplate, EnqueueEmailRequest, EnqueueEmailResponse, GetDeliveryRequest,
    GetDeliveryResponse, GetPreferencesRequest, GetPreferencesResponse, ListAuditEventsRequest,
    ListAuditEventsResponse, ListDeliveriesRequest, ListDeliveriesResponse,
    ListNotificationsRequest, ListNotificationsResponse, MarkNotificationReadRequest,
    MarkNotificationReadResponse, NotifyRequest, NotifyResponse, UpdatePreferencesRequest,
    UpdatePreferencesResponse,
    notification_service_server::{NotificationService, NotificationServiceServer},
};
use cqrs_testkit::TestDb;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint, Server},
};
use uuid::Uuid;

const TOKEN: &str = "test-service-token";
/// Guards against hangs only; nothing here asserts on speed.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// A NotificationService stand-in that records what it receives and dedupes like the real one.

#[derive(Clone, Debug, PartialEq)]
enum Content {
    Email(EnqueueEmailRequest),
    Notify(NotifyRequest),
}

#[derive(Clone, Debug)]
struct Call {
    key: String,
    authorization: Option<String>,
    at: Instant,
    content: Content,
    /// Code returned, None for success.
    failed: Option<tonic::Code>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    accepted: HashMap<String, Content>,
    fail_next: usize,
    stall_next: usize,
    delay: Duration,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<State>>);

impl Recorder {
    fn fail_next(&self, n: usize) {
        self.0.lock().unwrap().fail_next = n;
    }
    fn stall_next(&self, n: usize) {
        self.0.lock().unwrap().stall_next = n;
    }
    fn set_delay(&self, delay: Duration) {
        self.0.lock().unwrap().delay = delay;
    }
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }
    fn calls_for(&self, key: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.key == key).collect()
    }
    fn accepted(&self) -> HashMap<String, Content> {
        self.0.lock().unwrap().accepted.clone()
    }

    async fn handle(
        &self,
        key: String,
        authorization: Option<String>,
        content: Content,
        invalid: Option<&'static str>,
    ) -> Result<(), Status> {
        let (index, stall, delay) = {
            let mut state = self.0.lock().unwrap();
            state.calls.push(Call {
                key: key.clone(),
                authorization,
                at: Instant::now(),
                content: content.clone(),
                failed: None,
            });
            let stall = state.stall_next > 0;
            if stall {
                state.stall_next -= 1;
            }
            (state.calls.len() - 1, stall, state.delay)
        };
        if stall {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.0.lock().unwrap();
        let result = if state.fail_next > 0 {
            state.fail_next -= 1;
            Err(Status::unavailable("smtp relay down"))
        } else if let Some(why) = invalid {
            Err(Status::invalid_argument(why))
        } else if key.is_empty() {
            Err(Status::invalid_argument("idempotency_key is required"))
        } else {
            match state.accepted.get(&key) {
                Some(first) if *first != content => {
                    Err(Status::already_exists("idempotency key reused"))
                }
                Some(_) => Ok(()),
                None => {
                    state.accepted.insert(key, content);
                    Ok(())
                }
            }
        };
        if let Err(status) = &result {
            state.calls[index].failed = Some(status.code());
        }
        result
    }
}

fn authorization<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl NotificationService for Recorder {
    async fn enqueue_email(
        &self,
        request: Request<EnqueueEmailRequest>,
    ) -> Result<Response<EnqueueEmailResponse>, Status> {
        let auth = authorization(&request);
        let body = request.into_inner();
        let invalid = if body.template == i32::from(EmailTemplate::Unspecified) {
            Some("template is required")
        } else if !body.to.contains('@') {
            Some("to is not an e-mail address")
        } else {
            None
        };
        let key = body.idempotency_key.clone();
        self.handle(key.clone(), auth, Content::Email(body), invalid)
            .await?;
        Ok(Response::new(EnqueueEmailResponse {
            delivery: Some(Delivery {
                id: key.clone(),
                idempotency_key: key,
                ..Default::default()
            }),
        }))
    }

    async fn notify(
        &self,
        request: Request<NotifyRequest>,
    ) -> Result<Response<NotifyResponse>, Status> {
        let auth = authorization(&request);
        let body = request.into_inner();
        let invalid = body
            .account_ids
            .is_empty()
            .then_some("account_ids is required");
        self.handle(
            body.idempotency_key.clone(),
            auth,
            Content::Notify(body),
            invalid,
        )
        .await?;
        Ok(Response::new(NotifyResponse::default()))
    }

    async fn list_notifications(
        &self,
        _: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn mark_notification_read(
        &self,
        _: Request<MarkNotificationReadRequest>,
    ) -> Result<Response<MarkNotificationReadResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_preferences(
        &self,
        _: Request<GetPreferencesRequest>,
    ) -> Result<Response<GetPreferencesResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn update_preferences(
        &self,
        _: Request<UpdatePreferencesRequest>,
    ) -> Result<Response<UpdatePreferencesResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_delivery(
        &self,
        _: Request<GetDeliveryRequest>,
    ) -> Result<Response<GetDeliveryResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_deliveries(
        &self,
        _: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_audit_events(
        &self,
        _: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Harness {
    db: TestDb,
    recorder: Recorder,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn harness() -> Harness {
    let db = TestDb::empty().await;
    let mut conn = db.pool.acquire().await.unwrap();
    ensure_schema(&mut conn).await.unwrap();
    // Idempotent: a restarted service runs it again.
    ensure_schema(&mut conn).await.unwrap();
    drop(conn);

    let recorder = Recorder::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = NotificationServiceServer::new(recorder.clone());
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    Harness {
        db,
        recorder,
        channel,
        stop: Some(stop),
        server: Some(server),
    }
}

fn fast_config() -> RelayConfig {
    RelayConfig {
        batch_size: 50,
        poll_interval: Duration::from_millis(20),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        lease: Duration::from_secs(30),
        call_timeout: Duration::from_secs(10),
        concurrency: 4,
        producer: "test",
    }
}

impl Harness {
    fn relay_on(&self, pool: PgPool, config: RelayConfig) -> Relay {
        let notifications = NotificationsPeer::new(
            self.channel.clone(),
            Arc::new(StaticToken(TOKEN.to_owned())),
            config.call_timeout,
        );
        Relay::new(pool, notifications, config)
    }

    fn relay(&self, config: RelayConfig) -> Relay {
        self.relay_on(self.db.pool.clone(), config)
    }

    async fn commit(&self, msgs: &[OutboxMessage]) -> Vec<Uuid> {
        let mut tx = self.db.pool.begin().await.unwrap();
        let mut ids = Vec::new();
        for msg in msgs {
            ids.push(enqueue(&mut tx, msg).await.unwrap());
        }
        tx.commit().await.unwrap();
        ids
    }

    async fn row(&self, id: Uuid) -> Row {
        sqlx::query_as(
            "SELECT attempts, delivered_at, dead_at, lease_until, last_error, created_at,
                    next_attempt_at
             FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    attempts: i32,
    delivered_at: Option<DateTime<Utc>>,
    dead_at: Option<DateTime<Utc>>,
    lease_until: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
}

fn reset_mail(to: &str) -> OutboxMessage {
    OutboxMessage::Email {
        template: EmailTemplate::PasswordReset,
        to: to.to_owned(),
        params: BTreeMap::from([
            ("first_name".to_owned(), "Ada".to_owned()),
            ("token".to_owned(), "one-time-token".to_owned()),
        ]),
        account_id: Some(Uuid::new_v4()),
    }
}

fn in_app(account: Uuid) -> OutboxMessage {
    OutboxMessage::InApp {
        account_ids: vec![account],
        kind: "REGISTRATION_SUBMITTED".to_owned(),
        title: "New registration".to_owned(),
        body: "Someone asked to join.".to_owned(),
        subject_id: String::new(),
    }
}

/// Polls `check` until it holds; panics after [`PATIENCE`] (a hang guard, not a speed limit).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn rolled_back_enqueue_sends_nothing() {
    let h = harness().await;
    let mut tx = h.db.pool.begin().await.unwrap();
    enqueue(&mut tx, &reset_mail("ada@example.test"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let relay = h.relay(fast_config());
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert_eq!(pending_count(&h.db.pool).await.unwrap(), 0);
    assert!(h.recorder.calls().is_empty());
}

#[tokio::test]
async fn committed_messages_are_delivered_once_with_row_id_as_key() {
    let h = harness().await;
    let account = Uuid::new_v4();
    let mail = reset_mail("ada@example.test");
    let note = in_app(account);
    let ids = h.commit(&[mail.clone(), note]).await;
    assert_eq!(pending_count(&h.db.pool).await.unwrap(), 2);

    let relay = h.relay(fast_config());
    assert_eq!(relay.run_once().await.unwrap(), 2);

    let calls = h.recorder.calls();
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(
            call.authorization.as_deref(),
            Some("Bearer test-service-token")
        );
        assert_eq!(call.failed, None);
    }
    let email = &h.recorder.calls_for(&ids[0].to_string())[0];
    let Content::Email(request) = &email.content else {
        panic!("expected an e-mail, got {:?}", email.content);
    };
    let OutboxMessage::Email {
        to,
        params,
        account_id,
        ..
    } = mail
    else {
        unreachable!()
    };
    assert_eq!(request.idempotency_key, ids[0].to_string());
    assert_eq!(request.template(), EmailTemplate::PasswordReset);
    assert_eq!(request.to, to);
    assert_eq!(
        request
            .params
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        params
    );
    assert_eq!(request.account_id, account_id.unwrap().to_string());

    let notify = &h.recorder.calls_for(&ids[1].to_string())[0];
    let Content::Notify(request) = &notify.content else {
        panic!("expected a notification, got {:?}", notify.content);
    };
    assert_eq!(request.idempotency_key, ids[1].to_string());
    assert_eq!(request.account_ids, vec![account.to_string()]);
    assert_eq!(request.kind, "REGISTRATION_SUBMITTED");

    for id in &ids {
        let row = h.row(*id).await;
        assert!(row.delivered_at.is_some());
        assert_eq!(row.attempts, 0);
        assert_eq!(row.lease_until, None);
    }
    assert_eq!(pending_count(&h.db.pool).await.unwrap(), 0);
    // Delivered payloads (which carry link tokens) are not kept.
    let (kept,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE payload <> '{}'::jsonb")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(kept, 0);

    // Nothing left to do: a second pass sends nothing again.
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert_eq!(h.recorder.calls().len(), 2);

    // Delivered rows (and the tokens in them) can be purged once old enough.
    let hour = Duration::from_secs(3600);
    assert_eq!(purge_delivered(&h.db.pool, hour).await.unwrap(), 0);
    assert_eq!(
        purge_delivered(&h.db.pool, Duration::ZERO).await.unwrap(),
        2
    );
}

/// Mail to one address is handed over in the order it was written, one at a time; other
/// addresses are not held up, and neither are in-app notifications.
#[tokio::test]
async fn one_recipients_mail_is_handed_over_in_order() {
    let h = harness().await;
    let ids = h
        .commit(&[
            reset_mail("ada@example.test"),
            reset_mail("ada@example.test"),
            reset_mail("bob@example.test"),
            in_app(Uuid::new_v4()),
        ])
        .await;
    let relay = h.relay(fast_config());
    let keys = |calls: Vec<Call>| {
        calls
            .into_iter()
            .map(|c| c.key)
            .collect::<HashSet<String>>()
    };
    assert_eq!(relay.run_once().await.unwrap(), 3);
    assert_eq!(
        keys(h.recorder.calls()),
        HashSet::from([ids[0].to_string(), ids[2].to_string(), ids[3].to_string()])
    );
    assert_eq!(relay.run_once().await.unwrap(), 1);
    let last = h.recorder.calls().pop().unwrap();
    assert_eq!(last.key, ids[1].to_string());
    assert_eq!(relay.run_once().await.unwrap(), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_until_delivered() {
    let h = harness().await;
    h.recorder.fail_next(3);
    let config = fast_config();
    let id = h.commit(&[reset_mail("ada@example.test")]).await[0];

    let relay = h.relay(config.clone());
    assert_eq!(relay.run_once().await.unwrap(), 1);
    let first = h.row(id).await;
    assert_eq!(first.attempts, 1);
    assert!(first.delivered_at.is_none());
    assert_eq!(
        first.last_error.as_deref(),
        Some("Unavailable: smtp relay down")
    );
    // Rescheduled at least half the initial backoff after the row was written.
    assert!(
        first.next_attempt_at - first.created_at
            >= chrono::Duration::from_std(config.initial_backoff / 2).unwrap()
    );

    eventually("delivery after retries", || async {
        relay.run_once().await.unwrap();
        h.row(id).await.delivered_at.is_some()
    })
    .await;

    let row = h.row(id).await;
    assert_eq!(row.attempts, 3);
    assert!(row.dead_at.is_none());
    assert_eq!(pending_count(&h.db.pool).await.unwrap(), 0);

    let calls = h.recorder.calls_for(&id.to_string());
    let codes: Vec<_> = calls.iter().map(|c| c.failed).collect();
    let unavailable = Some(tonic::Code::Unavailable);
    assert_eq!(codes, vec![unavailable, unavailable, unavailable, None]);
    // Each retry waited at least the lower (jittered) bound of its backoff: 20, 40, then 50
    // (capped) milliseconds, halved.
    let bounds = [10, 20, 25].map(Duration::from_millis);
    for (pair, bound) in calls.windows(2).zip(bounds) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= bound,
            "retry came after {gap:?}, expected >= {bound:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_send_a_row_twice() {
    let h = harness().await;
    // Keep calls in flight long enough for the relays' batches to overlap.
    h.recorder.set_delay(Duration::from_millis(1));
    let mut ids = HashSet::new();
    for chunk in 0..6 {
        let msgs: Vec<_> = (0..50)
            .map(|i| {
                if i % 3 == 0 {
                    in_app(Uuid::new_v4())
                } else {
                    reset_mail(&format!("user{chunk}-{i}@example.test"))
                }
            })
            .collect();
        ids.extend(h.commit(&msgs).await);
    }
    assert_eq!(ids.len(), 300);

    let config = RelayConfig {
        batch_size: 20,
        ..fast_config()
    };
    let pool = || {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&h.db.url)
            .unwrap()
    };
    let relays = [
        h.relay_on(pool(), config.clone()),
        h.relay_on(pool(), config.clone()),
    ];
    let run = |relay: Relay| {
        let pending = h.db.pool.clone();
        tokio::spawn(async move {
            let mut claimed = 0;
            let give_up = Instant::now() + PATIENCE;
            loop {
                let n = relay.run_once().await.unwrap();
                claimed += n;
                if n == 0 && pending_count(&pending).await.unwrap() == 0 {
                    return claimed;
                }
                assert!(Instant::now() < give_up, "relays did not drain the outbox");
            }
        })
    };
    let [a, b] = relays;
    let (a, b) = (run(a), run(b));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a + b, 300, "each row claimed exactly once ({a} + {b})");

    let calls = h.recorder.calls();
    let keys: HashSet<_> = calls.iter().map(|c| c.key.clone()).collect();
    assert_eq!(calls.len(), 300, "total calls");
    assert_eq!(keys.len(), 300, "distinct keys");
    assert_eq!(
        keys,
        ids.iter().map(Uuid::to_string).collect::<HashSet<_>>()
    );
    assert_eq!(h.recorder.accepted().len(), 300);
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(delivered, 300);
}

#[tokio::test]
async fn rejected_payload_is_marked_dead_and_not_retried() {
    let h = harness().await;
    let bad = OutboxMessage::Email {
        template: EmailTemplate::Unspecified,
        to: "ada@example.test".to_owned(),
        params: BTreeMap::new(),
        account_id: None,
    };
    let id = h.commit(&[bad]).await[0];
    // A payload this version cannot even read is dead too, and never sent.
    let garbled = Uuid::new_v4();
    sqlx::query("INSERT INTO outbox (id, kind, payload) VALUES ($1, 'email', $2)")
        .bind(garbled)
        .bind(serde_json::json!({"type": "email", "template": "EMAIL_TEMPLATE_GONE"}))
        .execute(&h.db.pool)
        .await
        .unwrap();

    let relay = h.relay(fast_config());
    assert_eq!(relay.run_once().await.unwrap(), 2);

    let row = h.row(id).await;
    assert!(row.dead_at.is_some());
    assert!(row.delivered_at.is_none());
    assert_eq!(row.attempts, 1);
    assert_eq!(
        row.last_error.as_deref(),
        Some("InvalidArgument: template is required")
    );
    let garbled_row = h.row(garbled).await;
    assert!(garbled_row.dead_at.is_some());
    assert!(
        garbled_row
            .last_error
            .unwrap()
            .starts_with("undecodable payload")
    );
    assert_eq!(pending_count(&h.db.pool).await.unwrap(), 0);
    assert_eq!(dead_count(&h.db.pool).await.unwrap(), 2);

    // Even when due again, a dead row is left alone.
    sqlx::query("UPDATE outbox SET next_attempt_at = now() - interval '1 hour'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert_eq!(h.recorder.calls().len(), 1);
}

#[tokio::test]
async fn a_call_past_its_deadline_is_retried() {
    let h = harness().await;
    h.recorder.stall_next(1);
    let id = h.commit(&[reset_mail("ada@example.test")]).await[0];
    let relay = h.relay(RelayConfig {
        call_timeout: Duration::from_millis(200),
        ..fast_config()
    });

    assert_eq!(relay.run_once().await.unwrap(), 1);
    let row = h.row(id).await;
    assert_eq!(row.attempts, 1);
    assert!(row.delivered_at.is_none());
    let error = row.last_error.unwrap();
    // Whichever side noticed first: our deadline or the server's grpc-timeout.
    assert!(
        error.starts_with("DeadlineExceeded") || error.starts_with("Cancelled"),
        "{error}"
    );

    eventually("delivery after the stall", || async {
        relay.run_once().await.unwrap();
        h.row(id).await.delivered_at.is_some()
    })
    .await;
    assert_eq!(h.recorder.calls_for(&id.to_string()).len(), 2);
    assert_eq!(h.recorder.accepted().len(), 1);
}

#[tokio::test]
async fn a_leased_row_waits_for_its_lease_to_expire() {
    let h = harness().await;
    let id = h.commit(&[reset_mail("ada@example.test")]).await[0];
    // As if a relay claimed the row and then died mid-batch.
    sqlx::query("UPDATE outbox SET lease_until = now() + interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let relay = h.relay(fast_config());
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert!(h.recorder.calls().is_empty());

    sqlx::query("UPDATE outbox SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(relay.run_once().await.unwrap(), 1);
    assert!(h.row(id).await.delivered_at.is_some());
    assert_eq!(h.recorder.calls_for(&id.to_string()).len(), 1);
}

#[tokio::test]
async fn run_delivers_until_shutdown() {
    let h = harness().await;
    let relay = h.relay(fast_config());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));

    let id = h.commit(&[reset_mail("ada@example.test")]).await[0];
    eventually("the running relay to deliver", || async {
        h.row(id).await.delivered_at.is_some()
    })
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("relay did not stop after shutdown")
        .unwrap();

    // Stopped means stopped: later rows wait for the next relay.
    h.commit(&[reset_mail("bob@example.test")]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pending_count(&h.db.pool).await.unwrap(), 1);
    assert_eq!(h.recorder.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_schema_tolerates_replicas_starting_together() {
    let db = TestDb::empty().await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                ensure_schema(&mut conn).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(pending_count(&db.pool).await.unwrap(), 0);
}
