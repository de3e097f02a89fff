//! One call to a peer: token, deadline, trace context, and retries only where safe.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{AuthError, TokenSource};
use cqrs_rules::backoff::Backoff;
use cqrs_runtime::server::RequestDeadline;
use rand::Rng;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;

use crate::PeerError;

/// Pages followed at most: the bound only keeps a misbehaving peer from looping a request.
const MAX_PAGES: usize = 20;
/// The schedule of retries within one call's budget.
const RETRY: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_millis(500));

/// Whether a call may be repeated after the peer was unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Idempotent calls: reads, creates keyed on a request id, and calls whose repeat
    /// changes nothing more (ending sessions already ended).
    Safe,
    /// Anything else: the first attempt may have taken effect.
    Never,
}

/// How calls to one service are made; cheap to clone.
#[derive(Clone)]
pub struct Caller {
    service: &'static str,
    tokens: Arc<dyn TokenSource>,
    timeout: Duration,
    retries: bool,
}

impl Caller {
    /// Calls to `service` (its name in errors and logs) with tokens from `tokens`, each
    /// bounded by `timeout`.
    pub fn new(service: &'static str, tokens: Arc<dyn TokenSource>, timeout: Duration) -> Self {
        Caller {
            service,
            tokens,
            timeout,
            retries: true,
        }
    }

    /// Calls that never retry on their own: for callers with a durable retry schedule of
    /// their own (the outbox relay, the session ender), where a retry inside the call would
    /// only hold the row, and for interactive paths that answer without the peer when it is
    /// down (identity's sign-in), where it would only add the whole timeout to every answer.
    pub fn without_retries(mut self) -> Self {
        self.retries = false;
        self
    }

    /// The time a call may take: the timeout, or less when the caller's deadline is sooner.
    pub fn budget(&self, deadline: Option<RequestDeadline>) -> Duration {
        deadline.map_or(self.timeout, |d| d.remaining().min(self.timeout))
    }

    /// The instant by which an operation of several calls (the pages of a list) must be
    /// done: one budget for all of them, not one each.
    pub fn deadline(&self, deadline: Option<RequestDeadline>) -> Option<RequestDeadline> {
        Some(RequestDeadline(Instant::now() + self.budget(deadline)))
    }

    /// `message` with a service token, a timeout and the trace context.
    async fn request<T>(
        &self,
        message: T,
        timeout: Duration,
    ) -> Result<tonic::Request<T>, PeerError> {
        let token = self.tokens.token().await.map_err(PeerError::Token)?;
        let mut bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| PeerError::Token(AuthError::MissingCredentials))?;
        // Kept out of debug output and header tables' indexing.
        bearer.set_sensitive(true);
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request.metadata_mut().insert("authorization", bearer);
        cqrs_runtime::telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }

    /// Sends `message` through `rpc` (a method of a generated client) within the budget,
    /// retrying while the peer is unavailable if `retry` allows it.
    pub async fn call<T, U, F, Fut>(
        &self,
        deadline: Option<RequestDeadline>,
        retry: Retry,
        message: T,
        mut rpc: F,
    ) -> Result<U, PeerError>
    where
        T: Clone,
        F: FnMut(tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<U>, tonic::Status>>,
    {
        let budget = self.budget(deadline);
        let end = Instant::now() + budget;
        let mut failures = 0u32;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let attempt = async {
                let request = self.request(message.clone(), left).await?;
                rpc(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| PeerError::from_status(self.service, &s))
            };
            let result = match tokio::time::timeout(left, attempt).await {
                Ok(result) => result,
                Err(_) => Err(PeerError::Unavailable {
                    service: self.service,
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer within {budget:?}"),
                }),
            };
            match result {
                Err(e) if self.retries && retry == Retry::Safe && e.is_unavailable() => {
                    failures += 1;
                    let wait = RETRY.jittered(failures, rand::rng().random::<f64>());
                    if Instant::now() + wait >= end {
                        return Err(e);
                    }
                    tracing::debug!(service = self.service, error = %e, "peer unavailable; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Every item of a paged list: `page` fetches one page from a page token (empty for the
    /// first) and returns its items and the next token (empty after the last). Callers give
    /// every page the same [`Caller::deadline`].
    pub async fn all_pages<T, F, Fut>(&self, mut page: F) -> Result<Vec<T>, PeerError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<(Vec<T>, String), PeerError>>,
    {
        let mut items = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let (mut found, next) = page(std::mem::take(&mut token)).await?;
            items.append(&mut found);
            if next.is_empty() {
                return Ok(items);
            }
            token = next;
        }
        Err(PeerError::incomplete(self.service, "a last page"))
    }
}
