//! End-to-end runs of the real `cqrsctl` binary against small in-process fakes of the identity
//! and directory services (one tonic server on 127.0.0.1:0). They check what the binary does
//! with real gRPC answers: the session cache, role selection, token refresh, the CSV import's
//! re-run safety, and the error line / JSON / exit code for statuses with google.rpc details.
//! The fakes implement only the RPCs the tool calls, with just enough of the real rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use cqrs_proto::directory::v1::{
    self as directory,
    directory_service_server::{DirectoryService, DirectoryServiceServer},
};
use cqrs_proto::identity::v1::{
    self as identity,
    identity_service_server::{IdentityService, IdentityServiceServer},
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

const DESK_ID: &str = "0190a1b2-c3d4-7e5f-8a9b-000000000001";
const DESK_USER_ID: &str = "DSK001";
const DESK_EMAIL: &str = "service.desk@nhs.net";
const DESK_PASSWORD: &str = "Tr0ub4dor&3-desk";
const DESK_ORG_ID: &str = "0190a1b2-c3d4-7e5f-8a9b-0000000000a1";
const REGION_ORG_ID: &str = "0190a1b2-c3d4-7e5f-8a9b-0000000000a2";

// ---------------------------------------------------------------------------------------------
// The fakes

struct Session {
    account_id: String,
    session_token: String,
    active: Option<(String, i32)>,
    ended: bool,
}

struct State {
    ttl_secs: i64,
    sessions: Vec<Session>,
    /// access token -> (session index, expiry)
    tokens: HashMap<String, (usize, DateTime<Utc>)>,
    next: usize,
    refreshes: usize,
    orgs: Vec<directory::Organisation>,
    /// request id -> (fingerprint, answer)
    requests: HashMap<String, (String, directory::Organisation)>,
    creates: usize,
    /// Creates this ODS code but answers UNAVAILABLE, as if the answer was lost.
    lose_answer_for: Option<String>,
    grants: Vec<directory::Grant>,
    audit: Vec<identity::AuditEvent>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn detailed(
    code: Code,
    reason: &str,
    domain: &str,
    message: &str,
    fields: &[(&str, &str)],
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, domain, HashMap::new());
    for (field, description) in fields {
        details.add_bad_request_violation(*field, *description);
    }
    Status::with_error_details(code, message, details)
}

fn org(
    id: &str,
    kind: directory::OrganisationKind,
    ods: &str,
    name: &str,
    parent: &str,
) -> directory::Organisation {
    directory::Organisation {
        id: id.into(),
        kind: kind as i32,
        ods_code: ods.into(),
        name: name.into(),
        parent_id: parent.into(),
        ..Default::default()
    }
}

fn grant(org: &directory::Organisation, role: directory::Role) -> directory::Grant {
    directory::Grant {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: DESK_ID.into(),
        organisation_id: org.id.clone(),
        role: role as i32,
        organisation_name: org.name.clone(),
        ods_code: org.ods_code.clone(),
        organisation_kind: org.kind,
        create_time: None,
    }
}

fn desk_account() -> identity::Account {
    identity::Account {
        id: DESK_ID.into(),
        realm: identity::Realm::National as i32,
        user_id: DESK_USER_ID.into(),
        email: DESK_EMAIL.into(),
        first_name: "Service".into(),
        last_name: "Desk".into(),
        state: identity::AccountState::Active as i32,
        lock_state: identity::LockState::Unlocked as i32,
        ..Default::default()
    }
}

impl Fake {
    fn new() -> Self {
        let desk = org(
            DESK_ORG_ID,
            directory::OrganisationKind::ServiceDesk,
            "X26",
            "CQRS Service Desk",
            "",
        );
        let region = org(
            REGION_ORG_ID,
            directory::OrganisationKind::Region,
            "Y99",
            "Existing Region",
            "",
        );
        let grants = vec![
            grant(&desk, directory::Role::ServiceDesk),
            grant(&region, directory::Role::CommissioningUser),
        ];
        let now = Utc::now();
        let audit = (1..=3)
            .map(|i| identity::AuditEvent {
                id: format!("event-{i}"),
                actor_id: DESK_ID.into(),
                actor_kind: identity::ActorKind::User as i32,
                action: "SIGN_IN".into(),
                target_type: "ACCOUNT".into(),
                target_id: DESK_ID.into(),
                outcome: identity::AuditOutcome::Success as i32,
                request_id: format!("req-{i}"),
                create_time: Some(ts(now - chrono::Duration::hours(4 - i))),
                details: HashMap::new(),
            })
            .collect();
        Fake(Arc::new(Mutex::new(State {
            ttl_secs: 600,
            sessions: Vec::new(),
            tokens: HashMap::new(),
            next: 0,
            refreshes: 0,
            orgs: vec![desk, region],
            requests: HashMap::new(),
            creates: 0,
            lose_answer_for: None,
            grants,
            audit,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

impl State {
    fn issue(&mut self, session: usize) -> (String, prost_types::Timestamp) {
        self.next += 1;
        let token = format!("access-{}", self.next);
        let expires = Utc::now() + chrono::Duration::seconds(self.ttl_secs);
        self.tokens.insert(token.clone(), (session, expires));
        (token, ts(expires))
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<usize, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("no token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("not a bearer token"))?;
        match self.tokens.get(token) {
            Some((session, expires)) if *expires > Utc::now() && !self.sessions[*session].ended => {
                Ok(*session)
            }
            _ => Err(Status::unauthenticated("the access token is not valid")),
        }
    }

    fn active_role<T>(&self, request: &Request<T>) -> Result<Option<i32>, Status> {
        let session = self.caller(request)?;
        Ok(self.sessions[session]
            .active
            .as_ref()
            .map(|(_, role)| *role))
    }

    fn require_desk<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.active_role(request)? == Some(directory::Role::ServiceDesk as i32) {
            Ok(())
        } else {
            Err(detailed(
                Code::PermissionDenied,
                "NO_GRANT_IN_SCOPE",
                "cqrs.directory",
                "the caller may not do this",
                &[],
            ))
        }
    }

    fn session_view(&self, session: usize) -> identity::Session {
        let s = &self.sessions[session];
        identity::Session {
            account_id: s.account_id.clone(),
            active_organisation_id: s.active.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
            active_role: s.active.as_ref().map_or(0, |a| a.1),
            ..Default::default()
        }
    }
}

/// Implements the listed RPCs as UNIMPLEMENTED; the fakes only serve what the tool calls.
macro_rules! fake_service {
    ($trait:ident for $ty:ty { $($real:tt)* } unimplemented { $($name:ident($req:ty) -> $resp:ty;)* }) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $($real)*
            $(
                async fn $name(&self, _request: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

fake_service! {
    IdentityService for Fake {
        async fn sign_in(
            &self,
            request: Request<identity::SignInRequest>,
        ) -> Result<Response<identity::SignInResponse>, Status> {
            let r = request.into_inner();
            if r.login != DESK_USER_ID || r.password != DESK_PASSWORD {
                return Err(detailed(
                    Code::Unauthenticated,
                    "INVALID_CREDENTIALS",
                    "cqrs.identity",
                    "the login or password is wrong, or the account is locked",
                    &[],
                ));
            }
            let mut s = self.state();
            let session_token = format!("session-{}", s.sessions.len());
            s.sessions.push(Session {
                account_id: DESK_ID.into(),
                session_token: session_token.clone(),
                active: None,
                ended: false,
            });
            let index = s.sessions.len() - 1;
            let (access_token, expires_at) = s.issue(index);
            Ok(Response::new(identity::SignInResponse {
                session_token,
                access_token,
                expires_at: Some(expires_at),
                account: Some(desk_account()),
                grants: s.grants.clone(),
                session: Some(s.session_view(index)),
            }))
        }

        async fn select_role(
            &self,
            request: Request<identity::SelectRoleRequest>,
        ) -> Result<Response<identity::SelectRoleResponse>, Status> {
            let mut s = self.state();
            let session = s.caller(&request)?;
            let r = request.into_inner();
            let Some(grant) = s
                .grants
                .iter()
                .find(|g| g.organisation_id == r.organisation_id && g.role == r.role)
                .cloned()
            else {
                return Err(detailed(Code::PermissionDenied, "NO_GRANT", "cqrs.identity", "not your grant", &[]));
            };
            s.sessions[session].active = Some((grant.organisation_id.clone(), grant.role));
            let (access_token, expires_at) = s.issue(session);
            Ok(Response::new(identity::SelectRoleResponse {
                access_token,
                expires_at: Some(expires_at),
                grant: Some(grant),
            }))
        }

        async fn refresh_access_token(
            &self,
            request: Request<identity::RefreshAccessTokenRequest>,
        ) -> Result<Response<identity::RefreshAccessTokenResponse>, Status> {
            let mut s = self.state();
            let token = request.into_inner().session_token;
            let Some(index) = s
                .sessions
                .iter()
                .position(|x| x.session_token == token && !x.ended)
            else {
                return Err(Status::unauthenticated("the session has ended"));
            };
            s.refreshes += 1;
            let (access_token, expires_at) = s.issue(index);
            Ok(Response::new(identity::RefreshAccessTokenResponse {
                access_token,
                expires_at: Some(expires_at),
                session: Some(s.session_view(index)),
            }))
        }

        async fn sign_out(
            &self,
            request: Request<identity::SignOutRequest>,
        ) -> Result<Response<identity::SignOutResponse>, Status> {
            let mut s = self.state();
            let session = s.caller(&request)?;
            s.sessions[session].ended = true;
            Ok(Response::new(identity::SignOutResponse {}))
        }

        async fn get_account(
            &self,
            request: Request<identity::GetAccountRequest>,
        ) -> Result<Response<identity::GetAccountResponse>, Status> {
            self.state().caller(&request)?;
            if request.get_ref().account_id != DESK_ID {
                return Err(detailed(Code::NotFound, "NOT_FOUND", "cqrs.identity", "account not found", &[]));
            }
            Ok(Response::new(identity::GetAccountResponse { account: Some(desk_account()) }))
        }

        async fn lookup_account(
            &self,
            request: Request<identity::LookupAccountRequest>,
        ) -> Result<Response<identity::LookupAccountResponse>, Status> {
            self.state().require_desk(&request)?;
            use identity::lookup_account_request::Key;
            let found = match request.into_inner().key {
                Some(Key::UserId(u)) => u == DESK_USER_ID,
                Some(Key::Email(e)) => e == DESK_EMAIL,
                None => false,
            };
            if found {
                Ok(Response::new(identity::LookupAccountResponse { account: Some(desk_account()) }))
            } else {
                Err(detailed(Code::NotFound, "NOT_FOUND", "cqrs.identity", "account not found", &[]))
            }
        }

        async fn list_audit_events(
            &self,
            request: Request<identity::ListAuditEventsRequest>,
        ) -> Result<Response<identity::ListAuditEventsResponse>, Status> {
            let s = self.state();
            s.require_desk(&request)?;
            let r = request.into_inner();
            let mut events: Vec<identity::AuditEvent> = s
                .audit
                .iter()
                .filter(|e| {
                    r.start_time
                        .as_ref()
                        .is_none_or(|start| e.create_time.as_ref().is_some_and(|t| t.seconds >= start.seconds))
                })
                .cloned()
                .collect();
            events.reverse();
            events.truncate(usize::try_from(r.page_size).unwrap());
            Ok(Response::new(identity::ListAuditEventsResponse {
                audit_events: events,
                next_page_token: String::new(),
            }))
        }
    }
    unimplemented {
        issue_service_token(identity::IssueServiceTokenRequest) -> identity::IssueServiceTokenResponse;
        get_signing_keys(identity::GetSigningKeysRequest) -> identity::GetSigningKeysResponse;
        create_account(identity::CreateAccountRequest) -> identity::CreateAccountResponse;
        complete_registration(identity::CompleteRegistrationRequest) -> identity::CompleteRegistrationResponse;
        change_password(identity::ChangePasswordRequest) -> identity::ChangePasswordResponse;
        request_password_reset(identity::RequestPasswordResetRequest) -> identity::RequestPasswordResetResponse;
        reset_password(identity::ResetPasswordRequest) -> identity::ResetPasswordResponse;
        remind_user_id(identity::RemindUserIdRequest) -> identity::RemindUserIdResponse;
        send_password_reset(identity::SendPasswordResetRequest) -> identity::SendPasswordResetResponse;
        unlock_account(identity::UnlockAccountRequest) -> identity::UnlockAccountResponse;
        disable_account(identity::DisableAccountRequest) -> identity::DisableAccountResponse;
        enable_account(identity::EnableAccountRequest) -> identity::EnableAccountResponse;
        list_accounts(identity::ListAccountsRequest) -> identity::ListAccountsResponse;
        end_sessions(identity::EndSessionsRequest) -> identity::EndSessionsResponse;
    }
}

fn parent_kind(kind: i32) -> Option<i32> {
    use directory::OrganisationKind as K;
    match K::try_from(kind).ok()? {
        K::CommissioningOrganisation => Some(K::Region as i32),
        K::ServiceProvider => Some(K::CommissioningOrganisation as i32),
        _ => None,
    }
}

fake_service! {
    DirectoryService for Fake {
        async fn create_organisation(
            &self,
            request: Request<directory::CreateOrganisationRequest>,
        ) -> Result<Response<directory::CreateOrganisationResponse>, Status> {
            let mut s = self.state();
            s.require_desk(&request)?;
            let r = request.into_inner();
            let fingerprint = format!("{}|{}|{}|{}", r.kind, r.ods_code, r.name, r.parent_id);
            if let Some((earlier, answer)) = s.requests.get(&r.request_id) {
                return if *earlier == fingerprint {
                    Ok(Response::new(directory::CreateOrganisationResponse { organisation: Some(answer.clone()) }))
                } else {
                    Err(detailed(Code::AlreadyExists, "REQUEST_ID_REUSED", "cqrs.directory", "the request id was already used for a different request", &[]))
                };
            }
            let mut violations = Vec::new();
            if r.name.trim().is_empty() {
                violations.push(("name", "is required"));
            }
            let needs_parent = parent_kind(r.kind).is_some();
            if needs_parent && r.parent_id.is_empty() {
                violations.push(("parent_id", "is required"));
            }
            if !violations.is_empty() {
                return Err(detailed(Code::InvalidArgument, "INVALID_ARGUMENT", "cqrs.directory", "the request has invalid fields", &violations));
            }
            let ods = r.ods_code.trim().to_ascii_uppercase();
            if let Some(want) = parent_kind(r.kind) {
                let Some(parent) = s.orgs.iter().find(|o| o.id == r.parent_id) else {
                    return Err(detailed(Code::NotFound, "NOT_FOUND", "cqrs.directory", "parent organisation not found", &[]));
                };
                if parent.kind != want {
                    return Err(detailed(Code::FailedPrecondition, "PARENT_KIND_MISMATCH", "cqrs.directory", "a SERVICE_PROVIDER must sit under a COMMISSIONING_ORGANISATION", &[]));
                }
            }
            if s.orgs.iter().any(|o| o.ods_code == ods) {
                return Err(detailed(Code::AlreadyExists, "ODS_CODE_TAKEN", "cqrs.directory", "an organisation with this ODS code already exists", &[]));
            }
            let created = org(&uuid::Uuid::new_v4().to_string(), directory::OrganisationKind::try_from(r.kind).unwrap(), &ods, r.name.trim(), &r.parent_id);
            s.orgs.push(created.clone());
            s.creates += 1;
            s.requests.insert(r.request_id.clone(), (fingerprint, created.clone()));
            if s.lose_answer_for.as_deref() == Some(ods.as_str()) {
                return Err(detailed(Code::Unavailable, "UNAVAILABLE", "cqrs.directory", "the answer was lost", &[]));
            }
            Ok(Response::new(directory::CreateOrganisationResponse { organisation: Some(created) }))
        }

        async fn get_organisation(
            &self,
            request: Request<directory::GetOrganisationRequest>,
        ) -> Result<Response<directory::GetOrganisationResponse>, Status> {
            let s = self.state();
            s.caller(&request)?;
            match s.orgs.iter().find(|o| o.id == request.get_ref().organisation_id) {
                Some(o) => Ok(Response::new(directory::GetOrganisationResponse { organisation: Some(o.clone()) })),
                None => Err(detailed(Code::NotFound, "NOT_FOUND", "cqrs.directory", "organisation not found", &[])),
            }
        }

        async fn search_organisations(
            &self,
            request: Request<directory::SearchOrganisationsRequest>,
        ) -> Result<Response<directory::SearchOrganisationsResponse>, Status> {
            let s = self.state();
            let q = request.into_inner().query;
            if q.trim().chars().count() < 2 {
                return Err(detailed(Code::InvalidArgument, "INVALID_ARGUMENT", "cqrs.directory", "the request has invalid fields", &[("query", "must be at least 2 characters")]));
            }
            let lower = q.trim().to_lowercase();
            let organisations = s
                .orgs
                .iter()
                .filter(|o| o.ods_code.eq_ignore_ascii_case(q.trim()) || o.name.to_lowercase().starts_with(&lower))
                .cloned()
                .collect();
            Ok(Response::new(directory::SearchOrganisationsResponse { organisations, next_page_token: String::new() }))
        }

        async fn list_grants(
            &self,
            request: Request<directory::ListGrantsRequest>,
        ) -> Result<Response<directory::ListGrantsResponse>, Status> {
            let s = self.state();
            s.caller(&request)?;
            let account = request.into_inner().account_id;
            let grants = s.grants.iter().filter(|g| g.account_id == account).cloned().collect();
            Ok(Response::new(directory::ListGrantsResponse { grants, next_page_token: String::new() }))
        }
    }
    unimplemented {
        list_organisations(directory::ListOrganisationsRequest) -> directory::ListOrganisationsResponse;
        set_approval_level(directory::SetApprovalLevelRequest) -> directory::SetApprovalLevelResponse;
        grant_role(directory::GrantRoleRequest) -> directory::GrantRoleResponse;
        revoke_role(directory::RevokeRoleRequest) -> directory::RevokeRoleResponse;
        revoke_all_roles(directory::RevokeAllRolesRequest) -> directory::RevokeAllRolesResponse;
        list_members(directory::ListMembersRequest) -> directory::ListMembersResponse;
        check_permission(directory::CheckPermissionRequest) -> directory::CheckPermissionResponse;
        list_administrators(directory::ListAdministratorsRequest) -> directory::ListAdministratorsResponse;
        list_audit_events(directory::ListAuditEventsRequest) -> directory::ListAuditEventsResponse;
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary

struct Env {
    fake: Fake,
    url: String,
    home: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The JSON error object printed after the one-line message in json mode.
    fn json_error(&self) -> serde_json::Value {
        let line = self.stderr.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON error ({e}): {self:?}"))
    }
}

impl Env {
    fn start() -> Env {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fake = Fake::new();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(IdentityServiceServer::new(fake.clone()))
            .add_service(DirectoryServiceServer::new(fake.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        runtime.spawn(server);
        Env {
            fake,
            url,
            home: tempfile::tempdir().unwrap(),
            _runtime: runtime,
        }
    }

    fn cache_path(&self) -> PathBuf {
        self.home.path().join("cqrsctl").join("default.json")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cqrsctl"));
        for var in ["CQRSCTL_PROFILE", "CQRSCTL_TIMEOUT"] {
            cmd.env_remove(var);
        }
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("CQRSCTL_IDENTITY_URL", &self.url)
            .env("CQRSCTL_DIRECTORY_URL", &self.url)
            // Nothing listens there: these tests never need them.
            .env("CQRSCTL_ACCESS_URL", "http://127.0.0.1:9")
            .env("CQRSCTL_NOTIFICATIONS_URL", "http://127.0.0.1:9")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn login(&self, extra: &[&str]) -> Out {
        let mut args = vec!["login", "--user-id", "dsk001", "--password-stdin"];
        args.extend_from_slice(extra);
        self.run(&args, Some(&format!("{DESK_PASSWORD}\n")))
    }

    fn login_desk(&self) {
        let out = self.login(&["--role", "service-desk", "--organisation", "X26"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn login_with_several_grants_then_use_role_whoami_and_logout() {
    let env = Env::start();
    let out = env.login(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("signed in with no active role"),
        "{out:?}"
    );
    assert!(out.stdout.contains("(none selected)"), "{out:?}");

    // The cache: private, with tokens, without the password.
    let text = std::fs::read_to_string(env.cache_path()).unwrap();
    assert!(!text.contains(DESK_PASSWORD));
    assert!(!text.to_lowercase().contains("password"));
    assert!(text.contains("session-0"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.cache_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Without options, use-role lists the grants to pick from.
    let out = env.run(&["use-role"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("SERVICE_DESK") && out.stdout.contains("COMMISSIONING_USER"),
        "{out:?}"
    );

    let out = env.run(&["use-role", "--role", "service-desk"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["whoami", "--output", "json"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let me = out.json();
    assert_eq!(me["active_role"], "SERVICE_DESK");
    assert_eq!(me["active_ods_code"], "X26");
    assert_eq!(me["user_id"], DESK_USER_ID);
    assert_eq!(me["profile"], "default");

    let out = env.run(&["logout"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!env.cache_path().exists());
    assert!(env.fake.state().sessions.iter().all(|s| s.ended));

    let out = env.run(&["whoami"], None);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: UNAUTHENTICATED: not signed in"),
        "{out:?}"
    );
    // Logging out twice is fine.
    assert_eq!(env.run(&["logout"], None).code, 0);
}

#[test]
fn wrong_password_exits_3_and_caches_nothing() {
    let env = Env::start();
    let out = env.run(
        &[
            "login",
            "--user-id",
            DESK_USER_ID,
            "--password-stdin",
            "--output",
            "json",
        ],
        Some("wrong\n"),
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: UNAUTHENTICATED (reason INVALID_CREDENTIALS): "),
        "{out:?}"
    );
    assert_eq!(out.json_error()["error"]["reason"], "INVALID_CREDENTIALS");
    assert_eq!(out.json_error()["error"]["exit_code"], 3);
    assert!(!env.cache_path().exists());
}

#[test]
fn login_selects_the_named_grant_or_reports_no_match() {
    let env = Env::start();
    let out = env.login(&[
        "--role",
        "SERVICE_DESK",
        "--organisation",
        "x26",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["active_role"], "SERVICE_DESK");
    assert_eq!(out.json()["active_organisation_id"], DESK_ORG_ID);

    let out = env.login(&["--role", "practice-user"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("no grant of the account fits"),
        "{out:?}"
    );
    // Signed in all the same, without a role; the earlier session was ended first.
    assert!(env.cache_path().exists());
    let s = env.fake.state();
    assert_eq!(s.sessions.len(), 2);
    assert!(s.sessions[0].ended && !s.sessions[1].ended);
}

#[test]
fn expiring_tokens_are_refreshed_and_ended_sessions_need_a_new_login() {
    let env = Env::start();
    env.fake.state().ttl_secs = 30; // inside the tool's 60 s refresh margin
    env.login_desk();
    let before = std::fs::read_to_string(env.cache_path()).unwrap();

    let out = env.run(&["whoami"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.fake.state().refreshes, 1);
    let after = std::fs::read_to_string(env.cache_path()).unwrap();
    assert_ne!(before, after, "the refreshed token is cached");
    // The active grant survives the refresh.
    assert!(out.stdout.contains("SERVICE_DESK"), "{out:?}");

    for s in &mut env.fake.state().sessions {
        s.ended = true;
    }
    let out = env.run(&["whoami"], None);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("has ended"), "{out:?}");
}

#[test]
fn org_commands_and_error_mapping() {
    let env = Env::start();
    env.login_desk();

    let out = env.run(
        &[
            "org", "create", "--kind", "region", "--ods", "y56", "--name", "London", "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["ods_code"], "Y56");
    assert_eq!(out.json()["kind"], "REGION");
    assert_eq!(out.json()["parent_id"], serde_json::Value::Null);

    let out = env.run(&["org", "search", "lon", "--output", "json"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json().as_array().unwrap().len(), 1);

    let out = env.run(&["org", "get", "Y56"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("London"), "{out:?}");

    // FAILED_PRECONDITION -> 6, with the reason.
    let out = env.run(
        &[
            "org",
            "create",
            "--kind",
            "service-provider",
            "--ods",
            "A81001",
            "--name",
            "Surgery",
            "--parent",
            "Y56",
        ],
        None,
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        "error: FAILED_PRECONDITION (reason PARENT_KIND_MISMATCH): a SERVICE_PROVIDER must sit under a COMMISSIONING_ORGANISATION"
    );

    // INVALID_ARGUMENT -> 6, with every field violation on the line and in the JSON.
    let out = env.run(
        &[
            "org",
            "create",
            "--kind",
            "commissioning-organisation",
            "--ods",
            "15N",
            "--name",
            " ",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        "error: INVALID_ARGUMENT (reason INVALID_ARGUMENT): the request has invalid fields; name: is required; parent_id: is required"
    );
    let err = out.json_error();
    assert_eq!(err["error"]["violations"].as_array().unwrap().len(), 2);
    assert_eq!(err["error"]["violations"][1]["field"], "parent_id");
    assert_eq!(err["error"]["domain"], "cqrs.directory");
    assert!(out.stdout.is_empty(), "{out:?}");

    // ALREADY_EXISTS -> 7.
    let out = env.run(
        &[
            "org", "create", "--kind", "region", "--ods", "Y56", "--name", "London",
        ],
        None,
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stderr.contains("(reason ODS_CODE_TAKEN)"), "{out:?}");

    // NOT_FOUND -> 5 (a name that resolves to nothing).
    let out = env.run(&["org", "get", "ZZZ9"], None);
    assert_eq!(out.code, 5, "{out:?}");

    // PERMISSION_DENIED -> 4.
    assert_eq!(
        env.run(&["use-role", "--role", "commissioning-user"], None)
            .code,
        0
    );
    let out = env.run(
        &[
            "org", "create", "--kind", "region", "--ods", "Y57", "--name", "South",
        ],
        None,
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: PERMISSION_DENIED (reason NO_GRANT_IN_SCOPE)"),
        "{out:?}"
    );
}

#[test]
fn account_lookup() {
    let env = Env::start();
    env.login_desk();
    let out = env.run(
        &[
            "account",
            "lookup",
            "--user-id",
            "dsk001",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["email"], DESK_EMAIL);
    assert_eq!(out.json()["state"], "ACTIVE");
    let out = env.run(&["account", "lookup", "--email", DESK_EMAIL], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.lines().next().unwrap().starts_with("ID "),
        "{out:?}"
    );
    let out = env.run(&["account", "lookup", "--email", "nobody@nhs.net"], None);
    assert_eq!(out.code, 5, "{out:?}");
    // `account get` takes a User ID too.
    let out = env.run(&["account", "get", "DSK001", "--output", "json"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["id"], DESK_ID);
}

#[test]
fn import_can_be_rerun_after_a_failure_without_creating_twice() {
    let env = Env::start();
    env.login_desk();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("orgs.csv");
    std::fs::write(
        &csv,
        "ods_code,name,kind,parent_ods\n\
         Y56,London,region,\n\
         15N,North Central London,commissioning-organisation,Y56\n\
         A81001,The Surgery,service-provider,15N\n\
         A81002,Orphan Surgery,service-provider,ZZZ9\n\
         A81003,Third Surgery,service-provider,15N\n",
    )
    .unwrap();
    let csv = csv.to_str().unwrap();

    // A81001 is created but its answer is lost: the run stops there.
    env.fake.state().lose_answer_for = Some("A81001".into());
    let out = env.run(
        &["org", "import", csv, "--no-progress", "--output", "json"],
        None,
    );
    assert_eq!(out.code, 8, "{out:?}");
    let summary = out.json();
    assert_eq!(
        (summary["created"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(summary["rows"][2]["error"]["code"], "UNAVAILABLE");
    assert_eq!(summary["rows"][3]["error"]["code"], "NOT_ATTEMPTED");
    assert_eq!(env.fake.state().creates, 3);

    // Re-run: what exists is reported as existing; the orphan fails; the rest is created.
    env.fake.state().lose_answer_for = None;
    let out = env.run(
        &["org", "import", csv, "--no-progress", "--output", "json"],
        None,
    );
    assert_eq!(out.code, 5, "{out:?}");
    let summary = out.json();
    let outcomes: Vec<&str> = summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["existing", "existing", "existing", "failed", "created"]
    );
    assert!(
        summary["rows"][3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ZZZ9"),
        "{summary}"
    );
    {
        let s = env.fake.state();
        assert_eq!(s.creates, 4);
        assert_eq!(s.orgs.iter().filter(|o| o.ods_code == "A81001").count(), 1);
        let a81003 = s.orgs.iter().find(|o| o.ods_code == "A81003").unwrap();
        let n15 = s.orgs.iter().find(|o| o.ods_code == "15N").unwrap();
        assert_eq!(a81003.parent_id, n15.id);
    }

    // Fixed file: nothing left to do; table output with a summary line.
    let fixed = dir.path().join("fixed.csv");
    let text = std::fs::read_to_string(csv)
        .unwrap()
        .replace("A81002,Orphan Surgery,service-provider,ZZZ9\n", "");
    std::fs::write(&fixed, text).unwrap();
    let out = env.run(
        &["org", "import", fixed.to_str().unwrap(), "--no-progress"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.ends_with("0 created, 4 existing, 0 failed\n"),
        "{out:?}"
    );
    assert!(out.stdout.starts_with("LINE  ODS"), "{out:?}");
    assert_eq!(env.fake.state().creates, 4);
}

#[test]
fn invalid_import_files_send_nothing() {
    let env = Env::start();
    env.login_desk();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "ods_code,name,kind,parent_ods\nA81001,Surgery,service-provider,15N\n15N,Board,commissioning-organisation,Y99\n").unwrap();
    let out = env.run(
        &["org", "import", csv.to_str().unwrap(), "--output", "json"],
        None,
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr
            .contains("line 2: parent_ods: 15N is defined on line 3"),
        "{out:?}"
    );
    assert_eq!(
        out.json_error()["error"]["violations"][0]["field"],
        "line 2: parent_ods"
    );
    assert_eq!(env.fake.state().creates, 0);

    // --dry-run prints the plan with the request ids it would use.
    std::fs::write(
        &csv,
        "ods_code,name,kind,parent_ods\n15N,Board,commissioning-organisation,Y99\n",
    )
    .unwrap();
    let out = env.run(
        &[
            "org",
            "import",
            csv.to_str().unwrap(),
            "--dry-run",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()[0]["outcome"], "planned");
    assert_eq!(
        out.json()[0]["request_id"],
        cqrsctl::import::request_id_for("15N").to_string()
    );
    assert_eq!(env.fake.state().creates, 0);
}

#[test]
fn audit_tail_shows_the_latest_events_newest_first() {
    let env = Env::start();
    env.login_desk();
    let out = env.run(
        &["audit", "tail", "--service", "identity", "--output", "json"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let events = out.json();
    let ids: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["event-3", "event-2", "event-1"]);

    let out = env.run(
        &["audit", "tail", "--service", "identity", "--limit", "1"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert!(out.stdout.contains("SIGN_IN"), "{out:?}");

    // --since is sent as start_time: events are 3, 2 and 1 hours old.
    let out = env.run(
        &[
            "audit",
            "tail",
            "--service",
            "identity",
            "--since",
            "150m",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json().as_array().unwrap().len(), 2);
}

#[test]
fn a_failed_login_keeps_the_current_session() {
    let env = Env::start();
    env.login_desk();
    let out = env.run(
        &["login", "--user-id", DESK_USER_ID, "--password-stdin"],
        Some("typo\n"),
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(!env.fake.state().sessions[0].ended);
    assert_eq!(env.run(&["whoami"], None).code, 0);
}
