//! Authenticator apps: the code step of sign-in, adding an app from My profile (and being
//! led there when a role needs one), and step-up — an administrative action that needs a
//! recent code asks for one, then repeats itself.
//!
//! Step-up without script: the step-up layer keeps the body of every posted form while the
//! page runs. When the page answers [`Failure::StepUp`], the layer shows a code form that
//! carries the original fields as hidden inputs and posts to `step-up?then=<page>`. That
//! handler checks the code with identity (VerifySecondFactor, which keeps the fresh token on
//! the web session) and answers `307 Temporary Redirect` to the page, so the browser posts the
//! same fields there again — now with a token the services let through.

use askama::Template;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cqrs_proto::identity::v1 as id_pb;
use http::{Method, StatusCode, header};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tonic_types::StatusExt;

use super::sign_in::{select, signed_in_user};
use super::{Chrome, CsrfForm, Failure, FormErrors, Posted, SignedIn, render, see_other};
use crate::session::{PendingEnrolment, Session};
use crate::state::AppState;

pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    Router::new()
        .route(&at("/sign-in/code"), get(show_code).post(submit_code))
        .route(
            &at("/profile/authenticator"),
            get(show_enrolment).post(confirm_enrolment),
        )
        .route(&at("/step-up"), post(step_up))
}

/// The fields of a code form: the app's code, or a recovery code instead.
#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
}

impl CsrfForm for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Words for a refused code, by the field it came in.
fn code_errors(status: &tonic::Status) -> Result<FormErrors, Failure> {
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default();
    if reason == "INVALID_CODE" {
        return Ok(FormErrors::default().field("code", super::reason_text("INVALID_CODE")));
    }
    FormErrors::from_status(
        status,
        &[
            ("code", "code", "Code"),
            ("recovery_code", "recovery_code", "Recovery code"),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// The code step of sign-in.
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "sign_in_code.html")]
struct CodePage {
    chrome: Chrome,
    errors: FormErrors,
}

pub async fn show_code(State(state): State<AppState>, session: Session) -> Response {
    if session.get().pending_sign_in.is_none() {
        return see_other(&state, "sign-in");
    }
    render(&CodePage {
        chrome: Chrome::new(&state, &session),
        errors: FormErrors::default(),
    })
}

pub async fn submit_code(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<CodeForm>,
) -> Result<Response, Failure> {
    let Some(pending) = session.get().pending_sign_in else {
        return Ok(see_other(&state, "sign-in"));
    };
    let used_recovery_code = form.code.trim().is_empty() && !form.recovery_code.trim().is_empty();
    let answer = state
        .identity()
        .complete_sign_in(state.request(
            id_pb::CompleteSignInRequest {
                challenge_token: pending.challenge_token,
                code: form.code,
                recovery_code: form.recovery_code,
            },
            None,
        ))
        .await;
    match answer {
        Ok(answer) => {
            let done = answer.into_inner();
            let left = done.recovery_codes_left;
            let user = signed_in_user(&state, done.into()).await?;
            session.sign_in(user);
            if used_recovery_code {
                session.update(|s| {
                    s.notice = Some(format!(
                        "You signed in with a recovery code. You have {left} left: each works once."
                    ));
                });
            }
            Ok(see_other(&state, ""))
        }
        Err(status) => {
            let ended = status
                .get_details_error_info()
                .is_some_and(|info| info.reason == "SIGN_IN_CHALLENGE_ENDED");
            if ended {
                session.update(|s| {
                    s.pending_sign_in = None;
                    s.notice = Some(super::reason_text("SIGN_IN_CHALLENGE_ENDED").to_owned());
                });
                return Ok(see_other(&state, "sign-in"));
            }
            Ok(render(&CodePage {
                chrome: Chrome::new(&state, &session),
                errors: code_errors(&status)?,
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adding an authenticator app (My profile).
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "authenticator.html")]
struct EnrolmentPage {
    chrome: Chrome,
    /// The QR code of the otpauth URI, as inline SVG markup made here.
    qr_svg: String,
    secret: String,
    required: bool,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "authenticator_done.html")]
struct EnrolledPage {
    chrome: Chrome,
    /// Shown this once.
    recovery_codes: Vec<String>,
}

#[derive(Template)]
#[template(path = "authenticator_present.html")]
struct PresentPage {
    chrome: Chrome,
}

/// The QR code of `text` as SVG, without the XML declaration so it can sit in the page.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].to_owned())
}

async fn enrolment_page(
    state: &AppState,
    signed_in: &SignedIn,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let pending = match signed_in.session.get().pending_enrolment {
        Some(pending) => pending,
        None => {
            let answer = state
                .identity()
                .start_totp_enrolment(
                    state.request(id_pb::StartTotpEnrolmentRequest {}, signed_in.token()),
                )
                .await;
            let started = match answer {
                Ok(answer) => answer.into_inner(),
                Err(status)
                    if status
                        .get_details_error_info()
                        .is_some_and(|info| info.reason == "SECOND_FACTOR_EXISTS") =>
                {
                    return Ok(render(&PresentPage {
                        chrome: Chrome::new(state, &signed_in.session),
                    }));
                }
                Err(status) => return Err(signed_in.failure(&status)),
            };
            let pending = PendingEnrolment {
                otpauth_uri: started.otpauth_uri,
                secret: started.secret,
            };
            let kept = pending.clone();
            signed_in
                .session
                .update(|s| s.pending_enrolment = Some(kept));
            pending
        }
    };
    let qr_svg = qr_svg(&pending.otpauth_uri).ok_or(Failure::Internal)?;
    Ok(render(&EnrolmentPage {
        chrome: Chrome::new(state, &signed_in.session),
        qr_svg,
        secret: spaced(&pending.secret),
        required: signed_in.user.enrolment_required,
        errors,
    }))
}

/// A base32 secret in groups of four, as people type it.
fn spaced(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn show_enrolment(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require_enrolling(&state, &session).await?;
    enrolment_page(&state, &signed_in, FormErrors::default()).await
}

pub async fn confirm_enrolment(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<CodeForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require_enrolling(&state, &session).await?;
    if form.code.trim().is_empty() {
        let errors = FormErrors::default().field("code", "Enter the code your app shows.");
        return enrolment_page(&state, &signed_in, errors).await;
    }
    let answer = state
        .identity()
        .confirm_totp_enrolment(state.request(
            id_pb::ConfirmTotpEnrolmentRequest { code: form.code },
            signed_in.token(),
        ))
        .await;
    let confirmed = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            let errors = code_errors(&status)?;
            return enrolment_page(&state, &signed_in, errors).await;
        }
    };
    let mut user = signed_in.user;
    user.access_token = confirmed.access_token;
    user.access_expires = confirmed.expires_at.map_or(0, |t| t.seconds);
    user.enrolment_required = false;
    if user.grants.len() == 1 && user.active.is_none() {
        select(&state, &mut user, 0).await?;
    }
    session.update(|s| {
        s.pending_enrolment = None;
        s.user = Some(user);
    });
    Ok(render(&EnrolledPage {
        chrome: Chrome::new(&state, &session),
        recovery_codes: confirmed.recovery_codes,
    }))
}

// ---------------------------------------------------------------------------------------------
// Step-up.
// ---------------------------------------------------------------------------------------------

/// Longest form body kept for a repeat; the suite's forms are far smaller.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Template)]
#[template(path = "step_up.html")]
struct StepUpPage {
    chrome: Chrome,
    /// Where the action is repeated (a page path under the prefix).
    then: String,
    /// The original form's fields, posted again with the code.
    fields: Vec<(String, String)>,
    errors: FormErrors,
}

/// Keeps a posted form's body while the page runs, and answers [`Failure::StepUp`] with the
/// code form that repeats it.
pub async fn step_up_layer(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_form = request.method() == Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let path = request.uri().path().to_owned();
    let session = request.extensions().get::<Session>().cloned();
    let (request, body) = if is_form {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return Failure::StaleForm.into_response();
        };
        (Request::from_parts(parts, Body::from(bytes.clone())), bytes)
    } else {
        (request, Bytes::new())
    };
    let response = next.run(request).await;
    if response.extensions().get::<Failure>() != Some(&Failure::StepUp) {
        return response;
    }
    let Some(session) = session else {
        return response;
    };
    let fields = form_fields(&body);
    render(&StepUpPage {
        chrome: Chrome::new(&state, &session),
        then: path,
        fields,
        errors: FormErrors::default(),
    })
}

/// A form body's fields, without the code fields the step-up form adds itself.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .into_owned()
        .filter(|(name, _)| name != "code" && name != "recovery_code")
        .collect()
}

#[derive(Deserialize)]
pub struct StepUpQuery {
    #[serde(default)]
    then: String,
}

/// Checks the code, keeps the fresh token, and sends the browser to post the original form
/// again (307 keeps the method and the body).
pub async fn step_up(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<StepUpQuery>,
    body: Bytes,
) -> Result<Response, Failure> {
    let base = state.path("");
    let then = query.then;
    let safe = then.starts_with(base.as_str())
        && !then.contains("//")
        && !then.contains('\\')
        && !then.ends_with("/step-up");
    if !safe {
        return Err(Failure::StaleForm);
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let expected = session.get().csrf;
    let csrf = field("csrf");
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(csrf.as_bytes())) {
        return Err(Failure::StaleForm);
    }
    let signed_in = SignedIn::require(&state, &session).await?;
    let answer = state
        .identity()
        .verify_second_factor(state.request(
            id_pb::VerifySecondFactorRequest {
                code: field("code"),
                recovery_code: field("recovery_code"),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => {
            let fresh = answer.into_inner();
            let mut user = signed_in.user;
            user.access_token = fresh.access_token;
            user.access_expires = fresh.expires_at.map_or(0, |t| t.seconds);
            session.update(|s| s.user = Some(user));
            Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, then)]).into_response())
        }
        Err(status) => {
            if status.code() == tonic::Code::Unauthenticated
                && status
                    .get_details_error_info()
                    .is_none_or(|info| info.reason != "INVALID_CODE")
            {
                return Err(signed_in.failure(&status));
            }
            Ok(render(&StepUpPage {
                chrome: Chrome::new(&state, &session),
                then,
                fields: form_fields(&body),
                errors: code_errors(&status)?,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_repeat_keeps_every_field_but_the_code() {
        let fields = form_fields(b"csrf=t&decision=reject&reason=Not+here%21&code=123456");
        assert_eq!(
            fields,
            vec![
                ("csrf".to_owned(), "t".to_owned()),
                ("decision".to_owned(), "reject".to_owned()),
                ("reason".to_owned(), "Not here!".to_owned()),
            ]
        );
    }

    #[test]
    fn secrets_are_shown_in_groups_and_as_a_qr_code() {
        assert_eq!(spaced("GEZDGNBVGY"), "GEZD GNBV GY");
        let svg = qr_svg("otpauth://totp/CQRS:JSM482?secret=GEZDGNBV&issuer=CQRS").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            !svg.contains("style="),
            "the page's CSP allows no inline style"
        );
    }
}
