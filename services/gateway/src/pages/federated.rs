//! "Sign in with NHSmail": the gateway only sends the browser to the provider and back;
//! identity runs the OpenID Connect exchange and decides who, if anyone, is signed in.
//!
//! The start is a link (a GET): the page's `form-action 'self'` would stop a form from
//! leaving for the provider. The `state` identity makes is kept in this browser's web
//! session, and the callback must bring that one back, so a sign-in started elsewhere cannot
//! be finished here (login CSRF).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use cqrs_proto::identity::v1 as id_pb;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tonic_types::StatusExt;

use super::sign_in::{sign_in_page, signed_in_user};
use super::{Failure, FormErrors, reason_text, see_other};
use crate::session::{PendingSignIn, Session};
use crate::state::AppState;

pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    Router::new()
        .route(&at("/sign-in/sso/callback"), get(callback))
        .route(&at("/sign-in/sso/{provider}"), get(start))
}

pub async fn start(
    State(state): State<AppState>,
    session: Session,
    Path(provider): Path<String>,
) -> Result<Response, Failure> {
    let answer = state
        .identity()
        .start_federated_sign_in(state.request(
            id_pb::StartFederatedSignInRequest {
                provider_id: provider,
            },
            None,
        ))
        .await;
    match answer {
        Ok(answer) => {
            let started = answer.into_inner();
            session.update(|s| s.pending_sso = Some(started.state));
            Ok(Redirect::to(&started.authorization_url).into_response())
        }
        Err(status) => {
            let errors = FormErrors::from_status(&status, &[])?;
            Ok(sign_in_page(&state, &session, String::new(), errors).await)
        }
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
    /// Set instead of `code` when the provider did not sign the person in.
    #[serde(default)]
    error: Option<String>,
}

const NOT_COMPLETED: &str = "The sign-in with NHSmail did not complete. Try again, or sign in \
                             with your User ID and password.";

pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, Failure> {
    let expected = session.get().pending_sso.unwrap_or_default();
    session.update(|s| s.pending_sso = None);
    let ours =
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(query.state.as_bytes()));
    if !ours || query.error.is_some() || query.code.is_empty() {
        let errors = FormErrors::summary(NOT_COMPLETED);
        return Ok(sign_in_page(&state, &session, String::new(), errors).await);
    }
    let answer = state
        .identity()
        .complete_federated_sign_in(state.request(
            id_pb::CompleteFederatedSignInRequest {
                state: query.state,
                code: query.code,
            },
            None,
        ))
        .await;
    let signed = match answer {
        Ok(answer) => answer.into_inner().sign_in.unwrap_or_default(),
        Err(status) => {
            let reason = status
                .get_details_error_info()
                .map(|info| info.reason)
                .unwrap_or_default();
            let message = match reason.as_str() {
                "NO_MATCHING_ACCOUNT" => reason_text("NO_MATCHING_ACCOUNT").to_owned(),
                "FEDERATED_SIGN_IN_FAILED" => NOT_COMPLETED.to_owned(),
                _ => {
                    FormErrors::from_status(&status, &[])?;
                    NOT_COMPLETED.to_owned()
                }
            };
            let errors = FormErrors::summary(message);
            return Ok(sign_in_page(&state, &session, String::new(), errors).await);
        }
    };
    if signed.second_factor_required {
        let pending = PendingSignIn {
            challenge_token: signed.challenge_token,
        };
        session.update(|s| s.pending_sign_in = Some(pending));
        return Ok(see_other(&state, "sign-in/code"));
    }
    let user = signed_in_user(&state, signed).await?;
    session.sign_in(user);
    Ok(see_other(&state, ""))
}
