//! The pages behind every mailed link: complete registration (seed 001's Security Information
//! screen), accept an invitation (seed 002), reset a password (seeds 000, 002).
//!
//! A link's GET consumes nothing, so a mail scanner that fetches it burns nothing: it moves the
//! token from the URL into the web session and redirects to the same page without it (so the
//! token is in no history, log or Referer), and that page shows the form. Only the POST of the
//! form hands the token to the service.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::identity::v1 as id_pb;
use serde::Deserialize;

use super::{
    Chrome, CsrfForm, Failure, FormErrors, Posted, reason_text, render, role_name, see_other,
};
use crate::session::{LinkKind, PendingLink, Session};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct LinkQuery {
    token: Option<String>,
}

/// Longest token kept from a URL; real ones are far shorter.
const MAX_TOKEN_LEN: usize = 512;

/// The link's token moved into the session (then a redirect), or the token the session holds
/// for this kind of link.
fn take_token(
    state: &AppState,
    session: &Session,
    query: LinkQuery,
    kind: LinkKind,
    page: &str,
) -> Result<String, Box<Response>> {
    if let Some(token) = query.token {
        let token = token.trim().to_owned();
        if !token.is_empty() && token.len() <= MAX_TOKEN_LEN {
            session.update(|s| s.link = Some(PendingLink { kind, token }));
        }
        return Err(Box::new(see_other(state, page)));
    }
    match session.get().link {
        Some(link) if link.kind == kind => Ok(link.token),
        _ => Err(Box::new(link_invalid(state, session))),
    }
}

#[derive(Template)]
#[template(path = "link_invalid.html")]
struct LinkInvalidPage {
    chrome: Chrome,
    message: &'static str,
}

fn link_invalid(state: &AppState, session: &Session) -> Response {
    session.update(|s| s.link = None);
    render(&LinkInvalidPage {
        chrome: Chrome::new(state, session),
        message: reason_text("LINK_INVALID"),
    })
}

#[derive(Template)]
#[template(path = "set_password.html")]
struct SetPasswordPage {
    chrome: Chrome,
    title: &'static str,
    intro: &'static str,
    action: &'static str,
    user_id: Option<String>,
    policy: Vec<String>,
    errors: FormErrors,
    button: &'static str,
}

#[derive(Template)]
#[template(path = "done.html")]
struct DonePage {
    chrome: Chrome,
    title: &'static str,
    message: String,
    user_id: Option<String>,
}

impl LinkKind {
    fn purpose(&self) -> id_pb::LinkPurpose {
        match self {
            LinkKind::PasswordReset => id_pb::LinkPurpose::PasswordReset,
            _ => id_pb::LinkPurpose::Registration,
        }
    }
}

/// The password form of a live link: identity reads the link (GetLink uses nothing) for the
/// User ID and the realm's policy, so a used or expired link is told at once, not after the
/// password has been typed.
async fn set_password_page(
    state: &AppState,
    session: &Session,
    kind: &LinkKind,
    token: String,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let answer = state
        .identity()
        .get_link(state.request(
            id_pb::GetLinkRequest {
                token,
                purpose: kind.purpose().into(),
            },
            None,
        ))
        .await;
    let link = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            FormErrors::from_status(&status, &[])?;
            return Ok(link_invalid(state, session));
        }
    };
    let (title, intro, action, button) = match kind {
        LinkKind::PasswordReset => (
            "Reset your password",
            "Choose a new password for your CQRS account.",
            "password/reset",
            "Reset password",
        ),
        _ => (
            "Security information",
            "Please read the password policy, then create your password and confirm it.",
            "register/complete",
            "Complete registration",
        ),
    };
    Ok(render(&SetPasswordPage {
        chrome: Chrome::new(state, session),
        title,
        intro,
        action,
        user_id: (!link.user_id.is_empty()).then_some(link.user_id),
        policy: link.password_policy,
        errors,
        button,
    }))
}

async fn show_link(
    state: AppState,
    session: Session,
    query: LinkQuery,
    kind: LinkKind,
    page: &str,
) -> Result<Response, Failure> {
    match take_token(&state, &session, query, kind.clone(), page) {
        Ok(token) => set_password_page(&state, &session, &kind, token, FormErrors::default()).await,
        Err(response) => Ok(*response),
    }
}

pub async fn show_registration(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<LinkQuery>,
) -> Result<Response, Failure> {
    show_link(
        state,
        session,
        query,
        LinkKind::Registration,
        "register/complete",
    )
    .await
}

pub async fn show_reset(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<LinkQuery>,
) -> Result<Response, Failure> {
    show_link(
        state,
        session,
        query,
        LinkKind::PasswordReset,
        "password/reset",
    )
    .await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

impl CsrfForm for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Checks the confirmation before anything is sent.
fn confirm_errors(form: &PasswordForm) -> FormErrors {
    let mut errors = FormErrors::default();
    if form.password.is_empty() {
        errors = errors.field("password", "Enter a password.");
    } else if form.password != form.confirm {
        errors = errors.field("confirm", "The two passwords are not the same.");
    }
    errors
}

fn pending(session: &Session, kind: &LinkKind) -> Option<String> {
    session
        .get()
        .link
        .filter(|link| &link.kind == kind)
        .map(|link| link.token)
}

/// The link's token for a posted password form, or the page to show instead: no live link of
/// this kind, or the confirmation does not match (checked before anything is sent).
async fn link_for_password(
    state: &AppState,
    session: &Session,
    kind: &LinkKind,
    form: &PasswordForm,
) -> Result<Result<String, Response>, Failure> {
    let Some(token) = pending(session, kind) else {
        return Ok(Err(link_invalid(state, session)));
    };
    let errors = confirm_errors(form);
    if !errors.is_empty() {
        return Ok(Err(
            set_password_page(state, session, kind, token, errors).await?
        ));
    }
    Ok(Ok(token))
}

pub async fn complete_registration(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<PasswordForm>,
) -> Result<Response, Failure> {
    let token = match link_for_password(&state, &session, &LinkKind::Registration, &form).await? {
        Ok(token) => token,
        Err(page) => return Ok(page),
    };
    let answer = state
        .identity()
        .complete_registration(state.request(
            id_pb::CompleteRegistrationRequest {
                token: token.clone(),
                new_password: form.password,
                ..Default::default()
            },
            None,
        ))
        .await;
    match answer {
        Ok(answer) => {
            session.update(|s| s.link = None);
            let account = answer.into_inner().account.unwrap_or_default();
            let user_id = (!account.user_id.is_empty()).then_some(account.user_id);
            let message = match &user_id {
                Some(_) => "Your registration is complete. Sign in with your User ID, shown \
                            below, and the password you have just created."
                    .to_owned(),
                None => "Your registration is complete. Sign in with your e-mail address and \
                         the password you have just created."
                    .to_owned(),
            };
            Ok(render(&DonePage {
                chrome: Chrome::new(&state, &session),
                title: "Registration complete",
                message,
                user_id,
            }))
        }
        Err(status) => {
            link_refusal(&state, &session, &status, &LinkKind::Registration, token).await
        }
    }
}

pub async fn reset_password(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<PasswordForm>,
) -> Result<Response, Failure> {
    let token = match link_for_password(&state, &session, &LinkKind::PasswordReset, &form).await? {
        Ok(token) => token,
        Err(page) => return Ok(page),
    };
    let answer = state
        .identity()
        .reset_password(state.request(
            id_pb::ResetPasswordRequest {
                token: token.clone(),
                new_password: form.password,
            },
            None,
        ))
        .await;
    match answer {
        Ok(_) => {
            session.update(|s| s.link = None);
            Ok(render(&DonePage {
                chrome: Chrome::new(&state, &session),
                title: "Password reset",
                message: "Your password has been changed. Sign in with your new password."
                    .to_owned(),
                user_id: None,
            }))
        }
        Err(status) => {
            link_refusal(&state, &session, &status, &LinkKind::PasswordReset, token).await
        }
    }
}

/// A refused link form: a dead link gets the link page, anything else the form again with
/// the reasons by their fields.
async fn link_refusal(
    state: &AppState,
    session: &Session,
    status: &tonic::Status,
    kind: &LinkKind,
    token: String,
) -> Result<Response, Failure> {
    let errors = FormErrors::from_status(
        status,
        &[("new_password", "password", "Password"), ("token", "", "")],
    )?;
    if is_link_invalid(status) {
        return Ok(link_invalid(state, session));
    }
    set_password_page(state, session, kind, token, errors).await
}

fn is_link_invalid(status: &tonic::Status) -> bool {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .is_some_and(|info| info.reason == "LINK_INVALID")
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    email: String,
    organisation: String,
    role: &'static str,
    first_name: String,
    last_name: String,
    errors: FormErrors,
}

pub async fn show_invitation(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<LinkQuery>,
) -> Result<Response, Failure> {
    let token = match take_token(&state, &session, query, LinkKind::Invitation, "invitation") {
        Ok(token) => token,
        Err(response) => return Ok(*response),
    };
    invitation_page(&state, &session, token, None, FormErrors::default()).await
}

/// The invitation's details (GetInvitation reads, it does not accept), with the names as
/// typed when the form comes back.
async fn invitation_page(
    state: &AppState,
    session: &Session,
    token: String,
    names: Option<(String, String)>,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let answer = state
        .access()
        .get_invitation(state.request(access_pb::GetInvitationRequest { token }, None))
        .await;
    let invitation = match answer {
        Ok(answer) => answer.into_inner().invitation.unwrap_or_default(),
        Err(status) if is_link_invalid(&status) => return Ok(link_invalid(state, session)),
        Err(status) => {
            FormErrors::from_status(&status, &[])?;
            return Ok(link_invalid(state, session));
        }
    };
    let (first_name, last_name) = names.unwrap_or((invitation.first_name, invitation.last_name));
    Ok(render(&InvitationPage {
        chrome: Chrome::new(state, session),
        email: invitation.email,
        organisation: invitation.organisation_name,
        role: role_name(invitation.role),
        first_name,
        last_name,
        errors,
    }))
}

#[derive(Deserialize)]
pub struct InvitationForm {
    csrf: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

impl CsrfForm for InvitationForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn accept_invitation(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<InvitationForm>,
) -> Result<Response, Failure> {
    let Some(token) = pending(&session, &LinkKind::Invitation) else {
        return Ok(link_invalid(&state, &session));
    };
    let names = (
        form.first_name.trim().to_owned(),
        form.last_name.trim().to_owned(),
    );
    let mut missing = FormErrors::default();
    if names.0.is_empty() {
        missing = missing.field("first_name", "Enter your first name.");
    }
    if names.1.is_empty() {
        missing = missing.field("last_name", "Enter your last name.");
    }
    if !missing.is_empty() {
        return invitation_page(&state, &session, token, Some(names), missing).await;
    }
    let answer = state
        .access()
        .accept_invitation(state.request(
            access_pb::AcceptInvitationRequest {
                token: token.clone(),
                first_name: names.0.clone(),
                last_name: names.1.clone(),
            },
            None,
        ))
        .await;
    match answer {
        Ok(_) => {
            session.update(|s| s.link = None);
            Ok(render(&DonePage {
                chrome: Chrome::new(&state, &session),
                title: "Invitation accepted",
                message: "Thank you. If you are new to CQRS, we have e-mailed you a link to \
                          create your password; otherwise sign in and choose the new role at \
                          the top of the page."
                    .to_owned(),
                user_id: None,
            }))
        }
        Err(status) if is_link_invalid(&status) => Ok(link_invalid(&state, &session)),
        Err(status) => {
            let errors = FormErrors::from_status(
                &status,
                &[
                    ("first_name", "first_name", "First name"),
                    ("last_name", "last_name", "Last name"),
                ],
            )?;
            invitation_page(&state, &session, token, Some(names), errors).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_kinds_keep_their_own_tokens() {
        let session = Session::default();
        session.update(|s| {
            s.link = Some(PendingLink {
                kind: LinkKind::PasswordReset,
                token: "t".into(),
            });
        });
        assert_eq!(
            pending(&session, &LinkKind::PasswordReset).as_deref(),
            Some("t")
        );
        assert_eq!(pending(&session, &LinkKind::Registration), None);
    }

    #[test]
    fn the_confirmation_must_match() {
        let form = |password: &str, confirm: &str| PasswordForm {
            csrf: String::new(),
            password: password.into(),
            confirm: confirm.into(),
        };
        assert!(confirm_errors(&form("Velvet#Harbor42", "Velvet#Harbor42")).is_empty());
        assert!(confirm_errors(&form("Velvet#Harbor42", "Velvet#Harbor43")).has("confirm"));
        assert!(confirm_errors(&form("", "")).has("password"));
    }
}
