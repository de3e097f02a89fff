//! The service desk's screens: find an account and act on it (unlock, send a reset link,
//! re-enable), the organisation tree with Create organisation, and the audit trail of every
//! service. Only the SERVICE_DESK role gets them (the services refuse everyone else anyway).
//!
//! Seeds: 000 ("I have locked my CQRS account. What do I do to get back in again?", forgotten
//! passwords actioned by the service desk), 002 §1 (the CQRS Local Team sets up the
//! organisations), §12 (re-enabling account access), §14 (locked out accounts), and DESIGN's
//! audit trail "queryable by authorised roles across services".

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::common::v1 as common_pb;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_rules::roles::Role as RulesRole;
use serde::Deserialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::time;
use super::{
    Chrome, CsrfForm, Failure, FormErrors, Posted, SignedIn, grant_label, reason_text, render,
    rules_role, see_other,
};
use crate::session::Session;
use crate::state::AppState;

/// This module's pages under `base`.
pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    Router::new()
        .route(&at("/desk"), get(show_account).post(find_account))
        .route(&at("/desk/unlock"), action_route(DeskAction::Unlock))
        .route(&at("/desk/reset"), action_route(DeskAction::SendReset))
        .route(&at("/desk/enable"), action_route(DeskAction::Enable))
        .route(
            &at("/desk/second-factor"),
            action_route(DeskAction::RemoveSecondFactor),
        )
        .route(
            &at("/desk/organisations"),
            get(show_organisations).post(create_organisation),
        )
        .route(&at("/desk/audit"), get(audit))
}

/// The signed-in person acting as the service desk; any other role gets "You cannot use this
/// page".
async fn desk(state: &AppState, session: &Session) -> Result<SignedIn, Failure> {
    let signed_in = SignedIn::require(state, session).await?;
    let role = signed_in
        .user
        .active_grant()
        .and_then(|grant| rules_role(grant.role));
    if role == Some(RulesRole::ServiceDesk) {
        Ok(signed_in)
    } else {
        Err(Failure::Forbidden)
    }
}

/// A refusal that is about the person, not the form: the session ended, or the role may not.
fn not_about_the_form(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

fn reason_of(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Find an account, and what the desk does to it.
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "desk_account.html")]
struct AccountPage {
    chrome: Chrome,
    login: String,
    errors: FormErrors,
    account: Option<AccountView>,
    /// Why an action on the account shown was refused.
    refusal: Option<String>,
}

struct AccountView {
    id: String,
    name: String,
    email: String,
    user_id: String,
    realm: &'static str,
    state: &'static str,
    lock: String,
    locked: bool,
    active: bool,
    disabled: bool,
    pending: bool,
    created: String,
    password_changed: String,
    /// Whether an authenticator app is on the account.
    second_factor: bool,
    /// `None` when the directory could not be asked.
    roles: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
pub struct AccountQuery {
    #[serde(default)]
    account: Option<String>,
}

/// Seed 000 "I have locked my CQRS account" / seed 002 §14 "Locked out Accounts": the service
/// desk's account screen.
pub async fn show_account(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<AccountQuery>,
) -> Result<Response, Failure> {
    let signed_in = desk(&state, &session).await?;
    let Some(account_id) = query.account.filter(|id| !id.trim().is_empty()) else {
        return Ok(account_page(
            &state,
            &signed_in,
            String::new(),
            FormErrors::default(),
            None,
            None,
        ));
    };
    match account_view(&state, &signed_in, account_id.trim()).await? {
        Some(view) => Ok(account_page(
            &state,
            &signed_in,
            String::new(),
            FormErrors::default(),
            Some(view),
            None,
        )),
        None => Ok(account_page(
            &state,
            &signed_in,
            String::new(),
            FormErrors::summary(ACCOUNT_GONE),
            None,
            None,
        )),
    }
}

fn account_page(
    state: &AppState,
    signed_in: &SignedIn,
    login: String,
    errors: FormErrors,
    account: Option<AccountView>,
    refusal: Option<String>,
) -> Response {
    render(&AccountPage {
        chrome: Chrome::new(state, &signed_in.session),
        login,
        errors,
        account,
        refusal,
    })
}

/// The account as the desk sees it, `None` when there is no such account.
async fn account_view(
    state: &AppState,
    signed_in: &SignedIn,
    account_id: &str,
) -> Result<Option<AccountView>, Failure> {
    let answer = state
        .identity()
        .get_account(state.request(
            id_pb::GetAccountRequest {
                account_id: account_id.to_owned(),
            },
            signed_in.token(),
        ))
        .await;
    let account = match answer {
        Ok(answer) => answer.into_inner().account.unwrap_or_default(),
        Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
            return Ok(None);
        }
        Err(status) => return Err(signed_in.failure(&status)),
    };
    let roles = account_roles(state, signed_in, &account.id).await;
    Ok(Some(view_of(
        &account,
        roles,
        state.clock.now().timestamp(),
    )))
}

/// The account's grants, for the desk to see which organisations it works for.
async fn account_roles(
    state: &AppState,
    signed_in: &SignedIn,
    account_id: &str,
) -> Option<Vec<String>> {
    let answer = state
        .directory()
        .list_grants(state.request(
            dir_pb::ListGrantsRequest {
                account_id: account_id.to_owned(),
                page_size: 0,
                page_token: String::new(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => Some(
            answer
                .into_inner()
                .grants
                .iter()
                .map(|g| grant_label(g.role, &g.organisation_name))
                .collect(),
        ),
        Err(status) => {
            tracing::info!(code = ?status.code(), "the desk's account page shows no roles");
            None
        }
    }
}

fn view_of(account: &id_pb::Account, roles: Option<Vec<String>>, now: i64) -> AccountView {
    let state =
        id_pb::AccountState::try_from(account.state).unwrap_or(id_pb::AccountState::Unspecified);
    let lock_state =
        id_pb::LockState::try_from(account.lock_state).unwrap_or(id_pb::LockState::Unspecified);
    let lock_until = account.lock_expire_time.as_ref().map(|t| t.seconds);
    let (locked, lock) = match lock_state {
        id_pb::LockState::PermanentlyLocked => (
            true,
            "Locked after too many wrong passwords. Only the service desk can unlock it."
                .to_owned(),
        ),
        id_pb::LockState::TemporarilyLocked => match lock_until {
            Some(until) if until > now => (
                true,
                format!(
                    "Locked after wrong passwords, until {}. Unlocking lifts it now.",
                    time::when(until)
                ),
            ),
            _ => (
                true,
                "Locked after wrong passwords, for a short time.".to_owned(),
            ),
        },
        id_pb::LockState::Unlocked | id_pb::LockState::Unspecified => {
            (false, "Not locked".to_owned())
        }
    };
    let realm = match id_pb::Realm::try_from(account.realm).unwrap_or(id_pb::Realm::Unspecified) {
        id_pb::Realm::National => "CQRS National (signs in with the User ID)",
        id_pb::Realm::Local => "CQRS Local (signs in with the e-mail address)",
        id_pb::Realm::Unspecified => "Not known",
    };
    AccountView {
        id: account.id.clone(),
        name: format!("{} {}", account.first_name, account.last_name),
        email: account.email.clone(),
        user_id: account.user_id.clone(),
        realm,
        state: match state {
            id_pb::AccountState::PendingRegistration => {
                "Awaiting registration (the registration link has not been used yet)"
            }
            id_pb::AccountState::Active => "Active",
            id_pb::AccountState::Disabled => "Disabled: cannot sign in anywhere",
            id_pb::AccountState::Unspecified => "Not known",
        },
        lock,
        locked,
        active: state == id_pb::AccountState::Active,
        disabled: state == id_pb::AccountState::Disabled,
        pending: state == id_pb::AccountState::PendingRegistration,
        created: account
            .create_time
            .as_ref()
            .map(|t| time::when(t.seconds))
            .unwrap_or_default(),
        password_changed: account
            .password_change_time
            .as_ref()
            .map_or_else(|| "Never".to_owned(), |t| time::when(t.seconds)),
        second_factor: account.second_factor,
        roles,
    }
}

#[derive(Deserialize)]
pub struct FindForm {
    csrf: String,
    #[serde(default)]
    login: String,
}

impl CsrfForm for FindForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The lookup key for what the desk typed: an address has an `@`, anything else is a User ID.
fn lookup_key(login: &str) -> id_pb::lookup_account_request::Key {
    if login.contains('@') {
        id_pb::lookup_account_request::Key::Email(login.to_owned())
    } else {
        id_pb::lookup_account_request::Key::UserId(login.to_ascii_uppercase())
    }
}

const NO_SUCH_ACCOUNT: &str = "No account has this User ID or e-mail address.";
const ACCOUNT_GONE: &str = "That account could not be found. Search for it again.";

/// Finds the account by User ID or e-mail address, then shows it (303 to its page).
pub async fn find_account(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<FindForm>,
) -> Result<Response, Failure> {
    let signed_in = desk(&state, &session).await?;
    let login = form.login.trim().to_owned();
    if login.is_empty() {
        let errors = FormErrors::default().field("login", "Enter a User ID or an e-mail address.");
        return Ok(account_page(&state, &signed_in, login, errors, None, None));
    }
    let answer = state
        .identity()
        .lookup_account(state.request(
            id_pb::LookupAccountRequest {
                key: Some(lookup_key(&login)),
            },
            signed_in.token(),
        ))
        .await;
    let errors = match answer {
        Ok(answer) => {
            let id = answer.into_inner().account.unwrap_or_default().id;
            return Ok(see_other(&state, &format!("desk?account={id}")));
        }
        Err(status) if not_about_the_form(&status) => return Err(signed_in.failure(&status)),
        Err(status) if status.code() == Code::NotFound => {
            FormErrors::default().field("login", NO_SUCH_ACCOUNT)
        }
        Err(status) => FormErrors::from_status(
            &status,
            &[
                ("user_id", "login", "A User ID"),
                ("email", "login", "The e-mail address"),
                ("key", "login", "The User ID or e-mail address"),
            ],
        )?,
    };
    Ok(account_page(&state, &signed_in, login, errors, None, None))
}

#[derive(Deserialize)]
pub struct AccountForm {
    csrf: String,
    #[serde(default)]
    account_id: String,
}

impl CsrfForm for AccountForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeskAction {
    /// Seed 002 §14: the desk lifts a lock (UnlockAccount); the owner is e-mailed.
    Unlock,
    /// Seed 000 "password resets can only be actioned via email": the desk e-mails a reset
    /// link (SendPasswordReset).
    SendReset,
    /// Seed 002 §12 "Re-enabling Account Access" (EnableAccount).
    Enable,
    /// A person who lost their phone and their recovery codes: the desk removes the app
    /// (RemoveSecondFactor); the owner is e-mailed, signed out everywhere, and adds a new app
    /// at the next sign-in where a role needs one. The desk never sees a secret.
    RemoveSecondFactor,
}

/// The POST route of one desk action on the account a form names.
fn action_route(action: DeskAction) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              session: Session,
              Posted(form): Posted<AccountForm>| async move {
            act(&state, &session, &form, action).await
        },
    )
}

async fn act(
    state: &AppState,
    session: &Session,
    form: &AccountForm,
    action: DeskAction,
) -> Result<Response, Failure> {
    let signed_in = desk(state, session).await?;
    let Ok(account_id) = uuid::Uuid::parse_str(form.account_id.trim()) else {
        return Ok(account_page(
            state,
            &signed_in,
            String::new(),
            FormErrors::summary(ACCOUNT_GONE),
            None,
            None,
        ));
    };
    let account_id = account_id.to_string();
    let identity = || state.identity();
    let answer: Result<Option<id_pb::Account>, Status> = match action {
        DeskAction::Unlock => identity()
            .unlock_account(state.request(
                id_pb::UnlockAccountRequest {
                    account_id: account_id.clone(),
                },
                signed_in.token(),
            ))
            .await
            .map(|a| a.into_inner().account),
        DeskAction::SendReset => identity()
            .send_password_reset(state.request(
                id_pb::SendPasswordResetRequest {
                    account_id: account_id.clone(),
                },
                signed_in.token(),
            ))
            .await
            .map(|_| None),
        DeskAction::RemoveSecondFactor => identity()
            .remove_second_factor(state.request(
                id_pb::RemoveSecondFactorRequest {
                    account_id: account_id.clone(),
                },
                signed_in.token(),
            ))
            .await
            .map(|_| None),
        DeskAction::Enable => identity()
            .enable_account(state.request(
                id_pb::EnableAccountRequest {
                    account_id: account_id.clone(),
                },
                signed_in.token(),
            ))
            .await
            .map(|a| a.into_inner().account),
    };
    match answer {
        Ok(account) => {
            let name = account
                .map(|a| format!("{} {}", a.first_name, a.last_name))
                .unwrap_or_default();
            let notice = match action {
                DeskAction::Unlock => {
                    format!("The account is unlocked: {name} can sign in again.")
                }
                DeskAction::SendReset => "A password-reset link has been e-mailed to the \
                                          account's address. It works once and for a limited \
                                          time."
                    .to_owned(),
                DeskAction::RemoveSecondFactor => "The authenticator app has been removed. \
                                                   The owner has been e-mailed and signed out, \
                                                   and adds a new app at the next sign-in."
                    .to_owned(),
                DeskAction::Enable => format!(
                    "The account is re-enabled: {name} can sign in again, and has been \
                     e-mailed to say so."
                ),
            };
            session.update(|s| s.notice = Some(notice));
            Ok(see_other(state, &format!("desk?account={account_id}")))
        }
        Err(status) if not_about_the_form(&status) => Err(signed_in.failure(&status)),
        Err(status) => {
            // Unavailable / internal become their pages; anything else is said on the page.
            FormErrors::from_status(&status, &[])?;
            let refusal = refusal_text(action, &status);
            match account_view(state, &signed_in, &account_id).await? {
                Some(view) => Ok(account_page(
                    state,
                    &signed_in,
                    String::new(),
                    FormErrors::default(),
                    Some(view),
                    Some(refusal),
                )),
                None => Ok(account_page(
                    state,
                    &signed_in,
                    String::new(),
                    FormErrors::summary(ACCOUNT_GONE),
                    None,
                    None,
                )),
            }
        }
    }
}

/// Words for a refused desk action.
fn refusal_text(action: DeskAction, status: &Status) -> String {
    let reason = reason_of(status);
    match (action, reason.as_str()) {
        (DeskAction::Enable, "ACCOUNT_NOT_DISABLED") => {
            "This account is not disabled, so there is nothing to re-enable.".to_owned()
        }
        (DeskAction::RemoveSecondFactor, "NO_SECOND_FACTOR") => {
            "This account has no authenticator app to remove.".to_owned()
        }
        (DeskAction::SendReset, "ACCOUNT_NOT_ACTIVE") => {
            "A reset link can only be sent to an active account: re-enable it first, or, for \
             an account awaiting registration, ask for its registration link to be sent again."
                .to_owned()
        }
        _ if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
            "That account could not be found.".to_owned()
        }
        _ => reason_text(&reason).to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Organisations: the tree and Create organisation.
// ---------------------------------------------------------------------------------------------

/// Most organisations the tree shows; a larger directory is shown in part, with a note.
const MAX_TREE: usize = 5000;
/// Parents whose children are asked for at the same time.
const TREE_CONCURRENCY: usize = 16;

#[derive(Template)]
#[template(path = "desk_organisations.html")]
struct OrganisationsPage {
    chrome: Chrome,
    tree: Vec<TreeStep>,
    truncated: bool,
    kinds: Vec<Choice>,
    regions: Vec<Choice>,
    ccgs: Vec<Choice>,
    no_parent: bool,
    form: OrganisationFields,
    errors: FormErrors,
}

/// One step of the tree as nested lists, in document order: `ul`, `li` (with `org`), `/li`,
/// `/ul`.
struct TreeStep {
    tag: &'static str,
    org: OrgView,
}

#[derive(Default)]
struct OrgView {
    name: String,
    ods_code: String,
    kind: &'static str,
    multi_level: bool,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Default)]
struct OrganisationFields {
    request_id: String,
    kind: String,
    ods_code: String,
    name: String,
    parent: String,
    multi_level: bool,
}

fn kind_label(kind: i32) -> &'static str {
    match dir_pb::OrganisationKind::try_from(kind).unwrap_or(dir_pb::OrganisationKind::Unspecified)
    {
        dir_pb::OrganisationKind::Region => "Region",
        dir_pb::OrganisationKind::CommissioningOrganisation => "Commissioning organisation",
        dir_pb::OrganisationKind::ServiceProvider => "GP practice",
        dir_pb::OrganisationKind::ServiceDesk => "Service desk",
        dir_pb::OrganisationKind::Unspecified => "Organisation",
    }
}

const KINDS: [dir_pb::OrganisationKind; 4] = [
    dir_pb::OrganisationKind::Region,
    dir_pb::OrganisationKind::CommissioningOrganisation,
    dir_pb::OrganisationKind::ServiceProvider,
    dir_pb::OrganisationKind::ServiceDesk,
];

/// Whether organisations of this kind can have children (the tree is three deep).
fn may_have_children(kind: i32) -> bool {
    kind == dir_pb::OrganisationKind::Region as i32
        || kind == dir_pb::OrganisationKind::CommissioningOrganisation as i32
}

/// Seed 002 §1 "the CQRS Local Team will set up…": the organisation tree and Create
/// organisation.
pub async fn show_organisations(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, Failure> {
    let signed_in = desk(&state, &session).await?;
    let fields = OrganisationFields {
        request_id: uuid::Uuid::new_v4().to_string(),
        ..OrganisationFields::default()
    };
    organisations_page(&state, &signed_in, fields, FormErrors::default()).await
}

async fn organisations_page(
    state: &AppState,
    signed_in: &SignedIn,
    form: OrganisationFields,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let token = signed_in.user.access_token.clone();
    let (orgs, truncated) = load_tree(state, &token)
        .await
        .map_err(|status| signed_in.failure(&status))?;
    let choices = |kind: dir_pb::OrganisationKind| {
        orgs.iter()
            .filter(|o| o.kind == kind as i32)
            .map(|o| Choice {
                value: o.id.clone(),
                label: format!("{} ({})", o.name, o.ods_code),
                selected: o.id == form.parent,
            })
            .collect::<Vec<_>>()
    };
    let regions = choices(dir_pb::OrganisationKind::Region);
    let ccgs = choices(dir_pb::OrganisationKind::CommissioningOrganisation);
    let kinds = KINDS
        .iter()
        .map(|kind| Choice {
            value: kind
                .as_str_name()
                .trim_start_matches("ORGANISATION_KIND_")
                .to_owned(),
            label: kind_label(*kind as i32).to_owned(),
            selected: form.kind == kind.as_str_name().trim_start_matches("ORGANISATION_KIND_"),
        })
        .collect();
    Ok(render(&OrganisationsPage {
        chrome: Chrome::new(state, &signed_in.session),
        tree: tree_steps(&orgs),
        truncated,
        kinds,
        regions,
        ccgs,
        no_parent: form.parent.is_empty(),
        form,
        errors,
    }))
}

/// Every organisation from the roots down (at most [`MAX_TREE`]), each parent's children in
/// name order; and whether some were left out.
async fn load_tree(
    state: &AppState,
    token: &str,
) -> Result<(Vec<dir_pb::Organisation>, bool), Status> {
    let mut all = Vec::new();
    let mut parents = vec![String::new()];
    let mut truncated = false;
    while !parents.is_empty() {
        let mut next = Vec::new();
        let mut answers = Vec::new();
        let mut pending = tokio::task::JoinSet::new();
        let mut queue = parents.into_iter().enumerate();
        loop {
            while pending.len() < TREE_CONCURRENCY {
                let Some((index, parent)) = queue.next() else {
                    break;
                };
                let state = state.clone();
                let token = token.to_owned();
                pending.spawn(async move {
                    (
                        index,
                        children_of(&state, &parent, &token, MAX_TREE + 1).await,
                    )
                });
            }
            let Some(joined) = pending.join_next().await else {
                break;
            };
            let (index, children) =
                joined.map_err(|_| Status::internal("organisation listing stopped"))?;
            answers.push((index, children?));
        }
        // Parents in the order they were listed, so the tree reads in name order.
        answers.sort_by_key(|(index, _)| *index);
        for (_, children) in answers {
            for org in children {
                if all.len() >= MAX_TREE {
                    truncated = true;
                    break;
                }
                if may_have_children(org.kind) {
                    next.push(org.id.clone());
                }
                all.push(org);
            }
        }
        if truncated {
            break;
        }
        parents = next;
    }
    Ok((all, truncated))
}

/// The children of `parent` (the roots for an empty id), every page up to `limit`.
async fn children_of(
    state: &AppState,
    parent: &str,
    token: &str,
    limit: usize,
) -> Result<Vec<dir_pb::Organisation>, Status> {
    let mut children = Vec::new();
    let mut page_token = String::new();
    loop {
        let answer = state
            .directory()
            .list_organisations(state.request(
                dir_pb::ListOrganisationsRequest {
                    parent_id: parent.to_owned(),
                    page_size: 100,
                    page_token: page_token.clone(),
                },
                Some(token),
            ))
            .await?
            .into_inner();
        children.extend(answer.organisations);
        if answer.next_page_token.is_empty() || children.len() >= limit {
            return Ok(children);
        }
        page_token = answer.next_page_token;
    }
}

/// The organisations as nested lists: each parent's children in a list inside its item.
fn tree_steps(orgs: &[dir_pb::Organisation]) -> Vec<TreeStep> {
    let mut children: HashMap<&str, Vec<&dir_pb::Organisation>> = HashMap::new();
    for org in orgs {
        children
            .entry(org.parent_id.as_str())
            .or_default()
            .push(org);
    }
    let mut steps = Vec::new();
    push_children(&mut steps, &children, "");
    steps
}

fn push_children(
    steps: &mut Vec<TreeStep>,
    children: &HashMap<&str, Vec<&dir_pb::Organisation>>,
    parent: &str,
) {
    let Some(kids) = children.get(parent) else {
        return;
    };
    let tag = |tag| TreeStep {
        tag,
        org: OrgView::default(),
    };
    steps.push(tag("ul"));
    for org in kids {
        steps.push(TreeStep {
            tag: "li",
            org: OrgView {
                name: org.name.clone(),
                ods_code: org.ods_code.clone(),
                kind: kind_label(org.kind),
                multi_level: org.multi_level_approval,
            },
        });
        // Ids are unique and the tree has no cycles (a parent exists before its children).
        if org.id != parent {
            push_children(steps, children, &org.id);
        }
        steps.push(tag("/li"));
    }
    steps.push(tag("/ul"));
}

#[derive(Deserialize)]
pub struct OrganisationForm {
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    ods_code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    multi_level_approval: Option<String>,
}

impl CsrfForm for OrganisationForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// What a kind sits under, in words, for a missing or wrong parent.
fn parent_sentence(kind: Option<dir_pb::OrganisationKind>) -> &'static str {
    match kind {
        Some(dir_pb::OrganisationKind::CommissioningOrganisation) => {
            "Choose the region this commissioning organisation sits under."
        }
        Some(dir_pb::OrganisationKind::ServiceProvider) => {
            "Choose the commissioning organisation this GP practice sits under."
        }
        Some(dir_pb::OrganisationKind::Region | dir_pb::OrganisationKind::ServiceDesk) => {
            "A region or a service desk sits at the top of the tree: choose \"No parent\"."
        }
        _ => "Choose the organisation this one sits under.",
    }
}

/// Seed 002 §1: the desk creates an organisation (CreateOrganisation, keyed on the form's
/// request id so a second click creates nothing more).
pub async fn create_organisation(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<OrganisationForm>,
) -> Result<Response, Failure> {
    let signed_in = desk(&state, &session).await?;
    let fields = OrganisationFields {
        request_id: if uuid::Uuid::parse_str(form.request_id.trim()).is_ok() {
            form.request_id.trim().to_owned()
        } else {
            uuid::Uuid::new_v4().to_string()
        },
        kind: form.kind.trim().to_owned(),
        ods_code: form.ods_code.trim().to_owned(),
        name: form.name.trim().to_owned(),
        parent: form.parent.trim().to_owned(),
        multi_level: form.multi_level_approval.is_some(),
    };
    let kind =
        dir_pb::OrganisationKind::from_str_name(&format!("ORGANISATION_KIND_{}", fields.kind))
            .filter(|k| *k != dir_pb::OrganisationKind::Unspecified);
    // Every field goes to the directory, which names every bad one at once; the gateway only
    // puts the words of the tree's rules in place of its codes.
    let answer = state
        .directory()
        .create_organisation(state.request(
            dir_pb::CreateOrganisationRequest {
                request_id: fields.request_id.clone(),
                kind: kind.map_or(0, |k| k as i32),
                ods_code: fields.ods_code.clone(),
                name: fields.name.clone(),
                parent_id: fields.parent.clone(),
                multi_level_approval: fields.multi_level,
            },
            signed_in.token(),
        ))
        .await;
    let status = match answer {
        Ok(answer) => {
            let org = answer.into_inner().organisation.unwrap_or_default();
            let notice = format!(
                "{} {} ({}) has been created.",
                kind_label(org.kind),
                org.name,
                org.ods_code
            );
            session.update(|s| s.notice = Some(notice));
            return Ok(see_other(&state, "desk/organisations"));
        }
        Err(status) if not_about_the_form(&status) => return Err(signed_in.failure(&status)),
        Err(status) => status,
    };
    let reason = reason_of(&status);
    let mut errors = match (status.code(), reason.as_str()) {
        (_, "PARENT_KIND_MISMATCH") => FormErrors::default().field("parent", parent_sentence(kind)),
        (_, "ODS_CODE_TAKEN") => FormErrors::default().field(
            "ods_code",
            "An organisation with this ODS code already exists.",
        ),
        (Code::NotFound, _) => FormErrors::default().field(
            "parent",
            "That parent organisation no longer exists: choose another.",
        ),
        _ => FormErrors::from_status(
            &status,
            &[
                ("kind", "kind", "Kind"),
                ("ods_code", "ods_code", "ODS code"),
                ("name", "name", "Name"),
                ("parent_id", "parent", "Parent"),
                ("multi_level_approval", "multi_level_approval", "Approval"),
            ],
        )?,
    };
    if errors.has("kind") {
        errors.fields.insert(
            "kind".into(),
            vec!["Choose what kind of organisation this is.".into()],
        );
    }
    if errors.has("parent") {
        errors
            .fields
            .insert("parent".into(), vec![parent_sentence(kind).into()]);
    }
    if errors.has("multi_level_approval") {
        errors.fields.insert(
            "multi_level_approval".into(),
            vec!["Only a GP practice has an approval level.".into()],
        );
    }
    organisations_page(&state, &signed_in, fields, errors).await
}

// ---------------------------------------------------------------------------------------------
// The audit trail.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuditService {
    Identity,
    Directory,
    Access,
    Notifications,
}

impl AuditService {
    const ALL: [AuditService; 4] = [
        AuditService::Identity,
        AuditService::Directory,
        AuditService::Access,
        AuditService::Notifications,
    ];

    fn name(self) -> &'static str {
        match self {
            AuditService::Identity => "identity",
            AuditService::Directory => "directory",
            AuditService::Access => "access",
            AuditService::Notifications => "notifications",
        }
    }

    fn label(self) -> &'static str {
        match self {
            AuditService::Identity => "Accounts and sign-in (identity)",
            AuditService::Directory => "Organisations and roles (directory)",
            AuditService::Access => "Invitations, registrations and requests (access)",
            AuditService::Notifications => "Mail and notices (notifications)",
        }
    }

    fn parse(name: &str) -> Option<AuditService> {
        AuditService::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Actions the trails record, offered as suggestions in the action filter.
const ACTIONS: &[&str] = &[
    "SIGN_IN",
    "SELECT_ROLE",
    "LOCK_ACCOUNT",
    "UNLOCK_ACCOUNT",
    "CREATE_ACCOUNT",
    "COMPLETE_REGISTRATION",
    "CHANGE_PASSWORD",
    "REQUEST_PASSWORD_RESET",
    "SEND_PASSWORD_RESET",
    "RESET_PASSWORD",
    "REMIND_USER_ID",
    "DISABLE_ACCOUNT",
    "ENABLE_ACCOUNT",
    "END_SESSIONS",
    "CREATE_ORGANISATION",
    "SET_APPROVAL_LEVEL",
    "GRANT_ROLE",
    "REVOKE_ROLE",
    "REVOKE_ALL_ROLES",
    "CREATE_INVITATION",
    "RESEND_INVITATION",
    "CANCEL_INVITATION",
    "ACCEPT_INVITATION",
    "EXPIRE_INVITATION",
    "SUBMIT_REGISTRATION",
    "REVIEW_REGISTRATION",
    "REQUEST_ACCESS",
    "WITHDRAW_ACCESS_REQUEST",
    "REVIEW_ACCESS_REQUEST",
    "NOTIFY",
    "DELIVER_EMAIL",
    "DEAD_LETTER_EMAIL",
    "UPDATE_PREFERENCES",
    "MARK_NOTIFICATION_READ",
];

const PAGE_SIZES: [i32; 4] = [10, 25, 50, 100];
/// The service filter's value for every trail at once.
const ALL_SERVICES: &str = "all";
const DEFAULT_PAGE_SIZE: i32 = 25;

#[derive(Deserialize, Default)]
pub struct AuditFilters {
    #[serde(default)]
    service: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    size: String,
    /// The page token of the page shown.
    #[serde(default)]
    page: String,
}

#[derive(Template)]
#[template(path = "desk_audit.html")]
struct AuditPage {
    chrome: Chrome,
    services: Vec<Choice>,
    sizes: Vec<Choice>,
    actions: &'static [&'static str],
    all_services: bool,
    service_label: &'static str,
    actor: String,
    target: String,
    action: String,
    from: String,
    to: String,
    errors: FormErrors,
    /// `None` when the filters could not be used.
    events: Option<Vec<EventView>>,
    next: Option<String>,
    first: Option<String>,
}

struct EventView {
    service: &'static str,
    when: String,
    action: String,
    code: String,
    outcome: &'static str,
    actor: String,
    target: String,
    details: Vec<(String, String)>,
    /// Field, value before, value after.
    changes: Vec<(String, String, String)>,
}

/// The query of a page of the trail: the filters as typed, and `page`.
fn audit_link(
    base: &str,
    service: Option<AuditService>,
    filters: &AuditFilters,
    page: &str,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("service", service.map_or(ALL_SERVICES, AuditService::name));
    for (key, value) in [
        ("actor", &filters.actor),
        ("target", &filters.target),
        ("action", &filters.action),
        ("from", &filters.from),
        ("to", &filters.to),
        ("size", &filters.size),
    ] {
        if !value.trim().is_empty() {
            query.append_pair(key, value.trim());
        }
    }
    if !page.is_empty() {
        query.append_pair("page", page);
    }
    format!("{base}/desk/audit?{}", query.finish())
}

/// DESIGN "Audit": every service's trail, filtered by who, on what, which action and when,
/// newest first, a page at a time.
pub async fn audit(
    State(state): State<AppState>,
    session: Session,
    Query(filters): Query<AuditFilters>,
) -> Result<Response, Failure> {
    let signed_in = desk(&state, &session).await?;
    // Every trail at once unless one is chosen.
    let service = AuditService::parse(filters.service.trim());
    let size = filters
        .size
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|n| PAGE_SIZES.contains(n))
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let mut errors = FormErrors::default();

    let actor = resolve_account(
        &state,
        &signed_in,
        filters.actor.trim(),
        "actor",
        &mut errors,
    )
    .await?;
    let target = resolve_account(
        &state,
        &signed_in,
        filters.target.trim(),
        "target",
        &mut errors,
    )
    .await?;
    let action = normalise_action(&filters.action);
    let start = match time::parse_day(filters.from.trim()) {
        Ok(start) => start,
        Err(()) => {
            errors = errors.field("from", "Enter the date as year-month-day, e.g. 2025-03-31.");
            None
        }
    };
    let end = match time::parse_day(filters.to.trim()) {
        Ok(end) => end.map(|day| day + SECONDS_PER_DAY),
        Err(()) => {
            errors = errors.field("to", "Enter the date as year-month-day, e.g. 2025-03-31.");
            None
        }
    };
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        errors = errors.field("to", "The end date must be on or after the start date.");
    }

    let chrome = Chrome::new(&state, &signed_in.session);
    let base = chrome.base.clone();
    let mut page = AuditPage {
        chrome,
        services: std::iter::once(Choice {
            value: ALL_SERVICES.to_owned(),
            label: "All services".to_owned(),
            selected: service.is_none(),
        })
        .chain(AuditService::ALL.iter().map(|s| Choice {
            value: s.name().to_owned(),
            label: s.label().to_owned(),
            selected: Some(*s) == service,
        }))
        .collect(),
        all_services: service.is_none(),
        sizes: PAGE_SIZES
            .iter()
            .map(|n| Choice {
                value: n.to_string(),
                label: n.to_string(),
                selected: *n == size,
            })
            .collect(),
        actions: ACTIONS,
        service_label: service.map_or("all services", AuditService::label),
        actor: filters.actor.trim().to_owned(),
        target: filters.target.trim().to_owned(),
        action: filters.action.trim().to_owned(),
        from: filters.from.trim().to_owned(),
        to: filters.to.trim().to_owned(),
        errors: FormErrors::default(),
        events: None,
        next: None,
        first: None,
    };
    if !errors.is_empty() {
        page.errors = errors;
        return Ok(render(&page));
    }

    let query = AuditRequest {
        actor_id: actor.unwrap_or_default(),
        target_id: target.unwrap_or_default(),
        action,
        start_time: start.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        end_time: end.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        page_size: size,
        page_token: filters.page.trim().to_owned(),
    };
    let listed = match service {
        Some(service) => {
            list_audit(&state, &signed_in, service, query)
                .await
                .map(|(events, next)| {
                    let events: Vec<_> = events.into_iter().map(|e| (service, e)).collect();
                    (events, next)
                })
        }
        None => list_every_audit(&state, &signed_in, query).await,
    };
    match listed {
        Ok((events, next)) => {
            let plain: Vec<common_pb::AuditEvent> = events.iter().map(|(_, e)| e.clone()).collect();
            let names = audit_names(&state, &signed_in, &plain).await;
            page.events = Some(
                events
                    .iter()
                    .map(|(service, e)| event_view(*service, e, &names))
                    .collect(),
            );
            page.next = (!next.is_empty()).then(|| audit_link(&base, service, &filters, &next));
            page.first =
                (!filters.page.trim().is_empty()).then(|| audit_link(&base, service, &filters, ""));
        }
        Err(status) if not_about_the_form(&status) => return Err(signed_in.failure(&status)),
        Err(status) => {
            let errors = FormErrors::from_status(
                &status,
                &[
                    ("actor_id", "actor", "Who"),
                    ("target_id", "target", "On what"),
                    ("action", "action", "Action"),
                    ("start_time", "from", "From"),
                    ("end_time", "to", "To"),
                    ("page_token", "page", "Page"),
                ],
            )?;
            page.errors = if errors.has("page") {
                FormErrors::summary(
                    "That page of the trail can no longer be shown. Start again from the first \
                     page.",
                )
            } else {
                errors
            };
            page.first = Some(audit_link(&base, service, &filters, ""));
        }
    }
    Ok(render(&page))
}

/// The fields every service's ListAuditEvents has.
struct AuditRequest {
    actor_id: String,
    target_id: String,
    action: String,
    start_time: Option<prost_types::Timestamp>,
    end_time: Option<prost_types::Timestamp>,
    page_size: i32,
    page_token: String,
}

macro_rules! audit_page {
    ($client:expr, $pb:ident, $state:expr, $query:expr, $token:expr) => {{
        let query = $query;
        $client
            .list_audit_events($state.request(
                $pb::ListAuditEventsRequest {
                    actor_id: query.actor_id,
                    target_id: query.target_id,
                    action: query.action,
                    start_time: query.start_time,
                    end_time: query.end_time,
                    page_size: query.page_size,
                    page_token: query.page_token,
                },
                $token,
            ))
            .await
            .map(|answer| {
                let answer = answer.into_inner();
                (answer.audit_events, answer.next_page_token)
            })
    }};
}

async fn list_audit(
    state: &AppState,
    signed_in: &SignedIn,
    service: AuditService,
    query: AuditRequest,
) -> Result<(Vec<common_pb::AuditEvent>, String), Status> {
    let token = signed_in.token();
    match service {
        AuditService::Identity => audit_page!(state.identity(), id_pb, state, query, token),
        AuditService::Directory => audit_page!(state.directory(), dir_pb, state, query, token),
        AuditService::Access => audit_page!(state.access(), access_pb, state, query, token),
        AuditService::Notifications => {
            audit_page!(state.notifications(), notifications_pb, state, query, token)
        }
    }
}

/// One page of every trail, merged newest first. The next page's token is the time of the
/// last event shown: each trail is read again from before it.
async fn list_every_audit(
    state: &AppState,
    signed_in: &SignedIn,
    query: AuditRequest,
) -> Result<(Vec<(AuditService, common_pb::AuditEvent)>, String), Status> {
    let before = if query.page_token.is_empty() {
        None
    } else {
        let time = chrono::DateTime::parse_from_rfc3339(&query.page_token)
            .map_err(|_| {
                Status::with_error_details(
                    Code::InvalidArgument,
                    "bad page token",
                    tonic_types::ErrorDetails::with_bad_request_violation(
                        "page_token",
                        "is not a token this page gave",
                    ),
                )
            })?
            .with_timezone(&chrono::Utc);
        Some(prost_types::Timestamp {
            seconds: time.timestamp(),
            nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
        })
    };
    let end_time = match (before, query.end_time) {
        (Some(b), Some(e)) => Some(if (b.seconds, b.nanos) < (e.seconds, e.nanos) {
            b
        } else {
            e
        }),
        (b, e) => b.or(e),
    };
    let size = usize::try_from(query.page_size).unwrap_or(0);
    let mut events = Vec::new();
    let mut more = false;
    for service in AuditService::ALL {
        let one = AuditRequest {
            actor_id: query.actor_id.clone(),
            target_id: query.target_id.clone(),
            action: query.action.clone(),
            start_time: query.start_time,
            end_time,
            page_size: query.page_size,
            page_token: String::new(),
        };
        let (page, next) = list_audit(state, signed_in, service, one).await?;
        more |= !next.is_empty();
        events.extend(page.into_iter().map(|e| (service, e)));
    }
    let time = |e: &common_pb::AuditEvent| e.create_time.map(|t| (t.seconds, t.nanos));
    events.sort_by(|(_, a), (_, b)| time(b).cmp(&time(a)).then_with(|| b.id.cmp(&a.id)));
    more |= events.len() > size;
    events.truncate(size);
    let next = match events.last().and_then(|(_, e)| e.create_time) {
        Some(t) if more => u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default(),
        _ => String::new(),
    };
    Ok((events, next))
}

/// Whether `s` has the shape of a User ID: three letters, then three digits.
fn looks_like_user_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && b.iter().take(3).all(u8::is_ascii_alphabetic)
        && b.iter().skip(3).all(u8::is_ascii_digit)
}

/// A who/what filter as the trail stores it: a User ID or an e-mail address becomes the
/// account's id; anything else (an id, a service's name) is used as typed.
async fn resolve_account(
    state: &AppState,
    signed_in: &SignedIn,
    typed: &str,
    field: &str,
    errors: &mut FormErrors,
) -> Result<Option<String>, Failure> {
    if typed.is_empty() {
        return Ok(None);
    }
    if !(typed.contains('@') || looks_like_user_id(typed)) {
        return Ok(Some(typed.to_owned()));
    }
    let answer = state
        .identity()
        .lookup_account(state.request(
            id_pb::LookupAccountRequest {
                key: Some(lookup_key(typed)),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => Ok(Some(answer.into_inner().account.unwrap_or_default().id)),
        Err(status) if not_about_the_form(&status) => Err(signed_in.failure(&status)),
        Err(status) if status.code() == Code::NotFound => {
            *errors = std::mem::take(errors).field(field, NO_SUCH_ACCOUNT);
            Ok(None)
        }
        Err(status) => {
            let found = FormErrors::from_status(
                &status,
                &[
                    ("email", field, "The e-mail address"),
                    ("user_id", field, "A User ID"),
                ],
            )?;
            let messages = if found.fields.is_empty() {
                vec![NO_SUCH_ACCOUNT.to_owned()]
            } else {
                found.of(field)
            };
            for message in messages {
                *errors = std::mem::take(errors).field(field, message);
            }
            Ok(None)
        }
    }
}

/// `unlock account` or `Unlock_Account` → `UNLOCK_ACCOUNT`.
fn normalise_action(typed: &str) -> String {
    typed
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_uppercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// `UNLOCK_ACCOUNT` → `Unlock account`, `ods_code` → `ODS code`.
fn humanise(code: &str) -> String {
    let words = code
        .to_ascii_lowercase()
        .split('_')
        .map(|word| match word {
            "ods" => "ODS",
            "id" => "ID",
            "ids" => "IDs",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut chars = words.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Names of the accounts and organisations the events are by or about, by id (best effort:
/// an id that cannot be named is shown as it is).
async fn audit_names(
    state: &AppState,
    signed_in: &SignedIn,
    events: &[common_pb::AuditEvent],
) -> HashMap<String, String> {
    let mut ids: Vec<String> = events
        .iter()
        .flat_map(|e| {
            let actor =
                (e.actor_kind == common_pb::ActorKind::User as i32).then(|| e.actor_id.clone());
            let target =
                (e.target_type.eq_ignore_ascii_case("account")).then(|| e.target_id.clone());
            actor.into_iter().chain(target)
        })
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .collect();
    ids.sort();
    ids.dedup();
    let mut names = HashMap::new();
    for chunk in ids.chunks(100) {
        let answer = state
            .identity()
            .list_accounts(state.request(
                id_pb::ListAccountsRequest {
                    account_ids: chunk.to_vec(),
                    page_size: 100,
                    ..Default::default()
                },
                signed_in.token(),
            ))
            .await;
        match answer {
            Ok(answer) => {
                for account in answer.into_inner().accounts {
                    let login = if account.user_id.is_empty() {
                        account.email.clone()
                    } else {
                        account.user_id.clone()
                    };
                    names.insert(
                        account.id.clone(),
                        format!("{} {} ({login})", account.first_name, account.last_name),
                    );
                }
            }
            Err(status) => {
                tracing::info!(code = ?status.code(), "audit page shows account ids unnamed");
                break;
            }
        }
    }
    names.extend(organisation_names(state, signed_in, events).await);
    names
}

/// Names of the organisations the events are about, each as "Name (ODS code)"; best effort,
/// like the accounts' names.
async fn organisation_names(
    state: &AppState,
    signed_in: &SignedIn,
    events: &[common_pb::AuditEvent],
) -> Vec<(String, String)> {
    let mut ids: Vec<&str> = events
        .iter()
        .filter(|e| e.target_type.eq_ignore_ascii_case("organisation"))
        .map(|e| e.target_id.as_str())
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let lookups = ids.into_iter().map(|id| async move {
        let answer = state
            .directory()
            .get_organisation(state.request(
                dir_pb::GetOrganisationRequest {
                    organisation_id: id.to_owned(),
                },
                signed_in.token(),
            ))
            .await
            .ok()?;
        let organisation = answer.into_inner().organisation?;
        Some((
            id.to_owned(),
            format!("{} ({})", organisation.name, organisation.ods_code),
        ))
    });
    futures::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn event_view(
    service: AuditService,
    event: &common_pb::AuditEvent,
    names: &HashMap<String, String>,
) -> EventView {
    let named = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_owned());
    let actor = match common_pb::ActorKind::try_from(event.actor_kind)
        .unwrap_or(common_pb::ActorKind::Unspecified)
    {
        // The name recorded with the event is the one the person had then.
        common_pb::ActorKind::User => {
            let who = match (names.get(&event.actor_id), event.actor_name.is_empty()) {
                (Some(now), _) => now.clone(),
                (None, false) => event.actor_name.clone(),
                (None, true) => event.actor_id.clone(),
            };
            if event.actor_role.is_empty() {
                who
            } else {
                format!("{who}, as {}", humanise(&event.actor_role))
            }
        }
        common_pb::ActorKind::Service => format!("The {} service", event.actor_id),
        common_pb::ActorKind::Anonymous => "Someone not signed in".to_owned(),
        common_pb::ActorKind::System if event.actor_id.is_empty() => "The system".to_owned(),
        common_pb::ActorKind::System => format!("The system ({})", event.actor_id),
        common_pb::ActorKind::Unspecified => event.actor_id.clone(),
    };
    let target = if event.target_id.is_empty() {
        humanise(&event.target_type)
    } else {
        format!(
            "{}: {}",
            humanise(&event.target_type),
            named(&event.target_id)
        )
    };
    let outcome = match common_pb::AuditOutcome::try_from(event.outcome)
        .unwrap_or(common_pb::AuditOutcome::Unspecified)
    {
        common_pb::AuditOutcome::Success => "Succeeded",
        common_pb::AuditOutcome::Failure => "Refused by a rule",
        common_pb::AuditOutcome::Denied => "Not permitted",
        common_pb::AuditOutcome::Unspecified => "Not recorded",
    };
    let mut details: Vec<(String, String)> = event
        .details
        .iter()
        .map(|(k, v)| (humanise(k), v.clone()))
        .collect();
    details.sort();
    for (label, value) in [
        ("From address", &event.client_address),
        ("Browser", &event.user_agent),
    ] {
        if !value.is_empty() {
            details.push((label.to_owned(), value.clone()));
        }
    }
    let shown = |json: &str| match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Null) | Err(_) => "(none)".to_owned(),
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
    };
    let changes = event
        .changes
        .iter()
        .map(|c| {
            (
                humanise(&c.field.replace('.', "_")),
                shown(&c.before_json),
                shown(&c.after_json),
            )
        })
        .collect();
    EventView {
        service: service.name(),
        changes,
        when: event
            .create_time
            .as_ref()
            .map(|t| time::when_precise(t.seconds))
            .unwrap_or_default(),
        action: humanise(&event.action),
        code: event.action.clone(),
        outcome,
        actor,
        target,
        details,
    }
}

// ---------------------------------------------------------------------------------------------
// Dates and times (UTC), without a calendar crate.
// ---------------------------------------------------------------------------------------------

const SECONDS_PER_DAY: i64 = 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_typed_loosely_and_shown_as_words() {
        assert_eq!(normalise_action(" unlock account "), "UNLOCK_ACCOUNT");
        assert_eq!(normalise_action("Unlock_Account"), "UNLOCK_ACCOUNT");
        assert_eq!(normalise_action(""), "");
        assert_eq!(humanise("UNLOCK_ACCOUNT"), "Unlock account");
        assert_eq!(humanise("account"), "Account");
        assert_eq!(humanise("ods_code"), "ODS code");
        assert_eq!(humanise("parent_id"), "Parent ID");
    }

    #[test]
    fn user_ids_are_told_from_other_ids() {
        assert!(looks_like_user_id("ATU123"));
        assert!(looks_like_user_id("atu123"));
        assert!(!looks_like_user_id("A81001"));
        assert!(!looks_like_user_id("gateway"));
        assert!(matches!(
            lookup_key("atu123"),
            id_pb::lookup_account_request::Key::UserId(id) if id == "ATU123"
        ));
        assert!(matches!(
            lookup_key("a.b@nhs.net"),
            id_pb::lookup_account_request::Key::Email(_)
        ));
    }

    #[test]
    fn the_tree_nests_children_inside_their_parent() {
        let org = |id: &str, parent: &str, kind: dir_pb::OrganisationKind| dir_pb::Organisation {
            id: id.into(),
            parent_id: parent.into(),
            name: id.into(),
            kind: kind as i32,
            ..Default::default()
        };
        let orgs = [
            org("desk", "", dir_pb::OrganisationKind::ServiceDesk),
            org("north", "", dir_pb::OrganisationKind::Region),
            org(
                "ccg",
                "north",
                dir_pb::OrganisationKind::CommissioningOrganisation,
            ),
            org("gp", "ccg", dir_pb::OrganisationKind::ServiceProvider),
        ];
        let shape: Vec<String> = tree_steps(&orgs)
            .iter()
            .map(|s| {
                if s.tag == "li" {
                    s.org.name.clone()
                } else {
                    s.tag.to_owned()
                }
            })
            .collect();
        assert_eq!(
            shape.join(" "),
            "ul desk /li north ul ccg ul gp /li /ul /li /ul /li /ul"
        );
    }
}
