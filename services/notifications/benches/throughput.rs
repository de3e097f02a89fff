//! `make bench`: how many mails per second EnqueueEmail accepts and the worker delivers to a
//! real SMTP sink, next to a bare tonic echo RPC measured in the same run on the same
//! machine. Ratios, not absolute numbers, are what compare across machines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_notifications::{NotificationsConfig, Store};
use cqrs_proto::notifications::v1::{
    EmailTemplate, EnqueueEmailRequest, notification_service_client::NotificationServiceClient,
};
use cqrs_runtime::config::{Env, ServerConfig};
use cqrs_testkit::{SmtpSink, TestDb, TestKeys, echo, spawn, with_token};

const CONCURRENCY: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(5);

/// Runs `call` from CONCURRENCY tasks for RUN_FOR; returns completed calls per second.
async fn rate<F, Fut>(call: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (call, done, next) = (call.clone(), done.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < RUN_FOR {
                call(next.fetch_add(1, Ordering::Relaxed)).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let echo_server = echo::spawn().await;
    let echo_client = echo_server.client();
    let echo_rate = rate(move |n| {
        let mut client = echo_client.clone();
        async move {
            client
                .echo(echo::EchoRequest {
                    message: format!("ping-{n}"),
                })
                .await
                .unwrap();
        }
    })
    .await;

    let db = TestDb::new(&cqrs_notifications::MIGRATOR).await;
    let smtp = SmtpSink::start().await;
    let keys = TestKeys::generate();
    let (verify, smtp_url) = (keys.verify_env_value(), smtp.url());
    let env = Env::from_pairs(&[
        ("CQRS_TOKEN_VERIFY_KEYS", &verify),
        ("CQRS_SMTP_URL", &smtp_url),
        ("NOTIFICATIONS_BATCH_SIZE", "100"),
        ("NOTIFICATIONS_SEND_CONCURRENCY", "16"),
        ("NOTIFICATIONS_POLL_INTERVAL_MS", "10"),
    ]);
    let config = NotificationsConfig::from_env(&env).unwrap();
    let store = Store::new(db.pool.clone());
    let server = spawn(cqrs_notifications::server(
        ServerConfig::from_env(&env, "notifications", 0).unwrap(),
        store.clone(),
        std::sync::Arc::new(cqrs_runtime::clock::SystemClock),
    ))
    .await;
    let client = NotificationServiceClient::new(server.channel.clone());
    let token = keys.service_token("bench");
    let enqueue_rate = rate(move |n| {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            let request = EnqueueEmailRequest {
                idempotency_key: format!("bench-{n}"),
                template: EmailTemplate::PasswordReset as i32,
                to: format!("user{n}@nhs.net"),
                params: HashMap::from([
                    ("first_name".to_owned(), "Ann".to_owned()),
                    ("token".to_owned(), format!("token-{n}")),
                ]),
                account_id: String::new(),
            };
            client
                .enqueue_email(with_token(request, &token))
                .await
                .unwrap();
        }
    })
    .await;

    let (accepted,): (i64,) = sqlx::query_as("SELECT count(*) FROM emails")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let accepted = usize::try_from(accepted).unwrap();
    let start = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for _ in 0..2 {
        let worker = cqrs_notifications::worker(
            &config,
            store.clone(),
            std::sync::Arc::new(cqrs_runtime::clock::SystemClock),
        )
        .unwrap();
        let mut stopped = stopped.clone();
        tokio::spawn(worker.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    smtp.wait_for(accepted, Duration::from_secs(600)).await;
    let deliver_rate = accepted as f64 / start.elapsed().as_secs_f64();
    let _ = stop.send(true);

    println!(
        "notifications benchmark ({CONCURRENCY} concurrent callers, {}s per phase)",
        RUN_FOR.as_secs()
    );
    println!("  bare tonic echo RPC        {echo_rate:>10.0} calls/s   (baseline)");
    println!(
        "  EnqueueEmail accepted      {enqueue_rate:>10.0} mails/s   ratio {:.3}",
        enqueue_rate / echo_rate
    );
    println!(
        "  delivered to SMTP sink     {deliver_rate:>10.0} mails/s   ratio {:.3}  ({accepted} mails, 2 workers)",
        deliver_rate / echo_rate
    );
}
