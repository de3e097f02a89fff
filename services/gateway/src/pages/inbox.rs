//! The Notifications tile (seed 002): the in-app inbox, mark read, and Review, which opens the
//! registration or access request a notification is about; and the review pages behind it —
//! the requests awaiting review in the active role's scope, one request's details, Approve or
//! Reject (with a reason), then Confirm (seed 002 §5 "What will happen now?" and §9 "What will
//! happen now?").
//!
//! The access service decides who may review what: a refusal becomes the Forbidden page. The
//! gateway only leaves out the Review buttons a role could not use.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_rules::NO_GRANT_IN_SCOPE;
use cqrs_rules::roles::{Permission, role_grants};
use http::StatusCode;
use serde::Deserialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::time;
use super::{
    Chrome, CsrfForm, Failure, FormErrors, Posted, SignedIn, render, role_name, rules_role,
    see_other,
};
use crate::session::{Session, SignedInUser};
use crate::state::AppState;

/// Notifications on one page of the inbox.
const INBOX_PAGE_SIZE: i32 = 20;
/// Requests of each kind on one page of the review list.
const REVIEWS_PAGE_SIZE: i32 = 25;
/// Longest page token taken from a URL; real ones are far shorter.
const MAX_PAGE_TOKEN_LEN: usize = 512;
/// The access service's limit on a reviewer's reason.
const MAX_REASON_CHARS: usize = 1000;

/// The kinds of notification the access service raises for reviewers.
const REGISTRATION_SUBMITTED: &str = "REGISTRATION_SUBMITTED";
const ACCESS_REQUEST_SUBMITTED: &str = "ACCESS_REQUEST_SUBMITTED";

/// This module's pages under `base`.
pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    Router::new()
        .route(&at("/notifications"), get(inbox))
        .route(&at("/notifications/read"), post(mark_read))
        .route(&at("/reviews"), get(reviews))
        .route(
            &at("/reviews/registration/{id}"),
            get(show_registration).post(decide_registration),
        )
        .route(
            &at("/reviews/registration/{id}/confirm"),
            post(confirm_registration),
        )
        .route(
            &at("/reviews/access-request/{id}"),
            get(show_access_request).post(decide_access_request),
        )
        .route(
            &at("/reviews/access-request/{id}/confirm"),
            post(confirm_access_request),
        )
}

/// Whether the active role may review registrations or access requests (into some role).
fn may_review(user: &SignedInUser) -> bool {
    let role = user.active_grant().and_then(|g| rules_role(g.role));
    role.is_some_and(|role| {
        [
            Permission::ReviewRegistrations,
            Permission::ReviewAccessRequests,
            Permission::GrantApproverRole,
        ]
        .into_iter()
        .any(|p| role_grants(role, p))
    })
}

/// The signed-in person's unread notifications, for the header. `None` when the inbox cannot
/// be read just now: the page then shows no count rather than failing.
/// The unread count for the header. A session that ended in identity ends the web session
/// here too (this is the one call the home page makes); any other failure only leaves the
/// count out.
pub(super) async fn unread_count(
    state: &AppState,
    signed_in: &SignedIn,
) -> Result<Option<i64>, Failure> {
    let answer = state
        .notifications()
        .list_notifications(state.request(
            notifications_pb::ListNotificationsRequest {
                unread_only: true,
                page_size: 1,
                page_token: String::new(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => Ok(Some(i64::from(answer.into_inner().unread_count))),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err(signed_in.failure(&status))
        }
        Err(_) => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// The inbox

#[derive(Template)]
#[template(path = "inbox_notifications.html")]
struct InboxPage {
    chrome: Chrome,
    items: Vec<InboxItem>,
    unread: i64,
    may_review: bool,
    /// The token of this page ("" for the newest).
    page_token: String,
    /// The link to the next, older page.
    older: Option<String>,
}

struct InboxItem {
    id: String,
    title: String,
    body: String,
    when: String,
    unread: bool,
    /// The review page of what the notification is about.
    review: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct InboxQuery {
    #[serde(default)]
    page_token: String,
}

/// seed 002 §5 "What will happen now?" step 1: the Notifications menu tile — the person's
/// notifications, newest first, unread ones marked.
pub async fn inbox(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<InboxQuery>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let page_token = if query.page_token.len() <= MAX_PAGE_TOKEN_LEN {
        query.page_token
    } else {
        String::new()
    };
    let answer = state
        .notifications()
        .list_notifications(state.request(
            notifications_pb::ListNotificationsRequest {
                unread_only: false,
                page_size: INBOX_PAGE_SIZE,
                page_token: page_token.clone(),
            },
            signed_in.token(),
        ))
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        // A spoilt or stale page token: start again from the newest.
        Err(status) if status.code() == Code::InvalidArgument && !page_token.is_empty() => {
            return Ok(see_other(&state, "notifications"));
        }
        Err(status) => return Err(signed_in.failure(&status)),
    };
    let chrome = Chrome::new(&state, &session);
    let base = chrome.base.clone();
    let reviewer = may_review(&signed_in.user);
    let items = answer
        .notifications
        .into_iter()
        .map(|n| InboxItem {
            review: reviewer.then(|| review_link(&base, &n)).flatten(),
            when: n
                .create_time
                .map(|t| time::when(t.seconds))
                .unwrap_or_default(),
            id: n.id,
            title: n.title,
            body: n.body,
            unread: !n.read,
        })
        .collect();
    let unread = i64::from(answer.unread_count);
    let older = (!answer.next_page_token.is_empty()).then(|| {
        format!(
            "{base}/notifications?page_token={}",
            encode(&answer.next_page_token)
        )
    });
    Ok(render(&InboxPage {
        chrome: chrome.with_unread(Some(unread)),
        items,
        unread,
        may_review: reviewer,
        page_token,
        older,
    }))
}

/// The review page of what a notification is about: the request itself when the notification
/// names it, otherwise the list of requests awaiting review.
fn review_link(base: &str, notification: &notifications_pb::Notification) -> Option<String> {
    let kind = match notification.kind.as_str() {
        REGISTRATION_SUBMITTED => Kind::Registration,
        ACCESS_REQUEST_SUBMITTED => Kind::AccessRequest,
        _ => return None,
    };
    let id = &notification.subject_id;
    if id.is_empty() {
        return Some(format!("{base}/reviews"));
    }
    Some(format!("{base}/reviews/{}/{}", kind.path(), encode(id)))
}

#[derive(Deserialize)]
pub struct MarkReadForm {
    csrf: String,
    #[serde(default)]
    notification_id: String,
    #[serde(default)]
    page_token: String,
}

impl CsrfForm for MarkReadForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// "Mark as read" on one notification; back to the same page of the inbox.
pub async fn mark_read(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<MarkReadForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let answer = state
        .notifications()
        .mark_notification_read(state.request(
            notifications_pb::MarkNotificationReadRequest {
                notification_id: form.notification_id,
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(_) => {}
        Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
            session.update(|s| {
                s.notice = Some("That notification could not be found.".into());
            });
        }
        Err(status) => return Err(signed_in.failure(&status)),
    }
    let page = if form.page_token.is_empty() || form.page_token.len() > MAX_PAGE_TOKEN_LEN {
        "notifications".to_owned()
    } else {
        format!("notifications?page_token={}", encode(&form.page_token))
    };
    Ok(see_other(&state, &page))
}

// ---------------------------------------------------------------------------------------------
// Requests awaiting review

/// What is reviewed: a self-registration or a request for access to another organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Registration,
    AccessRequest,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Registration => "registration",
            Kind::AccessRequest => "access-request",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Registration => "registration",
            Kind::AccessRequest => "access request",
        }
    }
}

#[derive(Template)]
#[template(path = "inbox_reviews.html")]
struct ReviewsPage {
    chrome: Chrome,
    registrations: Vec<Waiting>,
    more_registrations: Option<String>,
    requests: Vec<Waiting>,
    more_requests: Option<String>,
}

/// One row of the list of requests awaiting review.
struct Waiting {
    href: String,
    who: String,
    email: String,
    organisation: String,
    role: &'static str,
    reason: String,
    when: String,
}

#[derive(Deserialize, Default)]
pub struct ReviewsQuery {
    /// Page token of the registrations.
    #[serde(default)]
    registrations: String,
    /// Page token of the access requests.
    #[serde(default)]
    requests: String,
}

/// seed 002 §5 / §9 "What will happen now?": the registrations and access requests awaiting
/// the active role's review (the service limits them to the role's scope and to the roles
/// it may approve into).
pub async fn reviews(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<ReviewsQuery>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let token = |t: String| {
        if t.len() <= MAX_PAGE_TOKEN_LEN {
            t
        } else {
            String::new()
        }
    };
    let registrations = state
        .access()
        .list_registrations(state.request(
            access_pb::ListRegistrationsRequest {
                organisation_id: String::new(),
                state: access_pb::RegistrationState::Pending as i32,
                page_size: REVIEWS_PAGE_SIZE,
                page_token: token(query.registrations),
            },
            signed_in.token(),
        ))
        .await;
    let requests = state
        .access()
        .list_access_requests(state.request(
            access_pb::ListAccessRequestsRequest {
                organisation_id: String::new(),
                state: access_pb::AccessRequestState::Pending as i32,
                page_size: REVIEWS_PAGE_SIZE,
                page_token: token(query.requests),
            },
            signed_in.token(),
        ))
        .await;
    let (registrations, requests) = match (registrations, requests) {
        (Ok(r), Ok(a)) => (r.into_inner(), a.into_inner()),
        // A spoilt or stale page token: start again from the newest.
        (Err(status), _) | (_, Err(status)) if status.code() == Code::InvalidArgument => {
            return Ok(see_other(&state, "reviews"));
        }
        (Err(status), _) | (_, Err(status)) => return Err(signed_in.failure(&status)),
    };
    let chrome = Chrome::new(&state, &session);
    let base = chrome.base.clone();
    let href = |kind: Kind, id: &str| format!("{base}/reviews/{}/{}", kind.path(), encode(id));
    let waiting_registrations = registrations
        .registrations
        .iter()
        .map(|r| Waiting {
            href: href(Kind::Registration, &r.id),
            who: format!("{} {}", r.first_name, r.last_name),
            email: r.email.clone(),
            organisation: organisation(&r.organisation_name, &r.ods_code),
            role: role_name(r.role),
            reason: String::new(),
            when: r
                .create_time
                .map(|t| time::day(t.seconds))
                .unwrap_or_default(),
        })
        .collect();
    let mut waiting_requests = Vec::with_capacity(requests.access_requests.len());
    for r in &requests.access_requests {
        let account = requester(&state, &signed_in, &r.account_id).await;
        waiting_requests.push(Waiting {
            href: href(Kind::AccessRequest, &r.id),
            who: account
                .as_ref()
                .map(|a| format!("{} {}", a.first_name, a.last_name))
                .unwrap_or_default(),
            email: account.map(|a| a.email).unwrap_or_default(),
            organisation: r.organisation_name.clone(),
            role: role_name(r.role),
            reason: r.reason.clone(),
            when: r
                .create_time
                .map(|t| time::day(t.seconds))
                .unwrap_or_default(),
        });
    }
    let more = |param: &str, next: &str| {
        (!next.is_empty()).then(|| format!("{base}/reviews?{param}={}", encode(next)))
    };
    let more_registrations = more("registrations", &registrations.next_page_token);
    let more_requests = more("requests", &requests.next_page_token);
    let unread = unread_count(&state, &signed_in).await?;
    Ok(render(&ReviewsPage {
        chrome: chrome.with_unread(unread),
        registrations: waiting_registrations,
        more_registrations,
        requests: waiting_requests,
        more_requests,
    }))
}

/// The requester of an access request, when the reviewer may see the account (their grants
/// are in the reviewer's scope); otherwise the page goes without the name.
async fn requester(
    state: &AppState,
    signed_in: &SignedIn,
    account_id: &str,
) -> Option<id_pb::Account> {
    state
        .identity()
        .get_account(state.request(
            id_pb::GetAccountRequest {
                account_id: account_id.to_owned(),
            },
            signed_in.token(),
        ))
        .await
        .ok()
        .and_then(|answer| answer.into_inner().account)
}

fn organisation(name: &str, ods_code: &str) -> String {
    if ods_code.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({ods_code})")
    }
}

// ---------------------------------------------------------------------------------------------
// One request: details, Approve or Reject, Confirm

/// A request as its review pages show it.
struct Subject {
    /// The review page, under the public prefix.
    href: String,
    noun: &'static str,
    heading: String,
    details: Vec<Detail>,
    pending: bool,
    /// "Approved", "Rejected", … once decided.
    status: &'static str,
    decision_reason: String,
}

struct Detail {
    label: &'static str,
    value: String,
}

fn detail(label: &'static str, value: impl Into<String>) -> Detail {
    Detail {
        label,
        value: value.into(),
    }
}

/// The request `id` of `kind`, if the active role may see it. `Ok(None)` when there is no
/// such request in the role's scope.
async fn load(
    state: &AppState,
    signed_in: &SignedIn,
    base: &str,
    kind: Kind,
    id: &str,
) -> Result<Option<Subject>, Status> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let href = format!("{base}/reviews/{}/{id}", kind.path());
    match kind {
        Kind::Registration => Ok(find_registration(state, signed_in, id)
            .await?
            .map(|r| registration_subject(href, r))),
        Kind::AccessRequest => {
            let Some(request) = find_access_request(state, signed_in, id).await? else {
                return Ok(None);
            };
            let account = requester(state, signed_in, &request.account_id).await;
            Ok(Some(access_request_subject(href, request, account)))
        }
    }
}

/// GetRegistration with the signed-in person's token. `Ok(None)` when the service answers
/// that there is no such registration for the active role (see [`unseen`]).
async fn find_registration(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
) -> Result<Option<access_pb::Registration>, Status> {
    let answer = state
        .access()
        .get_registration(state.request(
            access_pb::GetRegistrationRequest {
                registration_id: id.to_owned(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => Ok(answer.into_inner().registration),
        Err(status) if unseen(&status) => Ok(None),
        Err(status) => Err(status),
    }
}

/// GetAccessRequest with the signed-in person's token, for a role that reviews: the service
/// also answers requesters about their own requests, but these are the reviewer's pages, so a
/// role that reviews nothing is refused them as before, whoever asked. `Ok(None)` as for
/// [`find_registration`].
async fn find_access_request(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
) -> Result<Option<access_pb::AccessRequest>, Status> {
    if !may_review(&signed_in.user) {
        return Err(Status::permission_denied(
            "the active role reviews no access requests",
        ));
    }
    let answer = state
        .access()
        .get_access_request(state.request(
            access_pb::GetAccessRequestRequest {
                access_request_id: id.to_owned(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => Ok(answer.into_inner().access_request),
        Err(status) if unseen(&status) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Whether a Get refusal means "not there for this role": the service answers a request
/// outside the role's scope exactly as one that does not exist (`PERMISSION_DENIED` with
/// `NO_GRANT_IN_SCOPE`, or `NOT_FOUND` to those who see everything). Any other refusal — the
/// role reviews nothing, the grant was revoked — is the Forbidden page.
fn unseen(status: &Status) -> bool {
    match status.code() {
        Code::NotFound => true,
        Code::PermissionDenied => status
            .get_details_error_info()
            .is_some_and(|info| info.reason == NO_GRANT_IN_SCOPE),
        _ => false,
    }
}

fn registration_subject(href: String, r: access_pb::Registration) -> Subject {
    use access_pb::RegistrationState as S;
    let name = format!("{} {}", r.first_name, r.last_name);
    let state = S::try_from(r.state).unwrap_or(S::Unspecified);
    let mut details = vec![
        detail("Name", name.clone()),
        detail("E-mail address", r.email),
        detail(
            "Organisation",
            organisation(&r.organisation_name, &r.ods_code),
        ),
        detail("Role", role_name(r.role)),
    ];
    if let Some(t) = r.create_time {
        details.push(detail("Registered", time::when(t.seconds)));
    }
    if let Some(t) = r.review_time {
        details.push(detail("Reviewed", time::when(t.seconds)));
    }
    Subject {
        href,
        noun: Kind::Registration.noun(),
        heading: format!("Registration of {name}"),
        details,
        pending: state == S::Pending,
        status: match state {
            S::Pending => "Awaiting review",
            S::Approved => "Approved",
            S::Rejected => "Rejected",
            S::Unspecified => "Unknown",
        },
        decision_reason: r.decision_reason,
    }
}

fn access_request_subject(
    href: String,
    r: access_pb::AccessRequest,
    account: Option<id_pb::Account>,
) -> Subject {
    use access_pb::AccessRequestState as S;
    let state = S::try_from(r.state).unwrap_or(S::Unspecified);
    let mut details = Vec::new();
    let heading = match account {
        Some(a) => {
            let name = format!("{} {}", a.first_name, a.last_name);
            details.push(detail("Name", name.clone()));
            details.push(detail("E-mail address", a.email));
            format!("Access request of {name}")
        }
        None => "Access request".to_owned(),
    };
    details.push(detail("Organisation", r.organisation_name));
    details.push(detail("Role", role_name(r.role)));
    details.push(detail("Reason given", r.reason));
    if let Some(t) = r.create_time {
        details.push(detail("Requested", time::when(t.seconds)));
    }
    if let Some(t) = r.review_time {
        details.push(detail("Reviewed", time::when(t.seconds)));
    }
    Subject {
        href,
        noun: Kind::AccessRequest.noun(),
        heading,
        details,
        pending: state == S::Pending,
        status: match state {
            S::Pending => "Awaiting review",
            S::Approved => "Approved",
            S::Rejected => "Rejected",
            S::Withdrawn => "Withdrawn by the requester",
            S::Unspecified => "Unknown",
        },
        decision_reason: r.decision_reason,
    }
}

#[derive(Template)]
#[template(path = "inbox_review.html")]
struct ReviewPage {
    chrome: Chrome,
    subject: Subject,
    reason: String,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "inbox_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    subject: Subject,
    approve: bool,
    reason: String,
}

#[derive(Template)]
#[template(path = "inbox_missing.html")]
struct MissingPage {
    chrome: Chrome,
    noun: &'static str,
}

/// The request's review page, the confirm page, or the page saying it is not there.
enum Step {
    Review { reason: String, errors: FormErrors },
    Confirm { approve: bool, reason: String },
}

async fn page(
    state: &AppState,
    signed_in: &SignedIn,
    kind: Kind,
    id: &str,
    step: Step,
) -> Result<Response, Failure> {
    let chrome = Chrome::new(state, &signed_in.session);
    let subject = load(state, signed_in, &chrome.base, kind, id)
        .await
        .map_err(|status| signed_in.failure(&status))?;
    let Some(subject) = subject else {
        let page = render(&MissingPage {
            chrome,
            noun: kind.noun(),
        });
        return Ok((StatusCode::NOT_FOUND, page).into_response());
    };
    Ok(match step {
        Step::Review { reason, errors } => render(&ReviewPage {
            chrome,
            subject,
            reason,
            errors,
        }),
        // A request decided meanwhile: its review page says so.
        Step::Confirm { .. } if !subject.pending => render(&ReviewPage {
            chrome,
            subject,
            reason: String::new(),
            errors: FormErrors::default(),
        }),
        Step::Confirm { approve, reason } => render(&ConfirmPage {
            chrome,
            subject,
            approve,
            reason,
        }),
    })
}

async fn show(
    state: &AppState,
    session: &Session,
    kind: Kind,
    id: &str,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(state, session).await?;
    let step = Step::Review {
        reason: String::new(),
        errors: FormErrors::default(),
    };
    page(state, &signed_in, kind, id, step).await
}

/// seed 002 §5 "What will happen now?" steps 3–4: Review opens the registration's details,
/// with Approve and Reject.
pub async fn show_registration(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    show(&state, &session, Kind::Registration, &id).await
}

/// seed 002 §9 "What will happen now?" steps 2–3: the access request's details (verify the
/// name), with Approve and Reject.
pub async fn show_access_request(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    show(&state, &session, Kind::AccessRequest, &id).await
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    /// `approve` or `reject` (the button pressed), or `change` (back from the confirm page).
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

impl CsrfForm for DecisionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The decision in a form, or what is wrong with it (by field).
fn decision(form: &DecisionForm, kind: Kind) -> Result<(bool, String), FormErrors> {
    let reason = form.reason.trim().to_owned();
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(FormErrors::summary("Choose Approve or Reject.")),
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(FormErrors::default().field(
            "reason",
            format!("Reason must be at most {MAX_REASON_CHARS} characters."),
        ));
    }
    if !approve && reason.is_empty() {
        return Err(FormErrors::default().field(
            "reason",
            format!(
                "Enter the reason for rejecting this {}: it is e-mailed to the applicant.",
                kind.noun()
            ),
        ));
    }
    Ok((approve, reason))
}

async fn decide(
    state: &AppState,
    session: &Session,
    kind: Kind,
    id: &str,
    form: &DecisionForm,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(state, session).await?;
    // "Change your decision" on the confirm page comes back here with the reason as typed.
    let step = match decision(form, kind) {
        _ if form.decision == "change" => Step::Review {
            reason: form.reason.clone(),
            errors: FormErrors::default(),
        },
        Ok((approve, reason)) => Step::Confirm { approve, reason },
        Err(errors) => Step::Review {
            reason: form.reason.clone(),
            errors,
        },
    };
    page(state, &signed_in, kind, id, step).await
}

/// seed 002 §5 step 4: Approve, or Reject with a reason — then the Confirm page.
pub async fn decide_registration(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Posted(form): Posted<DecisionForm>,
) -> Result<Response, Failure> {
    decide(&state, &session, Kind::Registration, &id, &form).await
}

/// seed 002 §9 step 3: Approve, or Reject with a reason — then the Confirm page.
pub async fn decide_access_request(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Posted(form): Posted<DecisionForm>,
) -> Result<Response, Failure> {
    decide(&state, &session, Kind::AccessRequest, &id, &form).await
}

/// What the reviewer is told once the decision is made.
fn outcome(kind: Kind, approve: bool, who: &str) -> String {
    match (kind, approve) {
        (Kind::Registration, true) => format!(
            "You approved the registration of {who}. They have been e-mailed a link to set \
             their password."
        ),
        (Kind::Registration, false) => {
            format!("You rejected the registration of {who}. They have been e-mailed your reason.")
        }
        (Kind::AccessRequest, true) => format!(
            "You approved the access request for {who}. The requester has been e-mailed and \
             can work in the role from their next sign-in."
        ),
        (Kind::AccessRequest, false) => format!(
            "You rejected the access request for {who}. They have been e-mailed your reason."
        ),
    }
}

async fn confirm(
    state: &AppState,
    session: &Session,
    kind: Kind,
    id: &str,
    form: &DecisionForm,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(state, session).await?;
    let (approve, reason) = match decision(form, kind) {
        Ok(decided) => decided,
        Err(errors) => {
            let step = Step::Review {
                reason: form.reason.clone(),
                errors,
            };
            return page(state, &signed_in, kind, id, step).await;
        }
    };
    let verdict = if approve {
        access_pb::Decision::Approve
    } else {
        access_pb::Decision::Reject
    } as i32;
    let answer = match kind {
        Kind::Registration => state
            .access()
            .review_registration(state.request(
                access_pb::ReviewRegistrationRequest {
                    registration_id: id.to_owned(),
                    decision: verdict,
                    reason: reason.clone(),
                },
                signed_in.token(),
            ))
            .await
            .map(|answer| {
                answer
                    .into_inner()
                    .registration
                    .map(|r| format!("{} {}", r.first_name, r.last_name))
                    .unwrap_or_default()
            }),
        Kind::AccessRequest => state
            .access()
            .review_access_request(state.request(
                access_pb::ReviewAccessRequestRequest {
                    access_request_id: id.to_owned(),
                    decision: verdict,
                    reason: reason.clone(),
                },
                signed_in.token(),
            ))
            .await
            .map(|answer| {
                answer
                    .into_inner()
                    .access_request
                    .map(|r| format!("{}, {}", role_name(r.role), r.organisation_name))
                    .unwrap_or_default()
            }),
    };
    match answer {
        Ok(who) => {
            let notice = outcome(kind, approve, &who);
            session.update(|s| s.notice = Some(notice));
            Ok(see_other(state, "reviews"))
        }
        Err(status) => {
            let errors = refusal(&signed_in, &status)?;
            let step = Step::Review { reason, errors };
            page(state, &signed_in, kind, id, step).await
        }
    }
}

/// Words for a refused review, shown on the request's page; a refusal that is not about the
/// decision (no permission, the session ended, the service is down) is that failure's page.
fn refusal(signed_in: &SignedIn, status: &Status) -> Result<FormErrors, Failure> {
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default();
    match (status.code(), reason.as_str()) {
        (Code::PermissionDenied, "OWN_REQUEST") => Ok(FormErrors::summary(
            "You cannot review your own request: another administrator must.",
        )),
        (Code::FailedPrecondition, "REGISTRATION_NOT_PENDING" | "ACCESS_REQUEST_NOT_PENDING") => {
            Ok(FormErrors::summary(
                "This request has already been decided or withdrawn.",
            ))
        }
        (Code::NotFound, _) => Ok(FormErrors::summary("This request could not be found.")),
        (Code::InvalidArgument | Code::FailedPrecondition, _) => {
            FormErrors::from_status(status, &[("reason", "reason", "Reason")])
        }
        _ => Err(signed_in.failure(status)),
    }
}

/// seed 002 §5 step 5: Confirm — the registration is approved or rejected.
pub async fn confirm_registration(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Posted(form): Posted<DecisionForm>,
) -> Result<Response, Failure> {
    confirm(&state, &session, Kind::Registration, &id, &form).await
}

/// seed 002 §9 step 4: Confirm — the access request is approved (the grant made) or
/// rejected.
pub async fn confirm_access_request(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Posted(form): Posted<DecisionForm>,
) -> Result<Response, Failure> {
    confirm(&state, &session, Kind::AccessRequest, &id, &form).await
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// A query-string value.
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_needs_a_reason() {
        let form = |decision: &str, reason: &str| DecisionForm {
            csrf: String::new(),
            decision: decision.into(),
            reason: reason.into(),
        };
        let errors = decision(&form("reject", "  "), Kind::Registration).unwrap_err();
        assert!(errors.has("reason"));
        assert!(decision(&form("", "x"), Kind::Registration).is_err());
        assert_eq!(
            decision(&form("approve", ""), Kind::AccessRequest).ok(),
            Some((true, String::new()))
        );
        assert_eq!(
            decision(&form("reject", " not known here "), Kind::Registration).ok(),
            Some((false, "not known here".into()))
        );
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert!(
            decision(&form("approve", &long), Kind::Registration)
                .unwrap_err()
                .has("reason")
        );
    }
}
