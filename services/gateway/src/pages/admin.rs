//! Users (administrators, seed 002): members in scope, Invite, invitations, disable /
//! re-enable / revoke, the multi-level approval tick box of a practice.
//!
//! Every page works out what the active role may do from the rules' role table and offers only
//! that; the services check again and refuse anyway. "In scope" is the active grant's
//! organisation and its descendants (the whole suite for the service desk), walked with
//! ListOrganisations; an organisation asked for by id or ODS code is checked against its
//! ancestry (`Organisation.path`).

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::identity::v1 as id_pb;
use cqrs_rules::account::normalise_name;
use cqrs_rules::decision::has_suite_scope;
use cqrs_rules::email::{EmailError, normalise_email};
use cqrs_rules::organisation::{OrganisationKind, normalise_ods_code, role_valid_at};
use cqrs_rules::roles::{Permission, Role, role_grants};
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

/// Most organisations a page lists from the scope; beyond, one is found by its ODS code.
const MAX_LISTED_ORGANISATIONS: usize = 500;
/// Page size of the lists shown (members, invitations).
const LIST_PAGE: i32 = 50;
/// Page size of the organisation walk.
const WALK_PAGE: i32 = 100;
/// Account look-ups in flight at once for a page of members.
const LOOKUPS_IN_FLIGHT: usize = 8;
/// Longest reason for disabling (identity's limit).
const MAX_DISABLE_REASON: usize = 500;

/// This module's pages under `base`.
pub fn routes(base: &str) -> Router<AppState> {
    let at = |page: &str| format!("{base}{page}");
    Router::new()
        .route(&at("/users"), get(members))
        .route(&at("/users/invite"), get(invite_start).post(invite_step))
        .route(&at("/users/invitations"), get(invitations))
        .route(
            &at("/users/invitations/{invitation_id}/resend"),
            post(resend_invitation),
        )
        .route(
            &at("/users/invitations/{invitation_id}/cancel"),
            post(cancel_invitation),
        )
        .route(&at("/users/providers"), get(providers))
        .route(
            &at("/users/providers/{organisation_id}"),
            get(provider).post(set_approval_level),
        )
        .route(&at("/users/{account_id}"), get(person))
        .route(
            &at("/users/{account_id}/disable"),
            get(confirm_disable).post(disable),
        )
        .route(
            &at("/users/{account_id}/enable"),
            get(confirm_enable).post(enable),
        )
        .route(
            &at("/users/{account_id}/revoke"),
            get(confirm_revoke).post(revoke),
        )
}

// ---------------------------------------------------------------------------------------------
// What the active role is and may do.

/// The active grant, as the rules see it.
struct Acting {
    role: Role,
    organisation_id: String,
    suite: bool,
}

impl Acting {
    fn of(signed_in: &SignedIn) -> Result<Acting, Failure> {
        let grant = signed_in.user.active_grant().ok_or(Failure::Forbidden)?;
        let role = rules_role(grant.role).ok_or(Failure::Forbidden)?;
        Ok(Acting {
            role,
            organisation_id: grant.organisation_id.clone(),
            suite: has_suite_scope(role),
        })
    }

    fn may(&self, permission: Permission) -> bool {
        role_grants(self.role, permission)
    }

    /// The members list: commissioners and the desk see their scope, a practice manager its
    /// practice.
    fn may_view(&self) -> bool {
        self.may(Permission::ViewScope) || self.may(Permission::ViewPracticeUsers)
    }

    fn may_invite(&self) -> bool {
        self.may(Permission::InviteUsers) || self.may(Permission::InviteApprovers)
    }

    fn may_view_providers(&self) -> bool {
        self.may(Permission::ViewScope)
    }

    /// Whether the active grant covers `organisation` (it is at it or an ancestor).
    fn covers(&self, organisation: &dir_pb::Organisation) -> bool {
        self.suite || organisation.path.contains(&self.organisation_id)
    }

    /// Whether this role may invite a person into `role` (only approvers and the desk invite
    /// approvers; the access service's rule).
    fn may_invite_into(&self, role: Role) -> bool {
        let permission = if role == Role::CommissioningApprover {
            Permission::InviteApprovers
        } else {
            Permission::InviteUsers
        };
        self.may(permission)
    }

    /// The roles this role may invite into at an organisation of `kind`.
    fn invitable_roles(&self, kind: Option<OrganisationKind>) -> Vec<Role> {
        let Some(kind) = kind else {
            return Vec::new();
        };
        Role::ALL
            .into_iter()
            .filter(|role| role_valid_at(*role, kind) && self.may_invite_into(*role))
            .collect()
    }
}

/// The `cqrs.common.v1.Role` number of a rules role (the proto numbers them in the rules'
/// order, from 1).
fn proto_role(role: Role) -> i32 {
    Role::ALL
        .iter()
        .position(|r| *r == role)
        .and_then(|i| i32::try_from(i + 1).ok())
        .unwrap_or(0)
}

fn kind_of(proto: i32) -> Option<OrganisationKind> {
    use dir_pb::OrganisationKind as P;
    match P::try_from(proto).ok()? {
        P::Region => Some(OrganisationKind::Region),
        P::CommissioningOrganisation => Some(OrganisationKind::CommissioningOrganisation),
        P::ServiceProvider => Some(OrganisationKind::ServiceProvider),
        P::ServiceDesk => Some(OrganisationKind::ServiceDesk),
        P::Unspecified => None,
    }
}

fn kind_label(kind: Option<OrganisationKind>) -> &'static str {
    match kind {
        Some(OrganisationKind::Region) => "Region",
        Some(OrganisationKind::CommissioningOrganisation) => "Commissioning organisation",
        Some(OrganisationKind::ServiceProvider) => "Practice",
        Some(OrganisationKind::ServiceDesk) => "Service desk",
        None => "Organisation",
    }
}

fn organisation_label(organisation: &dir_pb::Organisation) -> String {
    format!("{} ({})", organisation.name, organisation.ods_code)
}

fn account_state(account: &id_pb::Account) -> &'static str {
    let locked = matches!(
        id_pb::LockState::try_from(account.lock_state),
        Ok(id_pb::LockState::TemporarilyLocked | id_pb::LockState::PermanentlyLocked)
    );
    match id_pb::AccountState::try_from(account.state) {
        Ok(id_pb::AccountState::Active) if locked => "Active (locked)",
        Ok(id_pb::AccountState::Active) => "Active",
        Ok(id_pb::AccountState::PendingRegistration) => "Registration not completed",
        Ok(id_pb::AccountState::Disabled) => "Disabled",
        _ => "Unknown",
    }
}

fn invitation_state(state: i32) -> &'static str {
    match access_pb::InvitationState::try_from(state) {
        Ok(access_pb::InvitationState::Sent) => "Waiting to be accepted",
        Ok(access_pb::InvitationState::Accepted) => "Accepted",
        Ok(access_pb::InvitationState::Expired) => "Expired",
        Ok(access_pb::InvitationState::Cancelled) => "Cancelled",
        _ => "Unknown",
    }
}

/// A page address with its query.
fn with_query(path: String, pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    if pairs.is_empty() {
        return path;
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    format!("{path}?{}", query.finish())
}

/// Words for the refusals these pages meet, beyond the shared ones.
fn admin_reason_text(reason: &str, code: Code) -> Option<&'static str> {
    match reason {
        "INVITATION_ALREADY_SENT" => Some(
            "This person already has an invitation to this organisation in this role that is \
             waiting to be accepted. Resend it from the list of invitations instead.",
        ),
        "INVITATION_NOT_SENT" => Some(
            "Only an invitation that is still waiting to be accepted can be resent or \
             cancelled.",
        ),
        "ACCOUNT_NOT_ACTIVE" => Some(
            "Only an active account can be disabled. An account whose registration is not \
             completed yet cannot be disabled.",
        ),
        "ACCOUNT_NOT_DISABLED" => {
            Some("This account is not disabled: there is nothing to re-enable.")
        }
        "NOT_A_SERVICE_PROVIDER" => Some("Only a practice has an approval level."),
        _ if code == Code::PermissionDenied => {
            Some("Your current role does not allow this for this person or organisation.")
        }
        _ if code == Code::NotFound => {
            Some("It could not be found: it may have changed. Reload the page and try again.")
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The signed-in administrator and the calls every page makes.

struct Admin {
    state: AppState,
    signed_in: SignedIn,
    acting: Acting,
}

/// An organisation of the scope, as the pickers list it.
struct ScopeOrg {
    organisation: dir_pb::Organisation,
    kind: Option<OrganisationKind>,
    depth: usize,
}

/// The organisations in scope, depth first (each followed by its children), at most
/// [`MAX_LISTED_ORGANISATIONS`].
struct Scope {
    organisations: Vec<ScopeOrg>,
    complete: bool,
}

/// One entry of an organisation picker.
struct OrgOption {
    id: String,
    label: String,
    selected: bool,
}

impl Scope {
    fn options(&self, selected: &str, keep: impl Fn(&ScopeOrg) -> bool) -> Vec<OrgOption> {
        self.organisations
            .iter()
            .filter(|o| keep(o))
            .map(|o| OrgOption {
                id: o.organisation.id.clone(),
                label: format!(
                    "{}{} – {}",
                    "— ".repeat(o.depth),
                    organisation_label(&o.organisation),
                    kind_label(o.kind)
                ),
                selected: o.organisation.id == selected,
            })
            .collect()
    }
}

/// A link of the Users area's own menu.
struct NavLink {
    href: String,
    label: &'static str,
    current: bool,
}

impl Admin {
    /// The signed-in person acting through a role for which `allowed` holds; any other role
    /// is refused the page.
    async fn require(
        state: &AppState,
        session: &Session,
        allowed: fn(&Acting) -> bool,
    ) -> Result<Admin, Failure> {
        let signed_in = SignedIn::require(state, session).await?;
        let acting = Acting::of(&signed_in)?;
        if !allowed(&acting) {
            return Err(Failure::Forbidden);
        }
        Ok(Admin {
            state: state.clone(),
            signed_in,
            acting,
        })
    }

    fn token(&self) -> Option<&str> {
        self.signed_in.token()
    }

    fn fail(&self, status: &Status) -> Failure {
        self.signed_in.failure(status)
    }

    fn chrome(&self) -> Chrome {
        Chrome::new(&self.state, &self.signed_in.session)
    }

    fn path(&self, page: &str) -> String {
        self.state.path(page)
    }

    fn notice(&self, text: String) {
        self.signed_in.session.update(|s| s.notice = Some(text));
    }

    fn nav(&self, current: &str) -> Vec<NavLink> {
        let mut links = Vec::new();
        let mut add = |page: &str, label| {
            links.push(NavLink {
                href: self.path(page),
                label,
                current: page == current,
            });
        };
        if self.acting.may_view() {
            add("users", "Members");
        }
        if self.acting.may_invite() {
            add("users/invite", "Invite a user");
            add("users/invitations", "Invitations");
        }
        if self.acting.may_view_providers() {
            add("users/providers", "Providers");
        }
        links
    }

    /// A refusal of a form: words by field, or for the whole form. A session that ended, or
    /// a failure that is not about the form, replaces the page.
    fn refusal(
        &self,
        status: &Status,
        labels: &[(&str, &str, &str)],
    ) -> Result<FormErrors, Failure> {
        if status.code() == Code::Unauthenticated {
            return Err(self.fail(status));
        }
        let mut errors = FormErrors::from_status(status, labels)?;
        if errors.fields.is_empty() {
            let reason = status
                .get_details_error_info()
                .map(|info| info.reason)
                .unwrap_or_default();
            if let Some(text) = admin_reason_text(&reason, status.code()) {
                errors.summary = Some(text.to_owned());
            }
        }
        Ok(errors)
    }

    /// One organisation; `None` when the id is not one.
    async fn organisation(&self, id: &str) -> Result<Option<dir_pb::Organisation>, Failure> {
        if Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let answer = self
            .state
            .directory()
            .get_organisation(self.state.request(
                dir_pb::GetOrganisationRequest {
                    organisation_id: id.to_owned(),
                },
                self.token(),
            ))
            .await;
        match answer {
            Ok(answer) => Ok(answer.into_inner().organisation),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Ok(None)
            }
            Err(status) => Err(self.fail(&status)),
        }
    }

    /// An organisation in scope by id; `None` when it is not one or not in scope.
    async fn organisation_in_scope(
        &self,
        id: &str,
    ) -> Result<Option<dir_pb::Organisation>, Failure> {
        Ok(self
            .organisation(id)
            .await?
            .filter(|o| self.acting.covers(o)))
    }

    /// The organisation in scope with an ODS code, or words for the ODS code field.
    async fn by_ods_code(
        &self,
        raw: &str,
    ) -> Result<Result<dir_pb::Organisation, String>, Failure> {
        let Ok(code) = normalise_ods_code(raw) else {
            return Ok(Err(
                "ODS code must be 3 to 6 letters and digits, like A81001.".to_owned(),
            ));
        };
        let found = self
            .state
            .directory()
            .search_organisations(self.state.request(
                dir_pb::SearchOrganisationsRequest {
                    query: code.clone(),
                    kind: 0,
                    page_size: 20,
                    page_token: String::new(),
                },
                self.token(),
            ))
            .await
            .map_err(|status| self.fail(&status))?
            .into_inner()
            .organisations
            .into_iter()
            .find(|o| o.ods_code == code);
        Ok(match found {
            Some(organisation) if self.acting.covers(&organisation) => Ok(organisation),
            Some(organisation) => Err(format!(
                "{} is not in your area: choose an organisation you look after.",
                organisation.name
            )),
            None => Err(format!("No organisation has the ODS code {code}.")),
        })
    }

    /// The children of `parent` (the roots when empty), at most `limit`; whether that was
    /// all of them.
    async fn children(
        &self,
        parent: &str,
        limit: usize,
    ) -> Result<(Vec<dir_pb::Organisation>, bool), Failure> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .state
                .directory()
                .list_organisations(self.state.request(
                    dir_pb::ListOrganisationsRequest {
                        parent_id: parent.to_owned(),
                        page_size: WALK_PAGE,
                        page_token,
                    },
                    self.token(),
                ))
                .await
                .map_err(|status| self.fail(&status))?
                .into_inner();
            out.extend(page.organisations);
            if out.len() >= limit {
                let all = out.len() == limit && page.next_page_token.is_empty();
                out.truncate(limit);
                return Ok((out, all));
            }
            if page.next_page_token.is_empty() {
                return Ok((out, true));
            }
            page_token = page.next_page_token;
        }
    }

    /// The organisations in scope, depth first.
    async fn scope(&self) -> Result<Scope, Failure> {
        let mut complete = true;
        let roots = if self.acting.suite {
            let (roots, all) = self.children("", MAX_LISTED_ORGANISATIONS).await?;
            complete &= all;
            roots
        } else {
            self.organisation(&self.acting.organisation_id)
                .await?
                .into_iter()
                .collect()
        };
        let mut organisations = Vec::new();
        let mut stack: Vec<(dir_pb::Organisation, usize)> =
            roots.into_iter().rev().map(|o| (o, 0)).collect();
        while let Some((organisation, depth)) = stack.pop() {
            if organisations.len() >= MAX_LISTED_ORGANISATIONS {
                complete = false;
                break;
            }
            let kind = kind_of(organisation.kind);
            let parent = matches!(
                kind,
                Some(OrganisationKind::Region | OrganisationKind::CommissioningOrganisation)
            );
            let id = organisation.id.clone();
            organisations.push(ScopeOrg {
                organisation,
                kind,
                depth,
            });
            if parent {
                let room = MAX_LISTED_ORGANISATIONS
                    .saturating_sub(organisations.len() + stack.len())
                    .max(1);
                let (children, all) = self.children(&id, room).await?;
                complete &= all;
                stack.extend(children.into_iter().rev().map(|o| (o, depth + 1)));
            }
        }
        Ok(Scope {
            organisations,
            complete,
        })
    }

    /// The accounts behind `ids`, as this role may see them (one missing from the answer
    /// could not be read: out of scope or gone).
    async fn accounts(
        &self,
        ids: BTreeSet<String>,
    ) -> Result<HashMap<String, id_pb::Account>, Failure> {
        let mut out = HashMap::new();
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(LOOKUPS_IN_FLIGHT) {
            let mut calls = tokio::task::JoinSet::new();
            for id in chunk {
                let mut client = self.state.identity();
                let request = self.state.request(
                    id_pb::GetAccountRequest {
                        account_id: id.clone(),
                    },
                    self.token(),
                );
                let id = id.clone();
                calls.spawn(async move { (id, client.get_account(request).await) });
            }
            while let Some(done) = calls.join_next().await {
                let (id, answer) = done.map_err(|_| Failure::Internal)?;
                match answer {
                    Ok(answer) => {
                        if let Some(account) = answer.into_inner().account {
                            out.insert(id, account);
                        }
                    }
                    Err(status)
                        if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => {}
                    Err(status) => return Err(self.fail(&status)),
                }
            }
        }
        Ok(out)
    }

    /// One account this role may see; a refusal or an unknown account refuses the page.
    async fn account(&self, account_id: &str) -> Result<id_pb::Account, Failure> {
        if Uuid::parse_str(account_id).is_err() {
            return Err(Failure::Forbidden);
        }
        let answer = self
            .state
            .identity()
            .get_account(self.state.request(
                id_pb::GetAccountRequest {
                    account_id: account_id.to_owned(),
                },
                self.token(),
            ))
            .await;
        match answer {
            Ok(answer) => answer.into_inner().account.ok_or(Failure::Internal),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Err(Failure::Forbidden)
            }
            Err(status) => Err(self.fail(&status)),
        }
    }

    /// The grants of an account this role may see (those in its scope).
    async fn grants(&self, account_id: &str) -> Result<Vec<dir_pb::Grant>, Failure> {
        let mut grants = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .state
                .directory()
                .list_grants(self.state.request(
                    dir_pb::ListGrantsRequest {
                        account_id: account_id.to_owned(),
                        page_size: 0,
                        page_token,
                    },
                    self.token(),
                ))
                .await
                .map_err(|status| self.fail(&status))?
                .into_inner();
            grants.extend(page.grants);
            if page.next_page_token.is_empty() {
                return Ok(grants);
            }
            page_token = page.next_page_token;
        }
    }
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

// ---------------------------------------------------------------------------------------------
// Members (seed 002 §5, the Users tile).

#[derive(Deserialize, Default)]
pub struct MembersQuery {
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    ods: String,
    #[serde(default)]
    page: String,
}

struct MemberRow {
    href: String,
    name: String,
    email: String,
    user_id: String,
    organisation: String,
    role: &'static str,
    state: &'static str,
}

#[derive(Template)]
#[template(path = "admin_members.html")]
struct MembersPage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    action: String,
    organisations: Vec<OrgOption>,
    complete: bool,
    ods: String,
    selected: String,
    errors: FormErrors,
    rows: Vec<MemberRow>,
    first: Option<String>,
    next: Option<String>,
    may_invite: bool,
    invite: String,
}

/// seed 002 §5 "Users" tile: the people holding roles in the chosen organisation and below.
pub async fn members(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<MembersQuery>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_view).await?;
    let scope = admin.scope().await?;
    let mut errors = FormErrors::default();
    let ods = query.ods.trim().to_owned();
    let mut chosen = None;
    if !ods.is_empty() {
        match admin.by_ods_code(&ods).await? {
            Ok(organisation) => chosen = Some(organisation),
            Err(message) => errors = errors.field("ods", message),
        }
    } else if !query.organisation.is_empty() {
        let listed = scope
            .organisations
            .iter()
            .find(|o| o.organisation.id == query.organisation)
            .map(|o| o.organisation.clone());
        chosen = match listed {
            Some(organisation) => Some(organisation),
            None => admin.organisation_in_scope(&query.organisation).await?,
        };
        if chosen.is_none() {
            errors = errors.field("organisation", "Choose an organisation from the list.");
        }
    }
    let (organisation_id, selected) = match &chosen {
        Some(organisation) => (organisation.id.clone(), organisation_label(organisation)),
        None => {
            let active = admin
                .signed_in
                .user
                .active_grant()
                .map(|g| g.organisation_name.clone())
                .unwrap_or_default();
            (admin.acting.organisation_id.clone(), active)
        }
    };
    let page = if errors.is_empty() {
        query.page.clone()
    } else {
        String::new()
    };
    let listed = admin
        .state
        .directory()
        .list_members(admin.state.request(
            dir_pb::ListMembersRequest {
                organisation_id: organisation_id.clone(),
                include_descendants: true,
                role: 0,
                page_size: LIST_PAGE,
                page_token: page.clone(),
            },
            admin.token(),
        ))
        .await;
    let listed = match listed {
        Ok(listed) => listed.into_inner(),
        // A page token that no longer works: start again at the first page.
        Err(status) if status.code() == Code::InvalidArgument && !page.is_empty() => {
            return Ok(see_other(
                &state,
                &with_query("users".into(), &[("organisation", &organisation_id)]),
            ));
        }
        Err(status) => return Err(admin.fail(&status)),
    };
    let ids = listed.grants.iter().map(|g| g.account_id.clone()).collect();
    let accounts = admin.accounts(ids).await?;
    let rows = listed
        .grants
        .iter()
        .map(|grant| {
            let account = accounts.get(&grant.account_id);
            MemberRow {
                href: admin.path(&format!("users/{}", grant.account_id)),
                name: account.map_or_else(
                    || "Not available".to_owned(),
                    |a| format!("{} {}", a.first_name, a.last_name),
                ),
                email: account.map(|a| a.email.clone()).unwrap_or_default(),
                user_id: account.map(|a| a.user_id.clone()).unwrap_or_default(),
                organisation: format!("{} ({})", grant.organisation_name, grant.ods_code),
                role: role_name(grant.role),
                state: account.map_or("Unknown", account_state),
            }
        })
        .collect();
    let here = |page: &str| {
        with_query(
            admin.path("users"),
            &[("organisation", &organisation_id), ("page", page)],
        )
    };
    Ok(render(&MembersPage {
        chrome: admin.chrome(),
        nav: admin.nav("users"),
        action: admin.path("users"),
        organisations: scope.options(&organisation_id, |_| true),
        complete: scope.complete,
        ods,
        selected,
        errors,
        rows,
        first: (!page.is_empty()).then(|| here("")),
        next: (!listed.next_page_token.is_empty()).then(|| here(&listed.next_page_token)),
        may_invite: admin.acting.may_invite(),
        invite: admin.path("users/invite"),
    }))
}

// ---------------------------------------------------------------------------------------------
// One person, and disable / re-enable / revoke (seed 002 §11-13).

struct PersonView {
    name: String,
    email: String,
    user_id: String,
    state: &'static str,
}

fn person_view(account: &id_pb::Account) -> PersonView {
    PersonView {
        name: format!("{} {}", account.first_name, account.last_name),
        email: account.email.clone(),
        user_id: account.user_id.clone(),
        state: account_state(account),
    }
}

#[derive(Template)]
#[template(path = "admin_person.html")]
struct PersonPage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    person: PersonView,
    roles: Vec<String>,
    own: bool,
    disable: Option<String>,
    enable: Option<String>,
    revoke: Option<String>,
    back: String,
}

/// seed 002 §12-13 "View" of a user: details, roles in scope, and the actions the role may
/// take.
pub async fn person(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_view).await?;
    let account = admin.account(&account_id).await?;
    let grants = admin.grants(&account_id).await?;
    let own = account.id == admin.signed_in.user.account_id;
    let active = id_pb::AccountState::try_from(account.state).ok();
    let offer = |permission, wanted: bool, action: &str| {
        (!own && wanted && admin.acting.may(permission))
            .then(|| admin.path(&format!("users/{account_id}/{action}")))
    };
    let disable = offer(
        Permission::DisableAccount,
        active == Some(id_pb::AccountState::Active),
        "disable",
    );
    let enable = offer(
        Permission::EnableAccount,
        active == Some(id_pb::AccountState::Disabled),
        "enable",
    );
    let revoke = offer(Permission::RevokeRoles, !grants.is_empty(), "revoke");
    Ok(render(&PersonPage {
        chrome: admin.chrome(),
        nav: admin.nav(""),
        person: person_view(&account),
        roles: grants
            .iter()
            .map(|g| grant_label(g.role, &g.organisation_name))
            .collect(),
        own,
        disable,
        enable,
        revoke,
        back: admin.path("users"),
    }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Disable,
    Enable,
    Revoke,
}

impl Action {
    fn permission(self) -> Permission {
        match self {
            Action::Disable => Permission::DisableAccount,
            Action::Enable => Permission::EnableAccount,
            Action::Revoke => Permission::RevokeRoles,
        }
    }

    fn segment(self) -> &'static str {
        match self {
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Revoke => "revoke",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Action::Disable => "Disable account",
            Action::Enable => "Re-enable account",
            Action::Revoke => "Revoke roles",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Action::Disable => {
                "A disabled account cannot sign in for any organisation; its data is kept. \
                 The person is signed out at once and told by e-mail. An account \
                 administrator can re-enable it later."
            }
            Action::Enable => {
                "The person can sign in again with their User ID and password, with the \
                 roles they held before. They are told by e-mail."
            }
            Action::Revoke => {
                "Every role this person holds in your area is removed. They can still sign \
                 in and see their profile, and can request access again. If they are \
                 working in one of these roles now, they are signed out of it at once."
            }
        }
    }

    fn button(self) -> &'static str {
        match self {
            Action::Disable => "Confirm disable",
            Action::Enable => "Confirm re-enable",
            Action::Revoke => "Confirm revoke",
        }
    }
}

#[derive(Template)]
#[template(path = "admin_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    title: &'static str,
    explain: &'static str,
    button: &'static str,
    person: PersonView,
    action: String,
    back: String,
    with_reason: bool,
    reason: String,
    errors: FormErrors,
}

fn confirm_page(
    admin: &Admin,
    action: Action,
    account: &id_pb::Account,
    reason: String,
    errors: FormErrors,
) -> Response {
    render(&ConfirmPage {
        chrome: admin.chrome(),
        nav: admin.nav(""),
        title: action.title(),
        explain: action.explain(),
        button: action.button(),
        person: person_view(account),
        action: admin.path(&format!("users/{}/{}", account.id, action.segment())),
        back: admin.path(&format!("users/{}", account.id)),
        with_reason: action == Action::Disable,
        reason,
        errors,
    })
}

/// The confirm step of an action on a person, offered only to a role that may take it.
async fn confirm(
    state: &AppState,
    session: &Session,
    account_id: &str,
    action: Action,
) -> Result<Response, Failure> {
    let admin = Admin::require(state, session, Acting::may_view).await?;
    if !admin.acting.may(action.permission()) {
        return Err(Failure::Forbidden);
    }
    let account = admin.account(account_id).await?;
    Ok(confirm_page(
        &admin,
        action,
        &account,
        String::new(),
        FormErrors::default(),
    ))
}

/// seed 002 §11 "Disable Account" by an approver: confirm.
pub async fn confirm_disable(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Response, Failure> {
    confirm(&state, &session, &account_id, Action::Disable).await
}

/// seed 002 §12 "Enable Account": confirm.
pub async fn confirm_enable(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Response, Failure> {
    confirm(&state, &session, &account_id, Action::Enable).await
}

/// seed 002 §13 "Revoke": confirm.
pub async fn confirm_revoke(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Response, Failure> {
    confirm(&state, &session, &account_id, Action::Revoke).await
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl CsrfForm for ActionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Takes a confirmed action; the service decides.
async fn act(
    state: &AppState,
    session: &Session,
    account_id: &str,
    action: Action,
    form: ActionForm,
) -> Result<Response, Failure> {
    let admin = Admin::require(state, session, Acting::may_view).await?;
    if !admin.acting.may(action.permission()) {
        return Err(Failure::Forbidden);
    }
    let account = admin.account(account_id).await?;
    let name = format!("{} {}", account.first_name, account.last_name);
    let reason = form.reason.trim().to_owned();
    let answer = match action {
        Action::Disable => {
            if reason.chars().count() > MAX_DISABLE_REASON {
                let errors =
                    FormErrors::default().field("reason", "Reason must be at most 500 characters.");
                return Ok(confirm_page(&admin, action, &account, reason, errors));
            }
            admin
                .state
                .identity()
                .disable_account(admin.state.request(
                    id_pb::DisableAccountRequest {
                        account_id: account.id.clone(),
                        reason: reason.clone(),
                    },
                    admin.token(),
                ))
                .await
                .map(|_| (format!("{name}'s account has been disabled."), None))
        }
        Action::Enable => admin
            .state
            .identity()
            .enable_account(admin.state.request(
                id_pb::EnableAccountRequest {
                    account_id: account.id.clone(),
                },
                admin.token(),
            ))
            .await
            .map(|_| (format!("{name}'s account has been re-enabled."), None)),
        Action::Revoke => admin
            .state
            .directory()
            .revoke_all_roles(admin.state.request(
                dir_pb::RevokeAllRolesRequest {
                    account_id: account.id.clone(),
                },
                admin.token(),
            ))
            .await
            .map(|answer| {
                let removed = answer.into_inner().grants.len();
                let text = match removed {
                    0 => format!("{name} had no roles in your area."),
                    1 => format!("1 role of {name} has been removed."),
                    n => format!("{n} roles of {name} have been removed."),
                };
                // Without roles in scope the person is no longer in this role's view.
                (text, Some("users"))
            }),
    };
    match answer {
        Ok((text, next)) => {
            admin.notice(text);
            let next = next.map_or_else(|| format!("users/{}", account.id), str::to_owned);
            Ok(see_other(state, &next))
        }
        Err(status) => {
            let errors = admin.refusal(&status, &[("reason", "reason", "Reason")])?;
            Ok(confirm_page(&admin, action, &account, reason, errors))
        }
    }
}

/// seed 002 §11 "Confirm Disable".
pub async fn disable(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
    Posted(form): Posted<ActionForm>,
) -> Result<Response, Failure> {
    act(&state, &session, &account_id, Action::Disable, form).await
}

/// seed 002 §12 "Enable Account" → Confirm.
pub async fn enable(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
    Posted(form): Posted<ActionForm>,
) -> Result<Response, Failure> {
    act(&state, &session, &account_id, Action::Enable, form).await
}

/// seed 002 §13 "Revoke" → Confirm.
pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(account_id): Path<String>,
    Posted(form): Posted<ActionForm>,
) -> Result<Response, Failure> {
    act(&state, &session, &account_id, Action::Revoke, form).await
}

// ---------------------------------------------------------------------------------------------
// Invite (seed 002 §4): e-mail → names → organisation → role → check → send.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Email,
    Names,
    Organisation,
    Role,
    Check,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::Email,
        Step::Names,
        Step::Organisation,
        Step::Role,
        Step::Check,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Step::Email => "email",
            Step::Names => "names",
            Step::Organisation => "organisation",
            Step::Role => "role",
            Step::Check => "check",
        }
    }

    fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }

    fn next(self) -> Step {
        match self {
            Step::Email => Step::Names,
            Step::Names => Step::Organisation,
            Step::Organisation => Step::Role,
            Step::Role | Step::Check => Step::Check,
        }
    }

    fn previous(self) -> Option<Step> {
        match self {
            Step::Email => None,
            Step::Names => Some(Step::Email),
            Step::Organisation => Some(Step::Names),
            Step::Role => Some(Step::Organisation),
            Step::Check => Some(Step::Role),
        }
    }

    fn number(self) -> usize {
        Step::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }

    fn heading(self) -> &'static str {
        match self {
            Step::Email => "What is their e-mail address?",
            Step::Names => "What is their name?",
            Step::Organisation => "Which organisation are you inviting them to?",
            Step::Role => "Which role will they have?",
            Step::Check => "Check the invitation, then send it",
        }
    }
}

/// Every answer so far; the earlier steps' answers travel in hidden fields.
#[derive(Deserialize, Default, Clone)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    /// The step whose form was posted.
    #[serde(default)]
    step: String,
    /// A "Back" or "Change" button: the step to show again.
    #[serde(default)]
    goto: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    /// Organisation id.
    #[serde(default)]
    organisation: String,
    /// Or the organisation's ODS code.
    #[serde(default)]
    ods_code: String,
    /// The rules' role name, e.g. PRACTICE_USER.
    #[serde(default)]
    role: String,
    /// CreateInvitation's key, made when the check page is first shown.
    #[serde(default)]
    request_id: String,
}

impl CsrfForm for InviteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

struct RoleChoice {
    value: &'static str,
    label: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "admin_invite.html")]
struct InvitePage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    action: String,
    step: &'static str,
    number: usize,
    heading: &'static str,
    back: Option<&'static str>,
    form: InviteForm,
    organisations: Vec<OrgOption>,
    complete: bool,
    organisation_label: String,
    roles: Vec<RoleChoice>,
    role_label: &'static str,
    errors: FormErrors,
}

/// seed 002 §4 "Invite" button: the first step.
pub async fn invite_start(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_invite).await?;
    invite_page(
        &admin,
        InviteForm::default(),
        Step::Email,
        FormErrors::default(),
    )
    .await
}

/// seed 002 §4 steps 3-10: each step checks its answers (and those before it) and shows the
/// next, or itself with the errors by their fields; the check page sends.
pub async fn invite_step(
    State(state): State<AppState>,
    session: Session,
    Posted(mut form): Posted<InviteForm>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_invite).await?;
    if let Some(step) = Step::parse(&form.goto) {
        return invite_page(&admin, form, step, FormErrors::default()).await;
    }
    let step = Step::parse(&form.step).unwrap_or(Step::Email);

    let mut errors = FormErrors::default();
    match normalise_email(&form.email) {
        Ok(email) => form.email = email,
        Err(EmailError::Required) => {
            errors = errors.field("email", "Enter the e-mail address of the person to invite.");
        }
        Err(EmailError::TooLong) => {
            errors = errors.field("email", "E-mail address must be at most 254 characters.");
        }
        Err(EmailError::Invalid) => {
            errors = errors.field(
                "email",
                "Enter an e-mail address in the right form, like name@example.nhs.uk.",
            );
        }
    }
    if !errors.is_empty() {
        return invite_page(&admin, form, Step::Email, errors).await;
    }

    if step >= Step::Names {
        for (field, label) in [("first_name", "First name"), ("last_name", "Last name")] {
            let value = if field == "first_name" {
                &mut form.first_name
            } else {
                &mut form.last_name
            };
            match normalise_name(value) {
                Ok(name) => *value = name,
                Err("is required") => {
                    errors = errors.field(field, format!("Enter their {}.", label.to_lowercase()));
                }
                Err(rule) => errors = errors.field(field, format!("{label} {rule}.")),
            }
        }
        if !errors.is_empty() {
            return invite_page(&admin, form, Step::Names, errors).await;
        }
    }

    let mut organisation = None;
    if step >= Step::Organisation {
        match invite_organisation(&admin, &form).await? {
            Ok(found) => {
                form.organisation = found.id.clone();
                form.ods_code.clear();
                organisation = Some(found);
            }
            Err(errors) => return invite_page(&admin, form, Step::Organisation, errors).await,
        }
    }

    if step >= Step::Role {
        let kind = organisation.as_ref().and_then(|o| kind_of(o.kind));
        let offered = admin.acting.invitable_roles(kind);
        match Role::parse(&form.role) {
            Some(role) if offered.contains(&role) => {}
            Some(_) => {
                let errors = errors.field(
                    "role",
                    "You cannot invite a person into that role at this organisation. Choose \
                     one of the roles listed.",
                );
                return invite_page(&admin, form, Step::Role, errors).await;
            }
            None => {
                let errors = errors.field("role", "Choose the role they will have.");
                return invite_page(&admin, form, Step::Role, errors).await;
            }
        }
    }

    match (step, organisation) {
        (Step::Check, Some(organisation)) => send_invitation(&admin, form, &organisation).await,
        _ => {
            let next = step.next();
            if next == Step::Check {
                // A new key for each checked invitation; a repeated Send keeps it.
                form.request_id = Uuid::new_v4().to_string();
            }
            invite_page(&admin, form, next, FormErrors::default()).await
        }
    }
}

/// The organisation chosen at the organisation step, in scope and able to take someone this
/// role may invite; or the errors by field.
async fn invite_organisation(
    admin: &Admin,
    form: &InviteForm,
) -> Result<Result<dir_pb::Organisation, FormErrors>, Failure> {
    let ods_code = form.ods_code.trim();
    let (found, field) = if !ods_code.is_empty() {
        match admin.by_ods_code(ods_code).await? {
            Ok(organisation) => (organisation, "ods_code"),
            Err(message) => return Ok(Err(FormErrors::default().field("ods_code", message))),
        }
    } else if form.organisation.is_empty() {
        return Ok(Err(FormErrors::default().field(
            "organisation",
            "Choose the organisation you are inviting them to.",
        )));
    } else {
        match admin.organisation_in_scope(&form.organisation).await? {
            Some(organisation) => (organisation, "organisation"),
            None => {
                return Ok(Err(FormErrors::default()
                    .field("organisation", "Choose an organisation from the list.")));
            }
        }
    };
    if admin.acting.invitable_roles(kind_of(found.kind)).is_empty() {
        return Ok(Err(FormErrors::default().field(
            field,
            format!(
                "You cannot invite anyone to {} in your current role. Choose another \
                 organisation.",
                found.name
            ),
        )));
    }
    Ok(Ok(found))
}

async fn invite_page(
    admin: &Admin,
    mut form: InviteForm,
    step: Step,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let mut organisations = Vec::new();
    let mut complete = true;
    let mut organisation_label = String::new();
    let mut roles = Vec::new();
    let mut role_label = "";
    if step == Step::Organisation {
        let scope = admin.scope().await?;
        complete = scope.complete;
        organisations = scope.options(&form.organisation, |o| {
            !admin.acting.invitable_roles(o.kind).is_empty()
        });
    }
    if step >= Step::Role {
        let Some(organisation) = admin.organisation_in_scope(&form.organisation).await? else {
            // Answers that no longer hold (an organisation out of scope): choose again.
            let errors = FormErrors::default().field(
                "organisation",
                "Choose the organisation you are inviting them to.",
            );
            return Box::pin(invite_page(admin, form, Step::Organisation, errors)).await;
        };
        organisation_label = organisation_label_of(&organisation);
        let offered = admin.acting.invitable_roles(kind_of(organisation.kind));
        roles = offered
            .iter()
            .map(|role| RoleChoice {
                value: role.as_str(),
                label: role_name(proto_role(*role)),
                checked: role.as_str() == form.role,
            })
            .collect();
        if let Some(role) = Role::parse(&form.role).filter(|r| offered.contains(r)) {
            role_label = role_name(proto_role(role));
        }
    }
    if step != Step::Check {
        form.request_id.clear();
    }
    form.goto.clear();
    Ok(render(&InvitePage {
        chrome: admin.chrome(),
        nav: admin.nav("users/invite"),
        action: admin.path("users/invite"),
        step: step.as_str(),
        number: step.number(),
        heading: step.heading(),
        back: step.previous().map(Step::as_str),
        form,
        organisations,
        complete,
        organisation_label,
        roles,
        role_label,
        errors,
    }))
}

fn organisation_label_of(organisation: &dir_pb::Organisation) -> String {
    format!(
        "{} – {}",
        organisation_label(organisation),
        kind_label(kind_of(organisation.kind))
    )
}

/// seed 002 §4 step 10 "Send".
async fn send_invitation(
    admin: &Admin,
    mut form: InviteForm,
    organisation: &dir_pb::Organisation,
) -> Result<Response, Failure> {
    let role = Role::parse(&form.role).ok_or(Failure::StaleForm)?;
    if Uuid::parse_str(&form.request_id).is_err() {
        form.request_id = Uuid::new_v4().to_string();
    }
    let answer = admin
        .state
        .access()
        .create_invitation(admin.state.request(
            access_pb::CreateInvitationRequest {
                request_id: form.request_id.clone(),
                email: form.email.clone(),
                first_name: form.first_name.clone(),
                last_name: form.last_name.clone(),
                organisation_id: organisation.id.clone(),
                role: proto_role(role),
            },
            admin.token(),
        ))
        .await;
    match answer {
        Ok(_) => {
            admin.notice(format!(
                "The invitation was sent to {}. They will get an e-mail with a link to \
                 register.",
                form.email
            ));
            Ok(see_other(&admin.state, "users/invitations"))
        }
        Err(status) => {
            let errors = admin.refusal(
                &status,
                &[
                    ("email", "email", "E-mail address"),
                    ("first_name", "first_name", "First name"),
                    ("last_name", "last_name", "Last name"),
                    ("organisation_id", "organisation", "Organisation"),
                    ("role", "role", "Role"),
                ],
            )?;
            invite_page(admin, form, Step::Check, errors).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Invitations: list, resend, cancel.

#[derive(Deserialize, Default)]
pub struct InvitationsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: String,
}

const INVITATION_FILTERS: [(&str, &str, access_pb::InvitationState); 5] = [
    ("", "All", access_pb::InvitationState::Unspecified),
    (
        "sent",
        "Waiting to be accepted",
        access_pb::InvitationState::Sent,
    ),
    ("accepted", "Accepted", access_pb::InvitationState::Accepted),
    ("expired", "Expired", access_pb::InvitationState::Expired),
    (
        "cancelled",
        "Cancelled",
        access_pb::InvitationState::Cancelled,
    ),
];

struct FilterOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

struct InvitationRow {
    name: String,
    email: String,
    organisation: String,
    role: &'static str,
    state: &'static str,
    sent: String,
    expires: String,
    resend: Option<String>,
    cancel: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_invitations.html")]
struct InvitationsPage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    action: String,
    filters: Vec<FilterOption>,
    rows: Vec<InvitationRow>,
    errors: FormErrors,
    first: Option<String>,
    next: Option<String>,
    invite: String,
}

/// seed 002 §4 "What will happen now?": the invitations sent in scope, with Resend and Cancel.
pub async fn invitations(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<InvitationsQuery>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_invite).await?;
    invitations_page(&admin, &query, FormErrors::default()).await
}

async fn invitations_page(
    admin: &Admin,
    query: &InvitationsQuery,
    errors: FormErrors,
) -> Result<Response, Failure> {
    let filter = INVITATION_FILTERS
        .iter()
        .find(|(value, _, _)| *value == query.state)
        .unwrap_or(&INVITATION_FILTERS[0]);
    let listed = admin
        .state
        .access()
        .list_invitations(admin.state.request(
            access_pb::ListInvitationsRequest {
                organisation_id: String::new(),
                state: filter.2 as i32,
                page_size: LIST_PAGE,
                page_token: query.page.clone(),
            },
            admin.token(),
        ))
        .await;
    let listed = match listed {
        Ok(listed) => listed.into_inner(),
        Err(status) if status.code() == Code::InvalidArgument && !query.page.is_empty() => {
            return Ok(see_other(
                &admin.state,
                &with_query("users/invitations".into(), &[("state", filter.0)]),
            ));
        }
        Err(status) => return Err(admin.fail(&status)),
    };
    let rows = listed
        .invitations
        .iter()
        .map(|invitation| {
            let waiting = invitation.state == access_pb::InvitationState::Sent as i32;
            let may = waiting
                && rules_role(invitation.role)
                    .is_some_and(|role| admin.acting.may_invite_into(role));
            let link = |what: &str| {
                may.then(|| admin.path(&format!("users/invitations/{}/{what}", invitation.id)))
            };
            InvitationRow {
                name: format!("{} {}", invitation.first_name, invitation.last_name),
                email: invitation.email.clone(),
                organisation: invitation.organisation_name.clone(),
                role: role_name(invitation.role),
                state: invitation_state(invitation.state),
                sent: time::stamp(invitation.send_time.as_ref()),
                expires: if waiting {
                    time::stamp(invitation.expire_time.as_ref())
                } else {
                    String::new()
                },
                resend: link("resend"),
                cancel: link("cancel"),
            }
        })
        .collect();
    let here = |page: &str| {
        with_query(
            admin.path("users/invitations"),
            &[("state", filter.0), ("page", page)],
        )
    };
    Ok(render(&InvitationsPage {
        chrome: admin.chrome(),
        nav: admin.nav("users/invitations"),
        action: admin.path("users/invitations"),
        filters: INVITATION_FILTERS
            .iter()
            .map(|(value, label, _)| FilterOption {
                value,
                label,
                selected: *value == filter.0,
            })
            .collect(),
        rows,
        errors,
        first: (!query.page.is_empty()).then(|| here("")),
        next: (!listed.next_page_token.is_empty()).then(|| here(&listed.next_page_token)),
        invite: admin.path("users/invite"),
    }))
}

#[derive(Clone, Copy)]
enum InvitationChange {
    Resend,
    Cancel,
}

async fn change_invitation(
    state: &AppState,
    session: &Session,
    invitation_id: String,
    change: InvitationChange,
) -> Result<Response, Failure> {
    let admin = Admin::require(state, session, Acting::may_invite).await?;
    let answer = match change {
        InvitationChange::Resend => admin
            .state
            .access()
            .resend_invitation(admin.state.request(
                access_pb::ResendInvitationRequest { invitation_id },
                admin.token(),
            ))
            .await
            .map(|a| {
                let email = a.into_inner().invitation.map(|i| i.email).unwrap_or_default();
                format!("The invitation was sent again to {email}, with a new link. The old link no longer works.")
            }),
        InvitationChange::Cancel => admin
            .state
            .access()
            .cancel_invitation(admin.state.request(
                access_pb::CancelInvitationRequest { invitation_id },
                admin.token(),
            ))
            .await
            .map(|a| {
                let email = a.into_inner().invitation.map(|i| i.email).unwrap_or_default();
                format!("The invitation to {email} was cancelled. Its link no longer works.")
            }),
    };
    match answer {
        Ok(text) => {
            admin.notice(text);
            Ok(see_other(state, "users/invitations"))
        }
        Err(status) => {
            let errors = admin.refusal(&status, &[])?;
            invitations_page(&admin, &InvitationsQuery::default(), errors).await
        }
    }
}

/// Resend of one invitation (a new link and expiry).
pub async fn resend_invitation(
    State(state): State<AppState>,
    session: Session,
    Path(invitation_id): Path<String>,
    Posted(_form): Posted<PlainForm>,
) -> Result<Response, Failure> {
    change_invitation(&state, &session, invitation_id, InvitationChange::Resend).await
}

/// Cancel of one invitation (its link stops working).
pub async fn cancel_invitation(
    State(state): State<AppState>,
    session: Session,
    Path(invitation_id): Path<String>,
    Posted(_form): Posted<PlainForm>,
) -> Result<Response, Failure> {
    change_invitation(&state, &session, invitation_id, InvitationChange::Cancel).await
}

// ---------------------------------------------------------------------------------------------
// Providers: single- or multi-level approval (seed 002 §2).

#[derive(Deserialize, Default)]
pub struct ProvidersQuery {
    #[serde(default)]
    ods: String,
}

struct ProviderRow {
    href: String,
    name: String,
    ods_code: String,
    level: &'static str,
}

fn level(multi: bool) -> &'static str {
    if multi { "Multi-level" } else { "Single-level" }
}

#[derive(Template)]
#[template(path = "admin_providers.html")]
struct ProvidersPage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    action: String,
    rows: Vec<ProviderRow>,
    complete: bool,
    ods: String,
    errors: FormErrors,
}

/// seed 002 §2 "Home Page → Providers": the practices in scope and their approval level.
pub async fn providers(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<ProvidersQuery>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_view_providers).await?;
    let ods = query.ods.trim().to_owned();
    let mut errors = FormErrors::default();
    if !ods.is_empty() {
        match admin.by_ods_code(&ods).await? {
            Ok(found) if kind_of(found.kind) == Some(OrganisationKind::ServiceProvider) => {
                return Ok(see_other(&state, &format!("users/providers/{}", found.id)));
            }
            Ok(found) => {
                errors = errors.field(
                    "ods",
                    format!(
                        "{} is not a practice: only a practice has an approval level.",
                        found.name
                    ),
                );
            }
            Err(message) => errors = errors.field("ods", message),
        }
    }
    let scope = admin.scope().await?;
    let rows = scope
        .organisations
        .iter()
        .filter(|o| o.kind == Some(OrganisationKind::ServiceProvider))
        .map(|o| ProviderRow {
            href: admin.path(&format!("users/providers/{}", o.organisation.id)),
            name: o.organisation.name.clone(),
            ods_code: o.organisation.ods_code.clone(),
            level: level(o.organisation.multi_level_approval),
        })
        .collect();
    Ok(render(&ProvidersPage {
        chrome: admin.chrome(),
        nav: admin.nav("users/providers"),
        action: admin.path("users/providers"),
        rows,
        complete: scope.complete,
        ods,
        errors,
    }))
}

#[derive(Template)]
#[template(path = "admin_provider.html")]
struct ProviderPage {
    chrome: Chrome,
    nav: Vec<NavLink>,
    name: String,
    ods_code: String,
    multi: bool,
    level: &'static str,
    may_set: bool,
    action: String,
    back: String,
    errors: FormErrors,
}

/// A practice in scope, or the page is refused.
async fn practice(admin: &Admin, organisation_id: &str) -> Result<dir_pb::Organisation, Failure> {
    admin
        .organisation_in_scope(organisation_id)
        .await?
        .filter(|o| kind_of(o.kind) == Some(OrganisationKind::ServiceProvider))
        .ok_or(Failure::Forbidden)
}

fn provider_page(
    admin: &Admin,
    organisation: &dir_pb::Organisation,
    errors: FormErrors,
) -> Response {
    render(&ProviderPage {
        chrome: admin.chrome(),
        nav: admin.nav(""),
        name: organisation.name.clone(),
        ods_code: organisation.ods_code.clone(),
        multi: organisation.multi_level_approval,
        level: level(organisation.multi_level_approval),
        may_set: admin.acting.may(Permission::SetApprovalLevel),
        action: admin.path(&format!("users/providers/{}", organisation.id)),
        back: admin.path("users/providers"),
        errors,
    })
}

/// seed 002 §2 "Providers → View": the practice and its multi-level approval box.
pub async fn provider(
    State(state): State<AppState>,
    session: Session,
    Path(organisation_id): Path<String>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, Acting::may_view_providers).await?;
    let organisation = practice(&admin, &organisation_id).await?;
    Ok(provider_page(&admin, &organisation, FormErrors::default()))
}

#[derive(Deserialize)]
pub struct ApprovalForm {
    csrf: String,
    /// A ticked box sends a value; an unticked one sends nothing.
    #[serde(default)]
    multi_level_approval: Option<String>,
}

impl CsrfForm for ApprovalForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// seed 002 §2 "tick Multi-level approval box": anyone but the account administrator.
pub async fn set_approval_level(
    State(state): State<AppState>,
    session: Session,
    Path(organisation_id): Path<String>,
    Posted(form): Posted<ApprovalForm>,
) -> Result<Response, Failure> {
    let admin = Admin::require(&state, &session, |acting| {
        acting.may(Permission::SetApprovalLevel)
    })
    .await?;
    let organisation = practice(&admin, &organisation_id).await?;
    let multi = form.multi_level_approval.is_some();
    let answer = admin
        .state
        .directory()
        .set_approval_level(admin.state.request(
            dir_pb::SetApprovalLevelRequest {
                organisation_id: organisation.id.clone(),
                multi_level_approval: multi,
            },
            admin.token(),
        ))
        .await;
    match answer {
        Ok(_) => {
            admin.notice(format!(
                "{} now uses {} approval.",
                organisation.name,
                level(multi).to_lowercase()
            ));
            Ok(see_other(
                &state,
                &format!("users/providers/{}", organisation.id),
            ))
        }
        Err(status) => {
            let errors = admin.refusal(
                &status,
                &[(
                    "multi_level_approval",
                    "multi_level_approval",
                    "Multi-level approval",
                )],
            )?;
            Ok(provider_page(&admin, &organisation, errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_roles_follow_the_rules_order() {
        for role in Role::ALL {
            assert_eq!(rules_role(proto_role(role)), Some(role));
        }
    }

    #[test]
    fn approvers_are_invited_only_by_roles_that_may() {
        let acting = |role| Acting {
            role,
            organisation_id: String::new(),
            suite: has_suite_scope(role),
        };
        let ccg = Some(OrganisationKind::CommissioningOrganisation);
        let admin = acting(Role::CommissioningAccountAdministrator).invitable_roles(ccg);
        assert!(!admin.contains(&Role::CommissioningApprover));
        assert!(admin.contains(&Role::CommissioningUser));
        assert_eq!(
            acting(Role::CommissioningApprover).invitable_roles(ccg),
            vec![Role::CommissioningApprover]
        );
        assert_eq!(
            acting(Role::CommissioningAccountAdministrator)
                .invitable_roles(Some(OrganisationKind::ServiceProvider)),
            vec![Role::PracticeManager, Role::PracticeUser]
        );
        assert!(
            acting(Role::PracticeManager)
                .invitable_roles(ccg)
                .is_empty()
        );
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query("/users".into(), &[("organisation", "a b"), ("page", "")]),
            "/users?organisation=a+b"
        );
        assert_eq!(with_query("/users".into(), &[("page", "")]), "/users");
    }
}
