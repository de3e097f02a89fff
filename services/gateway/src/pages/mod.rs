//! The pages. Each handler reads the session, calls the services with the person's token and
//! renders a template; what every page shares lives here: the page chrome (header, menu, role
//! switcher), the posted-form extractor with its CSRF check, the signed-in guard, and how a
//! service's refusal becomes words next to the right field.

mod account;
mod admin;
mod desk;
mod federated;
mod inbox;
mod links;
mod register;
pub mod second_factor;
mod sign_in;
mod time;

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cqrs_proto::common::v1::Role;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_rules::roles::{Permission, Role as RulesRole, role_grants};
use http::StatusCode;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::session::{Session, SignedInUser};

/// The `ErrorInfo.reason` the services' auth layer gives a stale second-factor check
/// (`cqrs_auth::STEP_UP_REQUIRED`; the gateway verifies no tokens, so it does not link that
/// crate).
const STEP_UP_REQUIRED: &str = "STEP_UP_REQUIRED";
/// The `ErrorInfo.reason` of every refused credential (`cqrs_auth::AUTHENTICATION_REQUIRED`).
const AUTHENTICATION_REQUIRED: &str = "AUTHENTICATION_REQUIRED";
use crate::state::AppState;

/// Every page, under `base` (the public prefix without its trailing slash, empty for the root).
pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    let mut router = Router::new()
        .route(&at("/"), get(account::home))
        .route(&at("/sign-in"), get(sign_in::show).post(sign_in::submit))
        .route(&at("/sign-out"), post(sign_in::sign_out))
        .route(&at("/role"), post(sign_in::switch_role))
        .route(
            &at("/password/forgotten"),
            get(sign_in::show_forgotten_password).post(sign_in::forgotten_password),
        )
        .route(
            &at("/user-id/forgotten"),
            get(sign_in::show_forgotten_user_id).post(sign_in::forgotten_user_id),
        )
        .route(
            &at("/register/complete"),
            get(links::show_registration).post(links::complete_registration),
        )
        .route(
            &at("/password/reset"),
            get(links::show_reset).post(links::reset_password),
        )
        .route(
            &at("/invitation"),
            get(links::show_invitation).post(links::accept_invitation),
        )
        .route(&at("/profile"), get(account::profile))
        .route(&at("/profile/password"), post(account::change_password))
        .route(&at("/static/gateway.css"), get(stylesheet));
    if !base.is_empty() {
        router = router.route(base, get(account::home));
    }
    router
        .merge(second_factor::routes(base))
        .merge(federated::routes(base))
        .merge(register::routes(base))
        .merge(inbox::routes(base))
        .merge(admin::routes(base))
        .merge(desk::routes(base))
}

async fn stylesheet() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/gateway.css"),
    )
        .into_response()
}

/// What the header and menu of every page show.
#[derive(Clone, Debug, Default)]
pub struct Chrome {
    /// Path prefix of every link, e.g. `/portal` (empty for the root).
    pub base: String,
    pub csrf: String,
    pub user: Option<UserChrome>,
    pub notice: Option<String>,
}

#[derive(Clone, Debug)]
pub struct UserChrome {
    pub name: String,
    pub roles: Vec<RoleOption>,
    pub active: Option<String>,
    pub menu: Vec<MenuItem>,
    /// Unread notifications, shown by the Notifications menu item when more than none; `None`
    /// on pages that do not ask (see [`Chrome::with_unread`]).
    pub unread: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct RoleOption {
    pub value: usize,
    pub label: String,
    pub selected: bool,
}

#[derive(Clone, Debug)]
pub struct MenuItem {
    pub href: String,
    pub label: &'static str,
}

impl Chrome {
    pub fn new(state: &AppState, session: &Session) -> Chrome {
        let base = base_of(state);
        let csrf = session.csrf();
        let notice = session.take_notice();
        let user = session.get().user.map(|user| {
            let menu = menu(&base, &user);
            UserChrome {
                name: user.display_name(),
                roles: user
                    .grants
                    .iter()
                    .enumerate()
                    .map(|(i, g)| RoleOption {
                        value: i,
                        label: grant_label(g.role, &g.organisation_name),
                        selected: user.active == Some(i),
                    })
                    .collect(),
                active: user
                    .active_grant()
                    .map(|g| grant_label(g.role, &g.organisation_name)),
                menu,
                unread: None,
            }
        });
        Chrome {
            base,
            csrf,
            user,
            notice,
        }
    }

    /// The same chrome showing `unread` notifications in the header.
    pub fn with_unread(mut self, unread: Option<i64>) -> Chrome {
        if let Some(user) = &mut self.user {
            user.unread = unread;
        }
        self
    }
}

/// The pages the active role can use; a page not offered is refused by the services anyway.
fn menu(base: &str, user: &SignedInUser) -> Vec<MenuItem> {
    let item = |page: &str, label| MenuItem {
        href: format!("{base}{page}"),
        label,
    };
    let mut menu = vec![item("/", "Home"), item("/notifications", "Notifications")];
    let role = user.active_grant().and_then(|g| rules_role(g.role));
    let may = |permission| role.is_some_and(|role| role_grants(role, permission));
    if may(Permission::ViewScope)
        || may(Permission::ViewPracticeUsers)
        || may(Permission::InviteUsers)
    {
        menu.push(item("/users", "Users"));
    }
    if may(Permission::ViewScope) {
        menu.push(item("/users/providers", "Providers"));
    }
    if role == Some(RulesRole::ServiceDesk) {
        menu.push(item("/desk", "Service desk"));
    }
    menu.push(item("/profile", "My profile"));
    menu
}

/// The rules' role for a `cqrs.common.v1.Role` number (the proto numbers the roles in the
/// rules' order, from 1).
pub fn rules_role(proto: i32) -> Option<RulesRole> {
    usize::try_from(proto)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| RulesRole::ALL.get(i).copied())
}

/// "Practice Manager, Bridge Street Surgery".
pub fn grant_label(role: i32, organisation: &str) -> String {
    format!("{}, {organisation}", role_name(role))
}

pub fn role_name(role: i32) -> &'static str {
    match Role::try_from(role).unwrap_or(Role::Unspecified) {
        Role::ServiceDesk => "Service Desk",
        Role::CommissioningAccountAdministrator => "Commissioning Account Administrator",
        Role::CommissioningApprover => "Commissioning Approver",
        Role::CommissioningUser => "Commissioning User",
        Role::CommissioningFinance => "Commissioning Finance",
        Role::PracticeManager => "Practice Manager",
        Role::PracticeUser => "Practice User",
        Role::Unspecified => "No role",
    }
}

/// Renders a template as a page.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page did not render");
            Failure::Internal.into_response()
        }
    }
}

/// 303 to a page under the public prefix.
pub fn see_other(state: &AppState, page: &str) -> Response {
    Redirect::to(&state.path(page)).into_response()
}

/// Messages for a form: one for the whole form and any per field.
#[derive(Clone, Debug, Default)]
pub struct FormErrors {
    pub summary: Option<String>,
    pub fields: BTreeMap<String, Vec<String>>,
}

impl FormErrors {
    pub fn summary(message: impl Into<String>) -> FormErrors {
        FormErrors {
            summary: Some(message.into()),
            fields: BTreeMap::new(),
        }
    }

    pub fn field(mut self, field: &str, message: impl Into<String>) -> FormErrors {
        self.fields
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.summary.is_none() && self.fields.is_empty()
    }

    /// The messages of one field (for the template).
    pub fn of(&self, field: &str) -> Vec<String> {
        self.fields.get(field).cloned().unwrap_or_default()
    }

    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// Words for a refusal of a form whose fields are named `labels` (the service's field
    /// name → the form's field and its label). A failure that is not about the form (the
    /// service is down, the session ended) is returned as such.
    pub fn from_status(
        status: &Status,
        labels: &[(&str, &str, &str)],
    ) -> Result<FormErrors, Failure> {
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default();
        match status.code() {
            Code::InvalidArgument => {
                let mut errors = FormErrors::default();
                if let Some(bad) = status.get_details_bad_request() {
                    for violation in bad.field_violations {
                        let (field, label) = labels
                            .iter()
                            .find(|(service_field, _, _)| *service_field == violation.field)
                            .map_or(("", ""), |(_, field, label)| (*field, *label));
                        let text = violation_text(&violation.reason, &violation.description);
                        if field.is_empty() {
                            errors.summary = Some(sentence("", &text));
                        } else {
                            errors = errors.field(field, sentence(label, &text));
                        }
                    }
                }
                if errors.is_empty() {
                    errors.summary = Some(reason_text(&reason).to_owned());
                }
                Ok(errors)
            }
            Code::Unauthenticated
                if matches!(
                    reason.as_str(),
                    "SESSION_ENDED" | AUTHENTICATION_REQUIRED | ""
                ) =>
            {
                Err(Failure::SignedOut)
            }
            Code::PermissionDenied if reason == STEP_UP_REQUIRED => Err(Failure::StepUp),
            Code::Unavailable | Code::DeadlineExceeded => Err(Failure::Unavailable),
            Code::Internal | Code::Unknown | Code::DataLoss => Err(Failure::Internal),
            _ => Ok(FormErrors::summary(reason_text(&reason))),
        }
    }
}

/// The human part of a violation: the services put the rule, which is also the violation's
/// `reason`, before the words (`TOO_SHORT: must be at least 8 characters`).
fn violation_text(reason: &str, description: &str) -> String {
    description
        .strip_prefix(reason)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(description)
        .to_owned()
}

/// "Password must be at least 8 characters." from the field's label and a rule's words; words
/// that are a sentence of their own ("the password was changed too recently…") stand alone.
fn sentence(label: &str, text: &str) -> String {
    let text = text.trim_end_matches('.');
    let predicate = ["must ", "may ", "can ", "is "]
        .iter()
        .any(|verb| text.starts_with(verb));
    if !label.is_empty() && predicate {
        return format!("{label} {text}.");
    }
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect::<String>() + ".")
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_roles_map_onto_the_rules_roles() {
        assert_eq!(
            rules_role(Role::ServiceDesk as i32),
            Some(RulesRole::ServiceDesk)
        );
        assert_eq!(
            rules_role(Role::PracticeUser as i32),
            Some(RulesRole::PracticeUser)
        );
        assert_eq!(
            rules_role(Role::CommissioningApprover as i32),
            Some(RulesRole::CommissioningApprover)
        );
        assert_eq!(rules_role(0), None);
        assert_eq!(rules_role(8), None);
    }

    #[test]
    fn violations_read_as_sentences_without_codes() {
        assert_eq!(
            sentence(
                "Password",
                &violation_text("TOO_SHORT", "TOO_SHORT: must be at least 8 characters")
            ),
            "Password must be at least 8 characters."
        );
        assert_eq!(
            sentence(
                "Password",
                &violation_text(
                    "CHANGED_TOO_RECENTLY",
                    "CHANGED_TOO_RECENTLY: the password was changed too recently"
                )
            ),
            "The password was changed too recently."
        );
        assert_eq!(sentence("", "is required"), "Is required.");
        assert_eq!(
            violation_text("INVALID_VALUE", "Not: a code"),
            "Not: a code"
        );
    }
}

/// Words for a refusal's reason. Unknown reasons get a general sentence: nothing technical
/// is shown.
pub fn reason_text(reason: &str) -> &'static str {
    match reason {
        "INVALID_CREDENTIALS" | "ACCOUNT_LOCKED" | "ACCOUNT_DISABLED" => {
            "The User ID or password is not right, or the account cannot be used. After several \
             wrong attempts an account is locked for a while, and we e-mail its owner to say \
             so; if it stays locked, contact the service desk to have it unlocked."
        }
        "LINK_INVALID" => {
            "This link cannot be used: it has expired, has been used already, or is not \
             complete. Ask for a new one."
        }
        "PASSWORD_CHANGED_TOO_RECENTLY" | "CHANGED_TOO_RECENTLY" => {
            "Your password was changed too recently to change it again yet."
        }
        "WRONG_PASSWORD" | "CURRENT_PASSWORD_WRONG" => "The current password is not right.",
        "SESSION_ENDED" => "Your session has ended. Please sign in again.",
        "RESOURCE_EXHAUSTED" | "OVERLOADED" | "PASSWORD_CHECKS_BUSY" => {
            "The service is busy. Please try again in a moment."
        }
        "RATE_LIMITED" => {
            "There have been too many requests from here or for this address. Please wait a \
             while (up to an hour) and try again."
        }
        "NO_ACTIVE_GRANT" => "Choose a role first (at the top of the page).",
        "INVALID_CODE" => {
            "The code is not right. Type the code your authenticator app shows now (a code \
             works once), or use one of your recovery codes. After several wrong attempts the \
             account is locked."
        }
        "SIGN_IN_CHALLENGE_ENDED" => "Your sign-in took too long. Please sign in again.",
        "SECOND_FACTOR_REQUIRED" => {
            "This role needs an authenticator app. Add one from My profile, then choose the \
             role again."
        }
        "SECOND_FACTOR_EXISTS" => "Your account already has an authenticator app.",
        "NO_SECOND_FACTOR" => "This account has no authenticator app.",
        "NO_MATCHING_ACCOUNT" => {
            "No CQRS account can be used with this NHSmail address. Ask your commissioner for \
             an account with your NHSmail address."
        }
        _ => "That could not be done. Please check the details and try again.",
    }
}

/// A page that replaces the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The form's CSRF token or origin did not match.
    StaleForm,
    /// A signed-in page without a (live) session.
    SignedOut,
    /// A page this person's role may not use.
    Forbidden,
    /// A role of the person needs an authenticator app they have not added yet.
    EnrolFirst,
    /// An administrative action needs a recent authenticator code; the step-up layer asks
    /// for one and repeats the action ([`second_factor::step_up_layer`]).
    StepUp,
    Unavailable,
    Internal,
}

#[derive(Template)]
#[template(path = "failure.html")]
struct FailurePage {
    chrome: Chrome,
    title: &'static str,
    message: &'static str,
    correlation: Option<String>,
}

/// An empty answer that names the failure; the security layer, which knows where the pages
/// live, turns it into the page ([`failure_page`]).
impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl Failure {
    fn status(self) -> StatusCode {
        match self {
            Failure::StaleForm | Failure::Forbidden | Failure::StepUp => StatusCode::FORBIDDEN,
            Failure::SignedOut | Failure::EnrolFirst => StatusCode::SEE_OTHER,
            Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The page for a failure: sign-in for a missing session, otherwise words and what to do.
pub fn failure_page(state: &AppState, failure: Failure) -> Response {
    let (title, message) = match failure {
        Failure::SignedOut => {
            return (
                StatusCode::SEE_OTHER,
                [(http::header::LOCATION, state.path("sign-in"))],
            )
                .into_response();
        }
        Failure::EnrolFirst => {
            return (
                StatusCode::SEE_OTHER,
                [(http::header::LOCATION, state.path("profile/authenticator"))],
            )
                .into_response();
        }
        // Reached only where the step-up layer does not run (it answers every page's).
        Failure::StepUp => (
            "Confirm it is you",
            "This action needs a recent code from your authenticator app. Go back and try \
             again.",
        ),
        Failure::StaleForm => (
            "This form has expired",
            "The form was open too long or came from another site. Go back, reload the page \
             and try again.",
        ),
        Failure::Forbidden => (
            "You cannot use this page",
            "Your current role does not give access to this page. Choose another role at the \
             top of the page, or ask your administrator.",
        ),
        Failure::Unavailable => (
            "The service is not available",
            "Please try again in a few minutes.",
        ),
        Failure::Internal => (
            "Something went wrong",
            "Please try again. If it keeps happening, contact the service desk and quote the \
             reference below.",
        ),
    };
    let correlation = (failure == Failure::Internal).then(|| uuid::Uuid::new_v4().to_string());
    if let Some(id) = &correlation {
        tracing::error!(correlation = %id, "internal failure shown to a person");
    }
    let page = FailurePage {
        chrome: Chrome {
            base: base_of(state),
            ..Chrome::default()
        },
        title,
        message,
        correlation,
    };
    let body = page.render().unwrap_or_else(|_| title.to_owned());
    (failure.status(), Html(body)).into_response()
}

fn base_of(state: &AppState) -> String {
    state
        .config
        .public_url
        .prefix
        .trim_end_matches('/')
        .to_owned()
}

/// The request's [`Session`], put there by the session layer.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(Failure::Internal)
    }
}

/// A form that carries the session's CSRF token.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A posted form whose CSRF token matched the session's (the origin was checked before, by
/// the security layer).
pub struct Posted<T>(pub T);

impl<T> FromRequest<AppState> for Posted<T>
where
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let session = request
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| Failure::Internal.into_response())?;
        let axum::Form(form) = axum::Form::<T>::from_request(request, state)
            .await
            .map_err(|_| Failure::StaleForm.into_response())?;
        let expected = session.get().csrf;
        let matches =
            !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(form.csrf().as_bytes()));
        if matches {
            Ok(Posted(form))
        } else {
            Err(Failure::StaleForm.into_response())
        }
    }
}

/// The signed-in person, with an access token good for the next calls (refreshed from the
/// identity session when near its expiry). A session that ended in identity (sign-out,
/// disable, lock, reset, revocation) ends the web session here.
pub struct SignedIn {
    pub user: SignedInUser,
    pub session: Session,
}

impl SignedIn {
    /// The signed-in person, sent to add an authenticator app first when a role of theirs
    /// needs one.
    pub async fn require(state: &AppState, session: &Session) -> Result<SignedIn, Failure> {
        let signed_in = Self::require_enrolling(state, session).await?;
        if signed_in.user.enrolment_required {
            return Err(Failure::EnrolFirst);
        }
        Ok(signed_in)
    }

    /// The signed-in person, whether or not an authenticator app is still due (for the pages
    /// that add one).
    pub async fn require_enrolling(
        state: &AppState,
        session: &Session,
    ) -> Result<SignedIn, Failure> {
        let Some(mut user) = session.get().user else {
            return Err(Failure::SignedOut);
        };
        let now = state.clock.now().timestamp();
        if user.access_expires - now < 30 {
            let refreshed = state
                .identity()
                .refresh_access_token(state.request(
                    id_pb::RefreshAccessTokenRequest {
                        session_token: user.session_token.clone(),
                    },
                    None,
                ))
                .await;
            match refreshed {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    user.access_token = answer.access_token;
                    user.access_expires = answer.expires_at.map_or(now, |t| t.seconds);
                    let saved = user.clone();
                    session.update(|s| s.user = Some(saved));
                }
                Err(status) => return Err(ended(session, &status)),
            }
        }
        Ok(SignedIn {
            user,
            session: session.clone(),
        })
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.user.access_token)
    }

    /// What a refused call means for the page: a session that ended ends the web session.
    pub fn failure(&self, status: &Status) -> Failure {
        ended(&self.session, status)
    }
}

fn ended(session: &Session, status: &Status) -> Failure {
    match status.code() {
        Code::Unauthenticated => {
            session.end();
            Failure::SignedOut
        }
        Code::PermissionDenied
            if status
                .get_details_error_info()
                .is_some_and(|info| info.reason == STEP_UP_REQUIRED) =>
        {
            Failure::StepUp
        }
        Code::PermissionDenied => Failure::Forbidden,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
            Failure::Unavailable
        }
        _ => Failure::Internal,
    }
}
