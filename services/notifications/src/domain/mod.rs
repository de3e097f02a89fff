//! Pure rules of the notification service: what a valid request is, what a mail looks like,
//! when to retry. No I/O here; the clock is passed in.

pub mod templates;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_rules::FieldViolations;
use cqrs_rules::backoff::Backoff;
use cqrs_rules::email::normalise_email;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use templates::{RenderedMail, Template};

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
pub const MAX_PARAM_NAME_LEN: usize = 64;
pub const MAX_PARAM_VALUE_LEN: usize = 4096;
pub const MAX_NOTIFY_ACCOUNTS: usize = 1000;
pub const MAX_KIND_LEN: usize = 64;
/// NotifyRequest.subject_id: a record id (a UUID is 36).
pub const MAX_SUBJECT_LEN: usize = 64;
pub const MAX_TITLE_LEN: usize = 200;
pub const MAX_BODY_LEN: usize = 4000;

/// Delivery states as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    DeadLetter,
    Suppressed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::Delivered => "DELIVERED",
            DeliveryState::DeadLetter => "DEAD_LETTER",
            DeliveryState::Suppressed => "SUPPRESSED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "PENDING" => Some(DeliveryState::Pending),
            "DELIVERED" => Some(DeliveryState::Delivered),
            "DEAD_LETTER" => Some(DeliveryState::DeadLetter),
            "SUPPRESSED" => Some(DeliveryState::Suppressed),
            _ => None,
        }
    }
}

/// An `EnqueueEmail` request that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEmail {
    pub idempotency_key: String,
    pub template: Template,
    pub to: String,
    pub params: BTreeMap<String, String>,
    pub account_id: Option<Uuid>,
}

impl NewEmail {
    /// Validates every field and reports every problem at once.
    pub fn validate(
        idempotency_key: &str,
        template: Option<Template>,
        to: &str,
        params: BTreeMap<String, String>,
        account_id: &str,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        check_idempotency_key(&mut violations, "idempotency_key", idempotency_key, true);

        if template.is_none() {
            violations.add("template", "must be a known EmailTemplate");
        }

        let to = normalise_email(to)
            .map_err(|problem| violations.add("to", problem.to_string()))
            .ok();

        let account_id = violations.optional_uuid("account_id", account_id);

        for (name, value) in &params {
            let field = format!("params[{name}]");
            if name.is_empty() || name.chars().count() > MAX_PARAM_NAME_LEN {
                violations.add(&field, "parameter names must be 1 to 64 characters");
            } else if let Some(template) = template
                && !template.accepts_param(name)
            {
                violations.add(&field, "is not a parameter of this template");
            }
            if value.chars().count() > MAX_PARAM_VALUE_LEN {
                violations.add(&field, "must be at most 4096 characters");
            }
            if value.chars().any(|c| c.is_control() && c != '\n') {
                violations.add(&field, "must not contain control characters");
            }
        }
        if let Some(template) = template {
            for name in template.required_params() {
                if params.get(*name).is_none_or(|v| v.trim().is_empty()) {
                    violations.add(format!("params[{name}]"), "is required by this template");
                }
            }
        }

        violations.into_result()?;
        match (template, to) {
            (Some(template), Some(to)) => Ok(NewEmail {
                idempotency_key: idempotency_key.to_owned(),
                template,
                to,
                params,
                account_id,
            }),
            // Unreachable in practice: both are violations above.
            _ => {
                let mut violations = FieldViolations::new();
                violations.add("template", "must be a known EmailTemplate");
                Err(violations)
            }
        }
    }

    /// What makes two requests "the same" for idempotency: every field but the key.
    pub fn content_hash(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(self.template.as_str().as_bytes());
        field(self.to.as_bytes());
        field(
            self.account_id
                .map(|id| id.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        for (name, value) in &self.params {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        hasher.finalize().to_vec()
    }

    /// The state a new mail starts in, given whether its recipient wants workflow mail.
    pub fn initial_state(&self, email_enabled: bool) -> DeliveryState {
        if self.template.is_security() || email_enabled {
            DeliveryState::Pending
        } else {
            DeliveryState::Suppressed
        }
    }

    /// Parameters as stored once the mail has left: secrets removed.
    pub fn scrubbed(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        scrub(params)
    }
}

pub fn scrub(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter(|(name, _)| !templates::SECRET_PARAMS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A `Notify` request that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub account_ids: Vec<Uuid>,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub idempotency_key: Option<String>,
    /// The record the notification is about (empty: none).
    pub subject_id: String,
}

impl NewNotification {
    pub fn validate(
        account_ids: &[String],
        kind: &str,
        title: &str,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        if account_ids.is_empty() {
            violations.add("account_ids", "at least one account is required");
        }
        if account_ids.len() > MAX_NOTIFY_ACCOUNTS {
            violations.add("account_ids", "at most 1000 accounts");
        }
        let mut ids = Vec::with_capacity(account_ids.len());
        for (i, raw) in account_ids.iter().enumerate() {
            match Uuid::parse_str(raw) {
                Ok(id) if !ids.contains(&id) => ids.push(id),
                Ok(_) => violations.add(format!("account_ids[{i}]"), "is listed twice"),
                Err(_) => violations.add(format!("account_ids[{i}]"), "must be a UUID"),
            }
        }
        let kind_ok = !kind.is_empty()
            && kind.len() <= MAX_KIND_LEN
            && kind
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        violations.check(
            kind_ok,
            "kind",
            "must be UPPER_SNAKE_CASE, 1 to 64 characters",
        );
        check_text(&mut violations, "title", title, MAX_TITLE_LEN);
        check_text(&mut violations, "body", body, MAX_BODY_LEN);
        check_idempotency_key(&mut violations, "idempotency_key", idempotency_key, false);
        violations.into_result()?;
        Ok(NewNotification {
            account_ids: ids,
            kind: kind.to_owned(),
            title: title.trim().to_owned(),
            body: body.trim().to_owned(),
            idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_owned()),
            subject_id: String::new(),
        })
    }

    /// The same notification about the record `subject_id` (optional: empty is none).
    pub fn about(mut self, subject_id: &str) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        violations.check(
            subject_id.len() <= MAX_SUBJECT_LEN
                && subject_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "subject_id",
            "must be at most 64 letters, digits or hyphens",
        );
        violations.into_result()?;
        self.subject_id = subject_id.to_owned();
        Ok(self)
    }
}

fn check_text(violations: &mut FieldViolations, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        violations.add(field, "is required");
    } else if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    }
}

fn check_idempotency_key(violations: &mut FieldViolations, field: &str, key: &str, required: bool) {
    if key.is_empty() {
        if required {
            violations.add(field, "is required");
        }
    } else if key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
        violations.add(field, "must be 1 to 128 printable ASCII characters");
    }
}

/// Retry schedule: `base * 2^(attempt-1)`, capped at `max`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

/// What the worker does after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    DeadLetter,
}

impl RetryPolicy {
    /// `attempts` counts the attempt that just failed.
    pub fn after_failure(&self, attempts: u32, now: DateTime<Utc>) -> AfterFailure {
        if attempts >= self.max_attempts {
            return AfterFailure::DeadLetter;
        }
        let delay = Backoff::new(self.base, self.max).delay(attempts);
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        AfterFailure::RetryAt(
            now.checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn reset_params() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("first_name".to_owned(), "Ann".to_owned()),
            ("token".to_owned(), "t0k".to_owned()),
        ])
    }

    fn fields(err: &FieldViolations) -> Vec<String> {
        err.iter().map(|(field, _)| field.to_owned()).collect()
    }

    #[test]
    fn a_valid_request_is_accepted_and_normalised() {
        let email = NewEmail::validate(
            "k1",
            Some(Template::PasswordReset),
            " Ann.Smith@NHS.Net ",
            reset_params(),
            "",
        )
        .unwrap();
        assert_eq!(email.to, "Ann.Smith@nhs.net");
        assert_eq!(email.template, Template::PasswordReset);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = NewEmail::validate("", None, "not an address", BTreeMap::new(), "x").unwrap_err();
        assert_eq!(
            fields(&err),
            vec!["idempotency_key", "template", "to", "account_id"]
        );

        let mut params = reset_params();
        params.remove("token");
        params.insert("extra".into(), "x".into());
        params.insert("first_name".into(), "a".repeat(MAX_PARAM_VALUE_LEN + 1));
        let err = NewEmail::validate("k", Some(Template::PasswordReset), "a@b.cd", params, "")
            .unwrap_err();
        assert_eq!(
            fields(&err),
            vec!["params[extra]", "params[first_name]", "params[token]"]
        );
    }

    #[test]
    fn content_hash_ignores_the_key_but_nothing_else() {
        let a = NewEmail::validate(
            "k1",
            Some(Template::PasswordReset),
            "a@b.cd",
            reset_params(),
            "",
        )
        .unwrap();
        let b = NewEmail {
            idempotency_key: "k2".into(),
            ..a.clone()
        };
        assert_eq!(a.content_hash(), b.content_hash());
        let c = NewEmail {
            to: "c@b.cd".into(),
            ..a.clone()
        };
        assert_ne!(a.content_hash(), c.content_hash());
        let mut params = reset_params();
        params.insert("token".into(), "other".into());
        let d = NewEmail {
            params,
            ..a.clone()
        };
        assert_ne!(a.content_hash(), d.content_hash());
    }

    #[test]
    fn opt_out_suppresses_workflow_mail_only() {
        let mut email = NewEmail::validate(
            "k",
            Some(Template::PasswordReset),
            "a@b.cd",
            reset_params(),
            "",
        )
        .unwrap();
        assert_eq!(email.initial_state(false), DeliveryState::Pending);
        email.template = Template::AccessRequestApproved;
        assert_eq!(email.initial_state(false), DeliveryState::Suppressed);
        assert_eq!(email.initial_state(true), DeliveryState::Pending);
    }

    #[test]
    fn scrubbing_removes_tokens() {
        let scrubbed = scrub(&reset_params());
        assert!(!scrubbed.contains_key("token"));
        assert_eq!(scrubbed.get("first_name").map(String::as_str), Some("Ann"));
    }

    #[test]
    fn retry_backs_off_exponentially_then_dead_letters() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(2),
            max: Duration::from_secs(10),
        };
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let at = |secs| AfterFailure::RetryAt(now + chrono::Duration::seconds(secs));
        assert_eq!(policy.after_failure(1, now), at(2));
        assert_eq!(policy.after_failure(2, now), at(4));
        assert_eq!(policy.after_failure(3, now), at(8));
        assert_eq!(policy.after_failure(4, now), at(10));
        assert_eq!(policy.after_failure(5, now), AfterFailure::DeadLetter);
    }

    #[test]
    fn notifications_validate() {
        let id = Uuid::new_v4().to_string();
        let ok = NewNotification::validate(
            std::slice::from_ref(&id),
            "REGISTRATION_SUBMITTED",
            "t",
            "b",
            "",
        )
        .unwrap();
        assert_eq!(ok.account_ids.len(), 1);
        let err = NewNotification::validate(&[id.clone(), id, "x".into()], "lower", "", "", "")
            .unwrap_err();
        assert_eq!(
            fields(&err),
            vec!["account_ids[1]", "account_ids[2]", "kind", "title", "body"]
        );
        assert!(
            NewNotification::validate(&[], "K", "t", &"b".repeat(MAX_BODY_LEN + 1), "").is_err()
        );
    }

    #[test]
    fn notifications_may_name_their_subject() {
        let id = Uuid::new_v4().to_string();
        let new = || NewNotification::validate(std::slice::from_ref(&id), "K", "t", "b", "");
        assert_eq!(new().unwrap().subject_id, "");
        let subject = Uuid::new_v4().to_string();
        assert_eq!(new().unwrap().about(&subject).unwrap().subject_id, subject);
        assert_eq!(new().unwrap().about("").unwrap().subject_id, "");
        for bad in ["has space", "semi;colon", &"x".repeat(MAX_SUBJECT_LEN + 1)] {
            let err = new().unwrap().about(bad).unwrap_err();
            assert_eq!(fields(&err), vec!["subject_id"], "{bad}");
        }
    }
}
