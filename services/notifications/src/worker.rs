//! The delivery worker: claims due mails, renders them and hands them to SMTP.
//!
//! Several workers (in one process or across replicas) run side by side: a claim is a
//! lease taken with `FOR UPDATE SKIP LOCKED`, so each mail is in one worker's hands at a
//! time. A failed attempt is retried with exponential backoff; after the configured number
//! of attempts the mail is dead-lettered and stays visible through `ListDeliveries`.
//!
//! The lease outlasts the worst case of the batch it covers (every send bounded by the SMTP
//! timeout, `concurrency` at a time: [`WorkerConfig::worst_batch`]), a send is not started
//! when the lease could run out before it ends, and a result is recorded only under the lease
//! it was claimed with: a worker whose lease was lost cannot clear another's lease or
//! dead-letter a mail another worker delivered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cqrs_runtime::clock::Clock;
use cqrs_runtime::metrics::{self, Gauge, KeyValue};
use futures::StreamExt;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use url::Url;

use crate::domain::{AfterFailure, RetryPolicy};
use crate::store::{DeliveryRow, Store, StoreError};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub batch_size: i64,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub retry: RetryPolicy,
}

/// Time allowed for recording one attempt's result after its send.
const RECORD_MARGIN: Duration = Duration::from_secs(5);

impl WorkerConfig {
    /// The longest one batch of `batch_size` can take, `concurrency` sends at a time, when
    /// every send takes `send_limit`: the shortest lease that keeps each claimed mail in its
    /// worker's hands until its result is recorded.
    pub fn worst_batch(batch_size: i64, concurrency: usize, send_limit: Duration) -> Duration {
        let batch = u32::try_from(batch_size.max(1)).unwrap_or(u32::MAX);
        let concurrency = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
        (send_limit + RECORD_MARGIN).saturating_mul(batch.div_ceil(concurrency))
    }
}

/// Sends rendered mail over SMTP.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The whole of one send, waiting for a pooled connection included.
    send_limit: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("CQRS_SMTP_URL: {0}")]
    SmtpUrl(String),
    #[error("CQRS_MAIL_FROM: {0}")]
    From(String),
}

impl Mailer {
    /// `smtp_url` as lettre reads it: `smtp://host:port` (plain), `smtp://host?tls=required`,
    /// or `smtps://host` (implicit TLS), with optional `user:password@`.
    /// `connections` bounds the pooled SMTP connections; sends beyond it wait for one.
    pub fn new(
        smtp_url: &str,
        from: &str,
        timeout: Duration,
        connections: u32,
    ) -> Result<Self, MailerError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| MailerError::SmtpUrl(e.to_string()))?
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(connections.max(1)))
            .build();
        let from = from.parse().map_err(|_| {
            MailerError::From("must be a mailbox such as \"CQRS <no-reply@example.org>\"".into())
        })?;
        Ok(Mailer {
            transport,
            from,
            send_limit: timeout,
        })
    }

    async fn send(&self, to: &str, mail: &crate::domain::RenderedMail) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| "recipient is not a valid mailbox".to_owned())?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| format!("could not build message: {e}"))?;
        match tokio::time::timeout(self.send_limit, self.transport.send(message)).await {
            Ok(sent) => sent.map(|_| ()).map_err(|e| format!("smtp: {e}")),
            Err(_) => Err(format!("smtp: no answer within {:?}", self.send_limit)),
        }
    }
}

pub struct Worker {
    store: Store,
    mailer: Mailer,
    base_url: Url,
    config: WorkerConfig,
    clock: Arc<dyn Clock>,
}

impl Worker {
    /// A worker over `store`, sending with `mailer`; what is due, and when a failed mail is
    /// retried, is judged by `clock`.
    pub fn new(
        store: Store,
        mailer: Mailer,
        base_url: Url,
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Worker {
            store,
            mailer,
            base_url,
            config,
            clock,
        }
    }

    /// Claims one batch and attempts every mail in it. Returns how many were attempted.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim_due(self.clock.now(), self.config.lease, self.config.batch_size)
            .await?;
        let count = claimed.len();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(claimed)
            .map(|row| self.attempt(row))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        results
            .into_iter()
            .collect::<Result<Vec<()>, StoreError>>()?;
        Ok(count)
    }

    async fn attempt(&self, row: DeliveryRow) -> Result<(), StoreError> {
        // A send that could outlast the lease could be a second one: another worker may claim
        // the mail once the lease is over. Left for the next claim instead.
        let latest_start = row.lease_until.map(|until| {
            until
                - chrono::Duration::from_std(self.mailer.send_limit)
                    .unwrap_or(chrono::Duration::MAX)
        });
        if latest_start.is_some_and(|latest| self.clock.now() > latest) {
            tracing::warn!(delivery_id = %row.id, "lease too short for another send; left for the next claim");
            return Ok(());
        }
        let outcome = match row.template() {
            Some(template) => {
                let mail = template.render(&row.params.0, &self.base_url);
                self.mailer.send(&row.recipient, &mail).await
            }
            None => Err(format!("unknown template {}", row.template)),
        };
        let now = self.clock.now();
        match outcome {
            Ok(()) => {
                tracing::info!(delivery_id = %row.id, template = %row.template, attempts = row.attempts, "mail delivered");
                let recorded = self.store.mark_delivered(&row, now).await?;
                lease_lost(&row, recorded);
                Ok(())
            }
            Err(error) => {
                let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
                let retry_at = match self.config.retry.after_failure(attempts, now) {
                    AfterFailure::RetryAt(at) => Some(at),
                    AfterFailure::DeadLetter => None,
                };
                if retry_at.is_none() {
                    tracing::error!(delivery_id = %row.id, attempts, %error, "mail dead-lettered");
                } else {
                    tracing::warn!(delivery_id = %row.id, attempts, %error, "mail delivery failed; will retry");
                }
                let recorded = self.store.mark_failed(&row, &error, retry_at, now).await?;
                lease_lost(&row, recorded);
                Ok(())
            }
        }
    }

    /// Records the mail queue by state (`notifications.emails`).
    async fn sample_queue(&self) {
        match self.store.count_by_state().await {
            Ok(counts) => {
                let gauge = queue_gauge();
                for (state, n) in counts {
                    // Counts are far below f64's exact range.
                    gauge.record(n as f64, &[KeyValue::new("state", state)]);
                }
            }
            Err(e) => tracing::debug!(error = %e, "mail queue not sampled"),
        }
    }

    /// Works until `shutdown` resolves. A store outage is logged and waited out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut sampled: Option<std::time::Instant> = None;
        loop {
            if sampled.is_none_or(|at| at.elapsed() >= QUEUE_SAMPLE_EVERY) {
                sampled = Some(std::time::Instant::now());
                self.sample_queue().await;
            }
            let idle = match self.run_once().await {
                Ok(0) => true,
                Ok(_) => false,
                Err(err) => {
                    tracing::warn!(error = %err, "delivery worker could not reach the database");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            } else if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
                return;
            }
        }
    }
}

/// Says so when an attempt's result was not recorded because its lease was lost.
fn lease_lost(row: &DeliveryRow, recorded: bool) {
    if !recorded {
        tracing::warn!(delivery_id = %row.id, "lease lost before the result was recorded; the worker holding it now decides");
    }
}

/// How often a worker samples the mail queue for the metrics.
const QUEUE_SAMPLE_EVERY: Duration = Duration::from_secs(10);

fn queue_gauge() -> &'static Gauge<f64> {
    static GAUGE: std::sync::OnceLock<Gauge<f64>> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| {
        metrics::gauge(
            "notifications.emails",
            "Mails by delivery state (PENDING is the queue still to send)",
        )
    })
}
