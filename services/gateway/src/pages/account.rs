//! The signed-in person's own pages: home (the tiles of seed 002's main screen) and
//! "View My Profile" with Change Password (seed 002 §6).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use cqrs_proto::identity::v1 as id_pb;
use serde::Deserialize;

use super::{
    Chrome, CsrfForm, Failure, FormErrors, Posted, SignedIn, grant_label, render, see_other,
};
use crate::session::Session;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    first_name: String,
    roles: Vec<String>,
    active: Option<String>,
}

pub async fn home(State(state): State<AppState>, session: Session) -> Result<Response, Failure> {
    if session.get().user.is_none() {
        return Ok(see_other(&state, "sign-in"));
    }
    let signed_in = SignedIn::require(&state, &session).await?;
    let user = &signed_in.user;
    let unread = super::inbox::unread_count(&state, &signed_in).await?;
    Ok(render(&HomePage {
        chrome: Chrome::new(&state, &session).with_unread(unread),
        first_name: user.first_name.clone(),
        roles: user
            .grants
            .iter()
            .map(|g| grant_label(g.role, &g.organisation_name))
            .collect(),
        active: user
            .active_grant()
            .map(|g| grant_label(g.role, &g.organisation_name)),
    }))
}

#[derive(Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    chrome: Chrome,
    account: AccountView,
    roles: Vec<String>,
    errors: FormErrors,
}

struct AccountView {
    name: String,
    email: String,
    user_id: String,
    realm: &'static str,
    second_factor: bool,
}

async fn profile_page(
    state: &AppState,
    signed_in: &SignedIn,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let account = state
        .identity()
        .get_account(state.request(
            id_pb::GetAccountRequest {
                account_id: signed_in.user.account_id.clone(),
            },
            signed_in.token(),
        ))
        .await
        .map_err(|status| signed_in.failure(&status))?
        .into_inner()
        .account
        .unwrap_or_default();
    let realm = match id_pb::Realm::try_from(account.realm).unwrap_or(id_pb::Realm::Unspecified) {
        id_pb::Realm::National => "CQRS National",
        id_pb::Realm::Local => "CQRS Local",
        id_pb::Realm::Unspecified => "",
    };
    Ok(render(&ProfilePage {
        chrome: Chrome::new(state, &signed_in.session),
        account: AccountView {
            name: format!("{} {}", account.first_name, account.last_name),
            email: account.email,
            user_id: account.user_id,
            realm,
            second_factor: account.second_factor,
        },
        roles: signed_in
            .user
            .grants
            .iter()
            .map(|g| grant_label(g.role, &g.organisation_name))
            .collect(),
        errors,
    }))
}

pub async fn profile(State(state): State<AppState>, session: Session) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    profile_page(&state, &signed_in, FormErrors::default()).await
}

#[derive(Deserialize)]
pub struct ChangePasswordForm {
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

impl CsrfForm for ChangePasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn change_password(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<ChangePasswordForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let mut errors = FormErrors::default();
    if form.current.is_empty() {
        errors = errors.field("current", "Enter your current password.");
    }
    if form.password.is_empty() {
        errors = errors.field("password", "Enter a new password.");
    } else if form.password != form.confirm {
        errors = errors.field("confirm", "The two new passwords are not the same.");
    }
    if !errors.is_empty() {
        return profile_page(&state, &signed_in, errors).await;
    }
    let answer = state
        .identity()
        .change_password(state.request(
            id_pb::ChangePasswordRequest {
                current_password: form.current,
                new_password: form.password,
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(_) => {
            // Identity ends every session of the account with a new password, this one too.
            session.update(|s| {
                s.user = None;
                s.notice =
                    Some("Your password has been changed. Sign in with your new password.".into());
            });
            Ok(see_other(&state, "sign-in"))
        }
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err(signed_in.failure(&status))
        }
        Err(status) => {
            let errors = FormErrors::from_status(
                &status,
                &[
                    ("current_password", "current", "Current password"),
                    ("new_password", "password", "New password"),
                ],
            )?;
            profile_page(&state, &signed_in, errors).await
        }
    }
}
