//! End-to-end journeys across all four services (the list, one module each). Every
//! journey starts its own suite and drives it only through the public gRPC APIs, as a gateway
//! or cqrsctl would, asserting on the answers, on state visible through the APIs, on the mails
//! the SMTP sink captured and on the services' audit trails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_request;
mod bootstrap_to_administrator;
mod cross_organisation;
mod disable_enable;
mod lockout_reset;
mod mail_preferences;
mod replicas;
mod revoke;
mod self_registration;

use std::future::Future;
use std::time::Duration;

use cqrs_suite::{AuditRecord, CapturedMail, Suite};

/// The token of the mail's only link, after checking the link opens `path` under the public
/// base URL.
#[track_caller]
pub fn assert_link(mail: &CapturedMail, path: &str) -> String {
    let links = mail.links();
    assert_eq!(links.len(), 1, "one link: {mail:#?}");
    let link = &links[0];
    let expected = format!("{}{path}", Suite::BASE_URL);
    assert_eq!(
        format!(
            "{}://{}{}",
            link.scheme(),
            link.host_str().unwrap_or_default(),
            link.path()
        ),
        expected,
        "{mail:#?}"
    );
    let token = mail.link_token().expect("the link carries a token");
    assert!(token.len() >= 43, "a 256-bit token: {token}");
    token
}

/// Whether `s` is a NATIONAL User ID (three letters, three digits).
pub fn is_user_id(s: &str) -> bool {
    s.len() == 6
        && s[..3].bytes().all(|b| b.is_ascii_uppercase())
        && s[3..].bytes().all(|b| b.is_ascii_digit())
}

/// The actions of `events`, in order.
pub fn audit_actions(events: &[AuditRecord]) -> Vec<&str> {
    events.iter().map(|e| e.action.as_str()).collect()
}

/// Polls `probe` until it answers `Some` (every 50 ms, for at most 20 s).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One line per event (`action outcome actor_kind:actor_id details`), for failure messages.
pub fn summary(events: &[AuditRecord]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}:{} {:?}",
                e.action, e.outcome, e.actor_kind, e.actor_id, e.details
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
