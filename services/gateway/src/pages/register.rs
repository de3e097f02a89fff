//! Self-registration (seed 002 §5 "Registering for an Account") and, under My profile, the
//! person's own access pages (seed 002 §9 "Requesting Access To Another Organisation" with
//! Available Roles and Withdraw, §15 "Notification Settings", §11 "Disabling Your CQRS Local
//! Account").
//!
//! No page needs script: organisations are found with a GET search form whose matches come
//! back as radio buttons; each multi-step form carries its earlier answers in hidden fields;
//! every form that changes something carries a request id (where the service keys on one) so
//! that sending it twice does it once.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use cqrs_proto::access::v1::{self as access_pb, submit_registration_request::Organisation};
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_rules::organisation::{OrganisationKind, role_valid_at};
use cqrs_rules::roles::Role as RulesRole;
use serde::Deserialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use super::time;
use super::{
    Chrome, CsrfForm, Failure, FormErrors, Posted, SignedIn, grant_label, render, role_name,
    rules_role, see_other,
};
use crate::session::Session;
use crate::state::AppState;

/// This module's pages under `base`.
pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    Router::new()
        .route(
            &at("/register"),
            get(show_registration).post(submit_registration),
        )
        .route(&at("/profile/access"), get(show_access))
        .route(&at("/profile/access/withdraw"), post(withdraw_request))
        .route(&at("/profile/access/new"), get(show_request_search))
        .route(
            &at("/profile/access/new/details"),
            get(show_request_details).post(change_request_details),
        )
        .route(&at("/profile/access/new/confirm"), post(confirm_request))
        .route(&at("/profile/access/new/send"), post(send_request))
        .route(
            &at("/profile/notifications"),
            get(show_notifications).post(save_notifications),
        )
        .route(
            &at("/profile/disable"),
            get(show_disable).post(disable_account),
        )
}

// ---------------------------------------------------------------------------------------------
// Roles and organisations
// ---------------------------------------------------------------------------------------------

/// Whether a role can be asked for, by self-registration or an access request: every role
/// but SERVICE_DESK, as the access service's `requestable` rule says (the desk invites its
/// own members).
fn requestable(role: RulesRole) -> bool {
    role != RulesRole::ServiceDesk
}

/// The `cqrs.common.v1.Role` number of a rules role (the proto numbers them in the rules'
/// order, from 1; the inverse of [`rules_role`]).
fn proto_role(role: RulesRole) -> i32 {
    RulesRole::ALL
        .iter()
        .position(|r| *r == role)
        .and_then(|i| i32::try_from(i + 1).ok())
        .unwrap_or_default()
}

/// The requestable role a form's `role` field names.
fn requested_role(raw: &str) -> Option<RulesRole> {
    raw.trim()
        .parse::<i32>()
        .ok()
        .and_then(rules_role)
        .filter(|role| requestable(*role))
}

fn organisation_kind(org: &dir_pb::Organisation) -> Option<OrganisationKind> {
    use dir_pb::OrganisationKind as P;
    match P::try_from(org.kind).ok()? {
        P::Region => Some(OrganisationKind::Region),
        P::CommissioningOrganisation => Some(OrganisationKind::CommissioningOrganisation),
        P::ServiceProvider => Some(OrganisationKind::ServiceProvider),
        P::ServiceDesk => Some(OrganisationKind::ServiceDesk),
        P::Unspecified => None,
    }
}

fn kind_label(kind: OrganisationKind) -> &'static str {
    match kind {
        OrganisationKind::Region => "region",
        OrganisationKind::CommissioningOrganisation => "commissioning organisation",
        OrganisationKind::ServiceProvider => "GP practice",
        OrganisationKind::ServiceDesk => "service desk",
    }
}

/// Whether some role can be asked for at an organisation of `kind` (not at a service desk).
fn offers_roles(kind: OrganisationKind) -> bool {
    RulesRole::ALL
        .into_iter()
        .any(|role| requestable(role) && role_valid_at(role, kind))
}

/// One option of a role select.
struct RoleChoice {
    value: i32,
    label: &'static str,
    selected: bool,
}

/// An `<optgroup>` of the registration's role select.
struct RoleGroup {
    label: &'static str,
    roles: Vec<RoleChoice>,
}

fn role_choice(role: RulesRole, selected: Option<RulesRole>) -> RoleChoice {
    let value = proto_role(role);
    RoleChoice {
        value,
        label: role_name(value),
        selected: selected == Some(role),
    }
}

/// The roles self-registration offers, grouped by where they are held.
fn registration_roles(selected: Option<RulesRole>) -> Vec<RoleGroup> {
    [
        (
            OrganisationKind::CommissioningOrganisation,
            "At a commissioning organisation (CCG) or region",
        ),
        (OrganisationKind::ServiceProvider, "At a GP practice"),
    ]
    .into_iter()
    .map(|(kind, label)| RoleGroup {
        label,
        roles: RulesRole::ALL
            .into_iter()
            .filter(|role| requestable(*role) && role_valid_at(*role, kind))
            .map(|role| role_choice(role, selected))
            .collect(),
    })
    .collect()
}

/// An organisation offered as a radio button.
struct OrgChoice {
    id: String,
    name: String,
    ods_code: String,
    kind: &'static str,
    checked: bool,
}

/// The organisation search (a GET form) and its matches.
#[derive(Default)]
struct Search {
    query: String,
    /// A search ran (the matches, possibly none, are shown).
    searched: bool,
    results: Vec<OrgChoice>,
    /// More organisations match than are shown.
    more: bool,
    /// Errors of the search field (`q`).
    errors: FormErrors,
}

/// How many matches a search shows.
const SEARCH_PAGE: i32 = 20;

/// SearchOrganisations (public) for `raw`; the organisation `chosen` (an id) is checked.
/// Service-desk organisations are left out: no role there can be asked for.
async fn search_organisations(
    state: &AppState,
    raw: &str,
    chosen: &str,
) -> Result<Search, Failure> {
    let query = raw.trim().to_owned();
    if query.is_empty() {
        return Ok(Search::default());
    }
    let answer = state
        .directory()
        .search_organisations(state.request(
            dir_pb::SearchOrganisationsRequest {
                query: query.clone(),
                kind: dir_pb::OrganisationKind::Unspecified as i32,
                page_size: SEARCH_PAGE,
                page_token: String::new(),
            },
            None,
        ))
        .await;
    match answer {
        Ok(answer) => {
            let answer = answer.into_inner();
            let results = answer
                .organisations
                .into_iter()
                .filter_map(|org| {
                    let kind = organisation_kind(&org).filter(|kind| offers_roles(*kind))?;
                    Some(OrgChoice {
                        checked: !chosen.is_empty() && org.id == chosen,
                        id: org.id,
                        name: org.name,
                        ods_code: org.ods_code,
                        kind: kind_label(kind),
                    })
                })
                .collect();
            Ok(Search {
                query,
                searched: true,
                results,
                more: !answer.next_page_token.is_empty(),
                errors: FormErrors::default(),
            })
        }
        Err(status) => Ok(Search {
            errors: FormErrors::from_status(
                &status,
                &[("query", "q", "Organisation name or ODS code")],
            )?,
            query,
            ..Search::default()
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

fn reason_of(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// Words for the refusals of this module's calls that the shared words do not cover.
fn refusal_words(status: &Status) -> Option<&'static str> {
    Some(match (status.code(), reason_of(status).as_str()) {
        (_, "SELF_REGISTRATION_DISABLED") => {
            "Registering yourself is turned off. Ask an administrator of your organisation to \
             invite you."
        }
        (_, "ALREADY_GRANTED") => "You already have this role at this organisation.",
        (_, "ACCESS_REQUEST_PENDING") => {
            "You have already asked for this role at this organisation, and that request is \
             waiting for review."
        }
        (_, "ACCESS_REQUEST_NOT_PENDING") => {
            "That request has already been decided or withdrawn, so it cannot be withdrawn now."
        }
        (_, "REQUEST_ID_REUSED") => {
            "This form was sent already with other details. Check the details and send it \
             again to make a new request."
        }
        (_, "ACCOUNT_NOT_ACTIVE") => {
            "Your account cannot be disabled now. Contact the service desk."
        }
        (Code::NotFound, _) => {
            "That organisation no longer exists. Search again and choose another one."
        }
        _ => return None,
    })
}

/// The messages for a refused form: this module's words first, else the shared mapping.
fn form_errors(status: &Status, labels: &[(&str, &str, &str)]) -> Result<FormErrors, Failure> {
    match refusal_words(status) {
        Some(words) => Ok(FormErrors::summary(words)),
        None => FormErrors::from_status(status, labels),
    }
}

/// A refused role was one of those the form offered (any other is refused before the call),
/// so what is wrong is where it is held: say so in words rather than the service's codes.
fn misplaced_role(errors: &mut FormErrors) {
    if errors.has("role") {
        errors.fields.insert(
            "role".to_owned(),
            vec![
                "This role cannot be held at the organisation you chose: practice roles are \
                 for GP practices, commissioning roles for commissioning organisations and \
                 regions."
                    .to_owned(),
            ],
        );
    }
}

/// A refusal about the person's session or role rather than the form.
fn about_the_session(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

/// A form's request id, or a fresh one when it carries none that parses.
fn request_id_of(raw: &str) -> String {
    Uuid::parse_str(raw.trim())
        .unwrap_or_else(|_| Uuid::new_v4())
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Register (seed 002 §5)
// ---------------------------------------------------------------------------------------------

/// What the registration form shows in its fields.
#[derive(Default)]
struct RegisterValues {
    request_id: String,
    email: String,
    ods_code: String,
    first_name: String,
    last_name: String,
}

#[derive(Template)]
#[template(path = "register_form.html")]
struct RegisterPage {
    chrome: Chrome,
    search_action: &'static str,
    search: Search,
    values: RegisterValues,
    roles: Vec<RoleGroup>,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "register_submitted.html")]
struct SubmittedPage {
    chrome: Chrome,
}

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// Seed 002 §5 "Registering for an Account": the Registration page (public), with the
/// organisation search.
pub async fn show_registration(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<SearchQuery>,
) -> Result<Response, Failure> {
    let search = search_organisations(&state, &query.q, "").await?;
    Ok(render(&RegisterPage {
        chrome: Chrome::new(&state, &session),
        search_action: "/register",
        search,
        values: RegisterValues {
            request_id: Uuid::new_v4().to_string(),
            ..RegisterValues::default()
        },
        roles: registration_roles(None),
        errors: FormErrors::default(),
    }))
}

#[derive(Deserialize)]
pub struct RegisterForm {
    csrf: String,
    #[serde(default)]
    request_id: String,
    /// The search whose matches the form showed, to show them again.
    #[serde(default)]
    q: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    organisation_id: String,
    #[serde(default)]
    ods_code: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

impl CsrfForm for RegisterForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Seed 002 §5, the Register button: SubmitRegistration, then "your request is under review"
/// — the same page whatever the address (the access service answers alike too).
pub async fn submit_registration(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<RegisterForm>,
) -> Result<Response, Failure> {
    let mut values = RegisterValues {
        request_id: request_id_of(&form.request_id),
        email: form.email.trim().to_owned(),
        ods_code: form.ods_code.trim().to_owned(),
        first_name: form.first_name.trim().to_owned(),
        last_name: form.last_name.trim().to_owned(),
    };
    let organisation_id = form.organisation_id.trim().to_owned();
    let role = requested_role(&form.role);
    let mut errors = FormErrors::default();
    if values.email.is_empty() {
        errors = errors.field("email", "Enter your e-mail address.");
    }
    let organisation = match (organisation_id.is_empty(), values.ods_code.is_empty()) {
        (false, true) => Some(Organisation::OrganisationId(organisation_id.clone())),
        (true, false) => Some(Organisation::OdsCode(values.ods_code.clone())),
        (true, true) => {
            errors = errors.field(
                "organisation",
                "Choose your organisation from the search results, or enter its ODS code.",
            );
            None
        }
        (false, false) => {
            errors = errors.field(
                "organisation",
                "Choose an organisation from the list or enter an ODS code, not both.",
            );
            None
        }
    };
    if role.is_none() {
        errors = errors.field("role", "Choose the role you will have.");
    }
    if values.first_name.is_empty() {
        errors = errors.field("first_name", "Enter your first name.");
    }
    if values.last_name.is_empty() {
        errors = errors.field("last_name", "Enter your last name.");
    }
    if let (true, Some(organisation), Some(role)) = (errors.is_empty(), organisation, role) {
        let answer = state
            .access()
            .submit_registration(state.request(
                access_pb::SubmitRegistrationRequest {
                    request_id: values.request_id.clone(),
                    email: values.email.clone(),
                    organisation: Some(organisation),
                    role: proto_role(role),
                    first_name: values.first_name.clone(),
                    last_name: values.last_name.clone(),
                },
                None,
            ))
            .await;
        match answer {
            Ok(_) => {
                return Ok(render(&SubmittedPage {
                    chrome: Chrome::new(&state, &session),
                }));
            }
            Err(status) => {
                let reason = reason_of(&status);
                errors = form_errors(
                    &status,
                    &[
                        ("email", "email", "E-mail address"),
                        ("organisation_id", "organisation", "Organisation"),
                        ("ods_code", "ods_code", "ODS code"),
                        ("role", "role", "Role"),
                        ("first_name", "first_name", "First name"),
                        ("last_name", "last_name", "Last name"),
                    ],
                )?;
                if reason == "GENERIC_EMAIL_NOT_PERMITTED" {
                    errors.fields.insert(
                        "email".to_owned(),
                        vec![
                            "Use your own e-mail address: generic or shared mailboxes (such as \
                             admin@, info@ or reception@) are not accepted."
                                .to_owned(),
                        ],
                    );
                }
                misplaced_role(&mut errors);
                if reason == "REQUEST_ID_REUSED" {
                    values.request_id = Uuid::new_v4().to_string();
                }
            }
        }
    }
    let search = search_organisations(&state, &form.q, &organisation_id).await?;
    Ok(render(&RegisterPage {
        chrome: Chrome::new(&state, &session),
        search_action: "/register",
        search,
        values,
        roles: registration_roles(role),
        errors,
    }))
}

// ---------------------------------------------------------------------------------------------
// Available roles and access requests (seed 002 §9, "Available Roles" with Withdraw)
// ---------------------------------------------------------------------------------------------

struct RequestRow {
    id: String,
    organisation: String,
    role: &'static str,
    reason: String,
    requested: String,
    state: &'static str,
    pending: bool,
    decision_reason: String,
}

#[derive(Template)]
#[template(path = "register_access.html")]
struct AccessPage {
    chrome: Chrome,
    roles: Vec<String>,
    requests: Vec<RequestRow>,
    more: bool,
    errors: FormErrors,
}

/// How many of one's own requests the page lists (the newest).
const REQUESTS_PAGE: i32 = 100;

fn state_label(state: i32) -> &'static str {
    use access_pb::AccessRequestState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Pending => "Pending",
        S::Approved => "Approved",
        S::Rejected => "Rejected",
        S::Withdrawn => "Withdrawn",
        S::Unspecified => "Unknown",
    }
}

async fn access_page(
    state: &AppState,
    signed_in: &SignedIn,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let answer = state
        .access()
        .list_my_access_requests(state.request(
            access_pb::ListMyAccessRequestsRequest {
                state: access_pb::AccessRequestState::Unspecified as i32,
                page_size: REQUESTS_PAGE,
                page_token: String::new(),
            },
            signed_in.token(),
        ))
        .await
        .map_err(|status| signed_in.failure(&status))?
        .into_inner();
    let requests = answer
        .access_requests
        .into_iter()
        .map(|r| RequestRow {
            pending: r.state == access_pb::AccessRequestState::Pending as i32,
            state: state_label(r.state),
            role: role_name(r.role),
            requested: r
                .create_time
                .map(|t| time::day(t.seconds))
                .unwrap_or_default(),
            id: r.id,
            organisation: r.organisation_name,
            reason: r.reason,
            decision_reason: r.decision_reason,
        })
        .collect();
    Ok(render(&AccessPage {
        chrome: Chrome::new(state, &signed_in.session),
        roles: signed_in
            .user
            .grants
            .iter()
            .map(|g| grant_label(g.role, &g.organisation_name))
            .collect(),
        requests,
        more: !answer.next_page_token.is_empty(),
        errors,
    }))
}

/// Seed 002 §9 steps 10-14: My profile → Available Roles (the roles one holds) and one's
/// access requests with their status, a pending one with Withdraw.
pub async fn show_access(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    access_page(&state, &signed_in, FormErrors::default()).await
}

#[derive(Deserialize)]
pub struct WithdrawForm {
    csrf: String,
    #[serde(default)]
    access_request_id: String,
}

impl CsrfForm for WithdrawForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Seed 002 §9 step 14, the Withdraw button: WithdrawAccessRequest (the requester only).
pub async fn withdraw_request(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<WithdrawForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let answer = state
        .access()
        .withdraw_access_request(state.request(
            access_pb::WithdrawAccessRequestRequest {
                access_request_id: form.access_request_id.trim().to_owned(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => {
            let notice = match answer.into_inner().access_request {
                Some(r) => format!(
                    "Your request for {} has been withdrawn.",
                    grant_label(r.role, &r.organisation_name)
                ),
                None => "Your request has been withdrawn.".to_owned(),
            };
            session.update(|s| s.notice = Some(notice));
            Ok(see_other(&state, "profile/access"))
        }
        Err(status) if about_the_session(&status) => Err(signed_in.failure(&status)),
        Err(status) => {
            let errors = form_errors(&status, &[])?;
            access_page(&state, &signed_in, errors).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request Access (seed 002 §9 steps 3-9)
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "register_request.html")]
struct RequestSearchPage {
    chrome: Chrome,
    search_action: &'static str,
    search: Search,
    errors: FormErrors,
}

/// Seed 002 §9 steps 3-5: Request Access → search the organisation, choose it, Next.
pub async fn show_request_search(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<SearchQuery>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let search = search_organisations(&state, &query.q, "").await?;
    Ok(render(&RequestSearchPage {
        chrome: Chrome::new(&state, &signed_in.session),
        search_action: "/profile/access/new",
        search,
        errors: FormErrors::default(),
    }))
}

/// The organisation an access request is for.
struct ChosenOrg {
    id: String,
    name: String,
    ods_code: String,
}

/// What the role-and-reason form shows.
struct RequestValues {
    role: Option<RulesRole>,
    reason: String,
}

#[derive(Template)]
#[template(path = "register_request_details.html")]
struct RequestDetailsPage {
    chrome: Chrome,
    organisation: ChosenOrg,
    roles: Vec<RoleChoice>,
    reason: String,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "register_request_confirm.html")]
struct RequestConfirmPage {
    chrome: Chrome,
    organisation: ChosenOrg,
    request_id: String,
    role: i32,
    role_label: &'static str,
    reason: String,
}

/// GetOrganisation (any signed-in user) for the chosen id; `None` when there is none.
async fn chosen_organisation(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
) -> Result<Option<(ChosenOrg, OrganisationKind)>, Failure> {
    if Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let answer = state
        .directory()
        .get_organisation(state.request(
            dir_pb::GetOrganisationRequest {
                organisation_id: id.to_owned(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => Ok(answer.into_inner().organisation.and_then(|org| {
            let kind = organisation_kind(&org).filter(|kind| offers_roles(*kind))?;
            Some((
                ChosenOrg {
                    id: org.id,
                    name: org.name,
                    ods_code: org.ods_code,
                },
                kind,
            ))
        })),
        Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
        Err(status) => Err(signed_in.failure(&status)),
    }
}

/// The roles one may ask for at an organisation of `kind`: those valid there that one does
/// not hold there already.
fn request_roles(
    signed_in: &SignedIn,
    organisation_id: &str,
    kind: OrganisationKind,
    selected: Option<RulesRole>,
) -> Vec<RoleChoice> {
    RulesRole::ALL
        .into_iter()
        .filter(|role| requestable(*role) && role_valid_at(*role, kind))
        .filter(|role| {
            !signed_in
                .user
                .grants
                .iter()
                .any(|g| g.organisation_id == organisation_id && g.role == proto_role(*role))
        })
        .map(|role| role_choice(role, selected))
        .collect()
}

/// The role-and-reason page for the organisation `organisation_id`, or the search page again
/// when it names none.
async fn details_page(
    state: &AppState,
    signed_in: &SignedIn,
    organisation_id: &str,
    values: RequestValues,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let Some((organisation, kind)) = chosen_organisation(state, signed_in, organisation_id).await?
    else {
        return Ok(render(&RequestSearchPage {
            chrome: Chrome::new(state, &signed_in.session),
            search_action: "/profile/access/new",
            search: Search::default(),
            errors: FormErrors::summary(
                "That organisation could not be found. Search again and choose one from the list.",
            ),
        }));
    };
    let roles = request_roles(signed_in, &organisation.id, kind, values.role);
    Ok(render(&RequestDetailsPage {
        chrome: Chrome::new(state, &signed_in.session),
        organisation,
        roles,
        reason: values.reason,
        errors,
    }))
}

#[derive(Deserialize, Default)]
pub struct DetailsQuery {
    #[serde(default)]
    organisation_id: String,
    #[serde(default)]
    q: String,
}

/// Seed 002 §9 step 6: the role at the chosen organisation and a reason.
pub async fn show_request_details(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<DetailsQuery>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let organisation_id = query.organisation_id.trim();
    if organisation_id.is_empty() {
        // Next without a choice: the same matches again, with the error by the list.
        let search = search_organisations(&state, &query.q, "").await?;
        return Ok(render(&RequestSearchPage {
            chrome: Chrome::new(&state, &signed_in.session),
            search_action: "/profile/access/new",
            search,
            errors: FormErrors::default()
                .field("organisation", "Choose an organisation from the list."),
        }));
    }
    details_page(
        &state,
        &signed_in,
        organisation_id,
        RequestValues {
            role: None,
            reason: String::new(),
        },
        FormErrors::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct RequestForm {
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    organisation_id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    reason: String,
}

impl CsrfForm for RequestForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Seed 002 §9, Change on the confirm page: the role-and-reason form again, as filled in.
pub async fn change_request_details(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<RequestForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    details_page(
        &state,
        &signed_in,
        form.organisation_id.trim(),
        RequestValues {
            role: requested_role(&form.role),
            reason: form.reason,
        },
        FormErrors::default(),
    )
    .await
}

/// The role and reason of a request form, or the errors to show by their fields.
fn check_request(form: &RequestForm) -> Result<(RulesRole, String), FormErrors> {
    let role = requested_role(&form.role);
    let reason = form.reason.trim().to_owned();
    let mut errors = FormErrors::default();
    if role.is_none() {
        errors = errors.field("role", "Choose the role you need.");
    }
    if reason.is_empty() {
        errors = errors.field("reason", "Enter why you need this access.");
    }
    match role {
        Some(role) if errors.is_empty() => Ok((role, reason)),
        _ => Err(errors),
    }
}

/// Seed 002 §9 steps 7-8: Next → confirm that all the information is correct.
pub async fn confirm_request(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<RequestForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let organisation_id = form.organisation_id.trim();
    let (role, reason) = match check_request(&form) {
        Ok(checked) => checked,
        Err(errors) => {
            let values = RequestValues {
                role: requested_role(&form.role),
                reason: form.reason.clone(),
            };
            return details_page(&state, &signed_in, organisation_id, values, errors).await;
        }
    };
    let Some((organisation, _)) = chosen_organisation(&state, &signed_in, organisation_id).await?
    else {
        let values = RequestValues {
            role: Some(role),
            reason,
        };
        return details_page(
            &state,
            &signed_in,
            organisation_id,
            values,
            FormErrors::default(),
        )
        .await;
    };
    let value = proto_role(role);
    Ok(render(&RequestConfirmPage {
        chrome: Chrome::new(&state, &signed_in.session),
        organisation,
        request_id: Uuid::new_v4().to_string(),
        role: value,
        role_label: role_name(value),
        reason,
    }))
}

/// Seed 002 §9 step 9, Send: RequestAccess, then back to Available Roles with a notice.
pub async fn send_request(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<RequestForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let organisation_id = form.organisation_id.trim().to_owned();
    let (role, reason) = match check_request(&form) {
        Ok(checked) => checked,
        Err(errors) => {
            let values = RequestValues {
                role: requested_role(&form.role),
                reason: form.reason.clone(),
            };
            return details_page(&state, &signed_in, &organisation_id, values, errors).await;
        }
    };
    let answer = state
        .access()
        .request_access(state.request(
            access_pb::RequestAccessRequest {
                request_id: request_id_of(&form.request_id),
                organisation_id: organisation_id.clone(),
                role: proto_role(role),
                reason: reason.clone(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(answer) => {
            let sent = answer.into_inner().access_request.map_or_else(
                || grant_label(proto_role(role), "the organisation"),
                |r| grant_label(r.role, &r.organisation_name),
            );
            session.update(|s| {
                s.notice = Some(format!(
                    "Your request for access as {sent} has been sent. An administrator will \
                     review it; its status is shown below."
                ));
            });
            Ok(see_other(&state, "profile/access"))
        }
        Err(status) if about_the_session(&status) => Err(signed_in.failure(&status)),
        Err(status) => {
            let mut errors = form_errors(
                &status,
                &[("role", "role", "Role"), ("reason", "reason", "Reason")],
            )?;
            misplaced_role(&mut errors);
            let values = RequestValues {
                role: Some(role),
                reason,
            };
            details_page(&state, &signed_in, &organisation_id, values, errors).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Notification settings (seed 002 §15)
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "register_notifications.html")]
struct NotificationsPage {
    chrome: Chrome,
    email_enabled: bool,
}

/// Seed 002 §15: My profile → Notification Settings, the "send me notifications" option.
pub async fn show_notifications(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let preferences = state
        .notifications()
        .get_preferences(state.request(
            notifications_pb::GetPreferencesRequest {},
            signed_in.token(),
        ))
        .await
        .map_err(|status| signed_in.failure(&status))?
        .into_inner()
        .preferences;
    Ok(render(&NotificationsPage {
        chrome: Chrome::new(&state, &signed_in.session),
        // Absent preferences mean e-mail is enabled.
        email_enabled: preferences.is_none_or(|p| p.email_enabled),
    }))
}

#[derive(Deserialize)]
pub struct NotificationsForm {
    csrf: String,
    /// Present (any value) when the box is ticked.
    #[serde(default)]
    email_enabled: Option<String>,
}

impl CsrfForm for NotificationsForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Seed 002 §15 step 5, Save: UpdatePreferences.
pub async fn save_notifications(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<NotificationsForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let email_enabled = form.email_enabled.is_some();
    state
        .notifications()
        .update_preferences(state.request(
            notifications_pb::UpdatePreferencesRequest { email_enabled },
            signed_in.token(),
        ))
        .await
        .map_err(|status| signed_in.failure(&status))?;
    let notice = if email_enabled {
        "Your notification settings have been saved: notifications will be e-mailed to you."
    } else {
        "Your notification settings have been saved: notifications will not be e-mailed to you."
    };
    session.update(|s| s.notice = Some(notice.to_owned()));
    Ok(see_other(&state, "profile/notifications"))
}

// ---------------------------------------------------------------------------------------------
// Disable my account (seed 002 §11)
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "register_disable.html")]
struct DisablePage {
    chrome: Chrome,
    reason: String,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "register_disabled.html")]
struct DisabledPage {
    chrome: Chrome,
}

/// Seed 002 §11 steps 3-4: My profile → Disable Account, what it means and Confirm Disable.
pub async fn show_disable(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    Ok(render(&DisablePage {
        chrome: Chrome::new(&state, &signed_in.session),
        reason: String::new(),
        errors: FormErrors::default(),
    }))
}

#[derive(Deserialize)]
pub struct DisableForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl CsrfForm for DisableForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Seed 002 §11 step 5, Confirm Disable: DisableAccount on one's own account (its identity
/// sessions end), the web session ends, and the page says how to have it re-enabled.
pub async fn disable_account(
    State(state): State<AppState>,
    session: Session,
    Posted(form): Posted<DisableForm>,
) -> Result<Response, Failure> {
    let signed_in = SignedIn::require(&state, &session).await?;
    let reason = form.reason.trim().to_owned();
    let answer = state
        .identity()
        .disable_account(state.request(
            id_pb::DisableAccountRequest {
                account_id: signed_in.user.account_id.clone(),
                reason: reason.clone(),
            },
            signed_in.token(),
        ))
        .await;
    match answer {
        Ok(_) => {
            session.update(|s| {
                s.user = None;
                s.notice = None;
            });
            let chrome = Chrome::new(&state, &session);
            session.end();
            Ok(render(&DisabledPage { chrome }))
        }
        Err(status) if about_the_session(&status) => Err(signed_in.failure(&status)),
        Err(status) => {
            let errors = form_errors(&status, &[("reason", "reason", "Reason")])?;
            Ok(render(&DisablePage {
                chrome: Chrome::new(&state, &signed_in.session),
                reason,
                errors,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_days() {
        assert_eq!(time::day(0), "1 January 1970");
        assert_eq!(time::day(951_782_400), "29 February 2000");
        assert_eq!(time::day(1_741_132_800 + 3_600), "5 March 2025");
        assert_eq!(time::day(-86_400), "31 December 1969");
    }

    #[test]
    fn requestable_roles_round_trip_and_leave_out_the_desk() {
        for role in RulesRole::ALL {
            assert_eq!(rules_role(proto_role(role)), Some(role));
        }
        assert_eq!(
            requested_role(&proto_role(RulesRole::ServiceDesk).to_string()),
            None
        );
        assert_eq!(
            requested_role(&proto_role(RulesRole::PracticeUser).to_string()),
            Some(RulesRole::PracticeUser)
        );
        assert_eq!(requested_role(""), None);
        let offered: usize = registration_roles(None)
            .iter()
            .map(|group| group.roles.len())
            .sum();
        assert_eq!(offered, RulesRole::ALL.len() - 1);
        assert!(!offers_roles(OrganisationKind::ServiceDesk));
    }
}
