//! Sign in (seed 004's sign-in page: User ID for National, e-mail for Local), sign out, the
//! role switcher in the header, and the forgotten password / User ID forms (seeds 000, 002).

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use cqrs_proto::identity::v1 as id_pb;
use serde::Deserialize;

use super::{Chrome, CsrfForm, Failure, FormErrors, Posted, SignedIn, render, see_other};
use crate::session::{GrantChoice, PendingSignIn, Session, SignedInUser};
use crate::state::{AppState, Provider};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    /// "Sign in with …" buttons, above the User ID form (as the seeds show).
    providers: Vec<Provider>,
    login: String,
    errors: FormErrors,
    signed_out: bool,
}

/// The sign-in page with `login` typed and `errors` shown.
pub(super) async fn sign_in_page(
    state: &AppState,
    session: &Session,
    login: String,
    errors: FormErrors,
) -> Response {
    render(&SignInPage {
        chrome: Chrome::new(state, session),
        providers: state.providers().await,
        login,
        errors,
        signed_out: false,
    })
}

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    #[serde(default)]
    signed_out: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<SignInQuery>,
) -> Response {
    if session.get().user.is_some() {
        return see_other(&state, "");
    }
    render(&SignInPage {
        chrome: Chrome::new(&state, &session),
        providers: state.providers().await,
        login: String::new(),
        errors: FormErrors::default(),
        signed_out: query.signed_out.is_some(),
    })
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
}

impl CsrfForm for SignInForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<SignInForm>,
) -> Result<Response, Failure> {
    let login = form.login.trim().to_owned();
    let mut errors = FormErrors::default();
    if login.is_empty() {
        errors = errors.field("login", "Enter your User ID or e-mail address.");
    }
    if form.password.is_empty() {
        errors = errors.field("password", "Enter your password.");
    }
    if errors.is_empty() {
        let answer = state
            .identity()
            .sign_in(state.request(
                id_pb::SignInRequest {
                    login: login.clone(),
                    password: form.password,
                },
                None,
            ))
            .await;
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.second_factor_required {
                    let pending = PendingSignIn {
                        challenge_token: answer.challenge_token,
                    };
                    session.update(|s| s.pending_sign_in = Some(pending));
                    return Ok(see_other(&state, "sign-in/code"));
                }
                let user = signed_in_user(&state, answer).await?;
                session.sign_in(user);
                return Ok(see_other(&state, ""));
            }
            Err(status) => {
                errors = FormErrors::from_status(
                    &status,
                    &[
                        ("login", "login", "User ID"),
                        ("password", "password", "Password"),
                    ],
                )?;
            }
        }
    }
    Ok(sign_in_page(&state, &session, login, errors).await)
}

/// The web session's view of a SignIn answer; a person with exactly one grant acts through it
/// at once (unless an authenticator app must be added first).
pub(super) async fn signed_in_user(
    state: &AppState,
    answer: id_pb::SignInResponse,
) -> Result<SignedInUser, Failure> {
    let account = answer.account.unwrap_or_default();
    let mut user = SignedInUser {
        session_token: answer.session_token,
        access_token: answer.access_token,
        access_expires: answer.expires_at.map_or(0, |t| t.seconds),
        account_id: account.id,
        user_id: account.user_id,
        email: account.email,
        first_name: account.first_name,
        last_name: account.last_name,
        grants: answer
            .grants
            .into_iter()
            .map(|g| GrantChoice {
                organisation_id: g.organisation_id,
                organisation_name: g.organisation_name,
                ods_code: g.ods_code,
                role: g.role,
            })
            .collect(),
        active: None,
        enrolment_required: answer.second_factor_enrolment_required,
    };
    if user.grants.len() == 1 && !user.enrolment_required {
        select(state, &mut user, 0).await?;
    }
    Ok(user)
}

/// Selects grant `index` in identity and keeps the new access token.
pub(super) async fn select(
    state: &AppState,
    user: &mut SignedInUser,
    index: usize,
) -> Result<(), Failure> {
    let grant = user.grants.get(index).ok_or(Failure::StaleForm)?.clone();
    let answer = state
        .identity()
        .select_role(state.request(
            id_pb::SelectRoleRequest {
                organisation_id: grant.organisation_id,
                role: grant.role,
            },
            Some(&user.access_token),
        ))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Failure::Unavailable,
            tonic::Code::Unauthenticated => Failure::SignedOut,
            tonic::Code::FailedPrecondition => Failure::EnrolFirst,
            // A grant revoked since sign-in: the switcher offers it no more after sign-in.
            _ => Failure::Forbidden,
        })?
        .into_inner();
    user.access_token = answer.access_token;
    user.access_expires = answer.expires_at.map_or(0, |t| t.seconds);
    user.active = Some(index);
    Ok(())
}

#[derive(Deserialize)]
pub struct RoleForm {
    csrf: String,
    /// Unset when the placeholder "Choose a role" was left selected.
    #[serde(default)]
    grant: Option<usize>,
}

impl CsrfForm for RoleForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn switch_role(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<RoleForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let Some(grant) = form.grant else {
        session.update(|s| s.notice = Some("Choose a role from the list first.".into()));
        return Ok(see_other(&state, ""));
    };
    let mut user = signed_in.user;
    if let Err(failure) = select(&state, &mut user, grant).await {
        if failure == Failure::SignedOut {
            session.end();
        }
        return Err(failure);
    }
    session.update(|s| s.user = Some(user));
    Ok(see_other(&state, ""))
}

#[derive(Deserialize)]
pub struct PlainForm {
    csrf: String,
}

impl CsrfForm for PlainForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    Posted(_form): Posted<PlainForm>,
) -> Response {
    if let Some(user) = session.get().user {
        // The web session ends whatever identity answers; a session identity could not end
        // now runs out on its own idle expiry.
        if let Err(status) = state
            .identity()
            .sign_out(state.request(id_pb::SignOutRequest {}, Some(&user.access_token)))
            .await
        {
            tracing::info!(code = ?status.code(), "identity did not end a session at sign-out");
        }
    }
    session.end();
    see_other(&state, "sign-in?signed_out=1")
}

#[derive(Template)]
#[template(path = "forgotten.html")]
struct ForgottenPage {
    chrome: Chrome,
    /// "password" or "user-id".
    kind: &'static str,
    value: String,
    errors: FormErrors,
    sent: bool,
}

pub async fn show_forgotten_password(State(state): State<AppState>, session: Session) -> Response {
    forgotten_page(
        &state,
        &session,
        "password",
        String::new(),
        FormErrors::default(),
        false,
    )
}

pub async fn show_forgotten_user_id(State(state): State<AppState>, session: Session) -> Response {
    forgotten_page(
        &state,
        &session,
        "user-id",
        String::new(),
        FormErrors::default(),
        false,
    )
}

fn forgotten_page(
    state: &AppState,
    session: &Session,
    kind: &'static str,
    value: String,
    errors: FormErrors,
    sent: bool,
) -> Response {
    render(&ForgottenPage {
        chrome: Chrome::new(state, session),
        kind,
        value,
        errors,
        sent,
    })
}

#[derive(Deserialize)]
pub struct ForgottenForm {
    csrf: String,
    #[serde(default)]
    value: String,
}

impl CsrfForm for ForgottenForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Identity answers the same whether or not the account exists, and takes the same time; so
/// does this page.
pub async fn forgotten_password(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<ForgottenForm>,
) -> Result<Response, Failure> {
    let value = form.value.trim().to_owned();
    let answer = state
        .identity()
        .request_password_reset(state.request(
            id_pb::RequestPasswordResetRequest {
                login: value.clone(),
            },
            None,
        ))
        .await;
    forgotten_answer(
        &state,
        &session,
        "password",
        value,
        answer.map(drop),
        "login",
    )
}

pub async fn forgotten_user_id(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<ForgottenForm>,
) -> Result<Response, Failure> {
    let value = form.value.trim().to_owned();
    let answer = state
        .identity()
        .remind_user_id(state.request(
            id_pb::RemindUserIdRequest {
                email: value.clone(),
            },
            None,
        ))
        .await;
    forgotten_answer(
        &state,
        &session,
        "user-id",
        value,
        answer.map(drop),
        "email",
    )
}

fn forgotten_answer(
    state: &AppState,
    session: &Session,
    kind: &'static str,
    value: String,
    answer: Result<(), tonic::Status>,
    service_field: &str,
) -> Result<Response, Failure> {
    let label = if kind == "password" {
        "User ID or e-mail address"
    } else {
        "E-mail address"
    };
    match answer {
        Ok(()) => Ok(forgotten_page(
            state,
            session,
            kind,
            String::new(),
            FormErrors::default(),
            true,
        )),
        Err(status) => {
            let errors = FormErrors::from_status(&status, &[(service_field, "value", label)])?;
            Ok(forgotten_page(state, session, kind, value, errors, false))
        }
    }
}
