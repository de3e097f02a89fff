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
    /// first) within the deadline it is given and returns its items and the next token (empty
    /// after the last). One budget covers all the pages, not one each.
    pub async fn all_pages<T, F, Fut>(
        &self,
        deadline: Option<RequestDeadline>,
        mut page: F,
    ) -> Result<Vec<T>, PeerError>
    where
        F: FnMut(String, Option<RequestDeadline>) -> Fut,
        Fut: Future<Output = Result<(Vec<T>, String), PeerError>>,
    {
        let deadline = Some(RequestDeadline(Instant::now() + self.budget(deadline)));
        let mut items = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let (mut found, next) = page(std::mem::take(&mut token), deadline).await?;
            items.append(&mut found);
            if next.is_empty() {
                return Ok(items);
            }
            token = next;
        }
        Err(PeerError::incomplete(self.service, "a last page"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use cqrs_auth::StaticToken;
    use tonic::{Code, Response, Status};

    use super::*;

    fn caller(timeout: Duration) -> Caller {
        Caller::new("directory", Arc::new(StaticToken("tok".into())), timeout)
    }

    /// An RPC that is unavailable for its first `failures` calls, then answers `7`.
    async fn flaky(calls: &AtomicU32, failures: u32) -> Result<Response<u32>, Status> {
        if calls.fetch_add(1, Ordering::SeqCst) < failures {
            Err(Status::unavailable("connection refused"))
        } else {
            Ok(Response::new(7))
        }
    }

    #[tokio::test]
    async fn safe_calls_are_retried_while_the_peer_is_unavailable() {
        let calls = AtomicU32::new(0);
        let answer = caller(Duration::from_secs(5))
            .call(None, Retry::Safe, (), |_| flaky(&calls, 2))
            .await
            .unwrap();
        assert_eq!(answer, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_calls_and_callers_without_retries_try_once() {
        for (caller, retry) in [
            (caller(Duration::from_secs(5)), Retry::Never),
            (
                caller(Duration::from_secs(5)).without_retries(),
                Retry::Safe,
            ),
        ] {
            let calls = AtomicU32::new(0);
            let err = caller
                .call(None, retry, (), |_| flaky(&calls, 1))
                .await
                .unwrap_err();
            assert!(err.is_unavailable(), "{err}");
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn refusals_are_never_retried_and_keep_their_reason() {
        let calls = AtomicU32::new(0);
        let err = caller(Duration::from_secs(5))
            .call(None, Retry::Safe, (), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Response<()>, _>(Status::permission_denied("no")) }
            })
            .await
            .unwrap_err();
        assert!(err.is(Code::PermissionDenied));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_within_the_budget() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let err = caller(Duration::from_millis(300))
            .call(None, Retry::Safe, (), |_| flaky(&calls, u32::MAX))
            .await
            .unwrap_err();
        assert!(err.is_unavailable());
        assert!(calls.load(Ordering::SeqCst) > 1);
        assert!(started.elapsed() < Duration::from_millis(300) + Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_call_past_its_budget_is_deadline_exceeded() {
        let err = caller(Duration::from_millis(50))
            .without_retries()
            .call(None, Retry::Safe, (), |_| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Response::new(()))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                PeerError::Unavailable {
                    code: Code::DeadlineExceeded,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn requests_carry_the_token_and_the_remaining_deadline() {
        let caller = caller(Duration::from_secs(5));
        // The caller's own deadline is sooner than the timeout: it bounds the call.
        let deadline = Some(RequestDeadline(Instant::now() + Duration::from_secs(1)));
        let seen = std::sync::Mutex::new(None);
        caller
            .call(deadline, Retry::Safe, (), |request: tonic::Request<()>| {
                let metadata = request.metadata();
                let bearer = metadata.get("authorization").map(|v| v.is_sensitive());
                let auth = metadata
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let timeout = metadata
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                *seen.lock().unwrap() = Some((auth, bearer, timeout));
                async { Ok(Response::new(())) }
            })
            .await
            .unwrap();
        let (auth, sensitive, timeout) = seen.lock().unwrap().take().unwrap();
        assert_eq!(auth.as_deref(), Some("Bearer tok"));
        assert_eq!(sensitive, Some(true));
        // grpc-timeout is at most the second left (e.g. "999845u").
        let timeout = timeout.unwrap();
        let (value, unit) = timeout.split_at(timeout.len() - 1);
        let micros = match unit {
            "u" => value.parse::<u64>().unwrap(),
            "m" => value.parse::<u64>().unwrap() * 1000,
            "n" => value.parse::<u64>().unwrap() / 1000,
            other => panic!("unexpected grpc-timeout unit {other}"),
        };
        assert!(micros <= 1_000_000, "{timeout}");
        assert!(caller.budget(deadline) <= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn lists_are_followed_to_their_last_page_and_bounded() {
        let caller = caller(Duration::from_secs(5));
        let deadlines = std::sync::Mutex::new(Vec::new());
        let items = caller
            .all_pages(None, |token, deadline| {
                deadlines.lock().unwrap().push(deadline.map(|d| d.0));
                async move {
                    Ok(match token.as_str() {
                        "" => (vec![1, 2], "a".to_owned()),
                        "a" => (vec![3], "b".to_owned()),
                        _ => (vec![4], String::new()),
                    })
                }
            })
            .await
            .unwrap();
        assert_eq!(items, [1, 2, 3, 4]);
        // One deadline for every page.
        let deadlines = deadlines.into_inner().unwrap();
        assert_eq!(deadlines.len(), 3);
        assert!(deadlines[0].is_some() && deadlines.iter().all(|d| *d == deadlines[0]));
        let err = caller
            .all_pages(None, |_, _| async { Ok((vec![0], "again".to_owned())) })
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::Incomplete { .. }), "{err:?}");
    }
}
