//! Command implementations and what they share: the context (profile, channels, token) and
//! paging.

mod access;
mod account;
mod audit;
mod audit_verify;
mod auth;
mod org;

use std::future::Future;
use std::time::Duration;

use cqrs_proto::access::v1::access_service_client::AccessServiceClient;
use cqrs_proto::audit::v1::audit_chain_service_client::AuditChainServiceClient;
use cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient;
use cqrs_proto::identity::v1 as identity;
use cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cqrs_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use cqrs_rules::clock::{Clock, SystemClock};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cli::{Cli, Command};
use crate::client::{self, Auth, Endpoints, TokenSlot};
use crate::errors::CliError;
use crate::output::{self, Format, View};
use crate::profile::{ActiveGrant, Profile, ProfileStore};
use crate::{enums, views};

/// Refresh the access token when less than this is left.
const REFRESH_MARGIN_SECS: i64 = 60;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut ctx = Ctx::new(&cli)?;
    match cli.command {
        Command::Login(args) => auth::login(&mut ctx, args).await,
        Command::Logout(args) => auth::logout(&mut ctx, args).await,
        Command::Whoami => auth::whoami(&mut ctx).await,
        Command::UseRole(args) => auth::use_role(&mut ctx, args).await,
        Command::Org(cmd) => org::run(&mut ctx, cmd).await,
        Command::Invite(args) => access::invite(&mut ctx, args).await,
        Command::Invitations(cmd) => access::invitations(&mut ctx, cmd).await,
        Command::Registrations(cmd) => access::registrations(&mut ctx, cmd).await,
        Command::AccessRequests(cmd) => access::access_requests(&mut ctx, cmd).await,
        Command::Account(cmd) => account::run(&mut ctx, cmd).await,
        Command::Grants(cmd) => account::grants(&mut ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&mut ctx, cmd).await,
    }
}

/// What every command works with.
pub struct Ctx {
    pub format: Format,
    pub profile_name: String,
    store: ProfileStore,
    endpoints: Endpoints,
    timeout: Duration,
    token: TokenSlot,
    session: Option<Profile>,
    channels: [Option<Channel>; 4],
}

#[derive(Clone, Copy)]
enum Svc {
    Identity = 0,
    Directory = 1,
    Access = 2,
    Notifications = 3,
}

impl Ctx {
    fn new(cli: &Cli) -> Result<Self, CliError> {
        // A bad URL is a usage error whichever service the command turns out to need.
        for url in [
            &cli.identity_url,
            &cli.directory_url,
            &cli.access_url,
            &cli.notifications_url,
        ] {
            client::endpoint(url, cli.timeout)?;
        }
        Ok(Ctx {
            format: cli.output,
            profile_name: cli.profile.clone(),
            store: ProfileStore::from_env()?,
            endpoints: Endpoints {
                identity: cli.identity_url.clone(),
                directory: cli.directory_url.clone(),
                access: cli.access_url.clone(),
                notifications: cli.notifications_url.clone(),
            },
            timeout: cli.timeout,
            token: TokenSlot::default(),
            session: None,
            channels: [None, None, None, None],
        })
    }

    fn channel(&mut self, svc: Svc) -> Result<Channel, CliError> {
        let slot = &mut self.channels[svc as usize];
        if let Some(channel) = slot {
            return Ok(channel.clone());
        }
        let url = match svc {
            Svc::Identity => &self.endpoints.identity,
            Svc::Directory => &self.endpoints.directory,
            Svc::Access => &self.endpoints.access,
            Svc::Notifications => &self.endpoints.notifications,
        };
        let channel = client::lazy_channel(url, self.timeout)?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    fn auth(&self) -> Auth {
        Auth::bearer(self.token.clone(), self.timeout)
    }

    pub fn identity(&mut self) -> Result<client::Identity, CliError> {
        let auth = self.auth();
        Ok(IdentityServiceClient::with_interceptor(
            self.channel(Svc::Identity)?,
            auth,
        ))
    }

    /// Identity without a token, for the public SignIn and RefreshAccessToken.
    pub fn identity_anonymous(&mut self) -> Result<client::Identity, CliError> {
        let auth = Auth::anonymous(self.timeout);
        Ok(IdentityServiceClient::with_interceptor(
            self.channel(Svc::Identity)?,
            auth,
        ))
    }

    pub fn directory(&mut self) -> Result<client::Directory, CliError> {
        let auth = self.auth();
        Ok(DirectoryServiceClient::with_interceptor(
            self.channel(Svc::Directory)?,
            auth,
        ))
    }

    pub fn access(&mut self) -> Result<client::Access, CliError> {
        let auth = self.auth();
        Ok(AccessServiceClient::with_interceptor(
            self.channel(Svc::Access)?,
            auth,
        ))
    }

    pub fn notifications(&mut self) -> Result<client::Notifications, CliError> {
        let auth = self.auth();
        Ok(NotificationServiceClient::with_interceptor(
            self.channel(Svc::Notifications)?,
            auth,
        ))
    }

    /// A service's audit chain (`cqrs.audit.v1`), every service serving its own.
    pub fn audit_chain(
        &mut self,
        service: crate::cli::Service,
    ) -> Result<client::AuditChain, CliError> {
        let svc = match service {
            crate::cli::Service::Identity => Svc::Identity,
            crate::cli::Service::Directory => Svc::Directory,
            crate::cli::Service::Access => Svc::Access,
            crate::cli::Service::Notifications => Svc::Notifications,
        };
        let auth = self.auth();
        Ok(AuditChainServiceClient::with_interceptor(
            self.channel(svc)?,
            auth,
        ))
    }

    pub fn identity_url(&self) -> &str {
        &self.endpoints.identity
    }

    pub fn store(&self) -> &ProfileStore {
        &self.store
    }

    /// The cached session without network calls, if any.
    pub fn cached(&mut self) -> Result<Option<Profile>, CliError> {
        if self.session.is_none() {
            self.session = self.store.load(&self.profile_name)?;
        }
        Ok(self.session.clone())
    }

    /// The signed-in session, with an access token that is good for at least a minute
    /// (refreshed with RefreshAccessToken when needed). Every call re-checks, so long runs
    /// (imports, `audit tail --follow`) keep working.
    pub async fn signed_in(&mut self) -> Result<Profile, CliError> {
        let Some(mut profile) = self.cached()? else {
            return Err(CliError::NotSignedIn(format!(
                "not signed in (profile `{}`); run `cqrsctl login`",
                self.profile_name
            )));
        };
        if profile.identity_url != self.endpoints.identity {
            return Err(CliError::NotSignedIn(format!(
                "profile `{}` is signed in at {}, not {}; sign in again or use another --profile",
                self.profile_name, profile.identity_url, self.endpoints.identity
            )));
        }
        if profile.needs_refresh(
            SystemClock.now(),
            chrono::Duration::seconds(REFRESH_MARGIN_SECS),
        ) {
            profile = self.refresh(profile).await?;
        }
        self.token.set(Some(profile.access_token.clone()));
        Ok(profile)
    }

    async fn refresh(&mut self, mut profile: Profile) -> Result<Profile, CliError> {
        let answer = self
            .identity_anonymous()?
            .refresh_access_token(identity::RefreshAccessTokenRequest {
                session_token: profile.session_token.clone(),
            })
            .await
            .map_err(|status| match status.code() {
                Code::Unauthenticated | Code::NotFound | Code::PermissionDenied => {
                    CliError::NotSignedIn(format!(
                        "the session of profile `{}` has ended; run `cqrsctl login`",
                        self.profile_name
                    ))
                }
                _ => CliError::from(status),
            })?
            .into_inner();
        profile.access_token = answer.access_token;
        if let Some(expires) = views::to_time(answer.expires_at.as_ref()) {
            profile.access_token_expires_at = expires;
        }
        if let Some(session) = answer.session {
            profile.session_expires_at = views::to_time(session.expire_time.as_ref());
            profile.active_grant = merge_grant(
                profile.active_grant.take(),
                &session.active_organisation_id,
                session.active_role,
            );
        }
        self.save(profile.clone())?;
        Ok(profile)
    }

    /// Caches `profile` and makes its token the one sent.
    pub fn save(&mut self, profile: Profile) -> Result<(), CliError> {
        self.store.save(&self.profile_name, &profile)?;
        self.token.set(Some(profile.access_token.clone()));
        self.session = Some(profile);
        Ok(())
    }

    /// Forgets the cached session.
    pub fn forget(&mut self) -> Result<bool, CliError> {
        self.session = None;
        self.token.set(None);
        self.store.delete(&self.profile_name)
    }

    pub fn emit_one<T: View>(&self, item: &T) -> Result<(), CliError> {
        output::emit(&output::render_one(item, self.format)?)
    }

    pub fn emit_list<T: View>(&self, items: &[T]) -> Result<(), CliError> {
        output::emit(&output::render_list(items, self.format)?)
    }

    pub fn note(&self, text: &str) {
        output::note(self.format, text);
    }
}

/// The active grant after a refresh: the session's, keeping the cached display names when it
/// is still the same grant.
fn merge_grant(
    cached: Option<ActiveGrant>,
    organisation_id: &str,
    role: i32,
) -> Option<ActiveGrant> {
    if organisation_id.is_empty() {
        return None;
    }
    let role = enums::role_name(role);
    match cached {
        Some(g) if g.organisation_id == organisation_id && g.role == role => Some(g),
        _ => Some(ActiveGrant {
            organisation_id: organisation_id.to_owned(),
            role,
            organisation_name: None,
            ods_code: None,
        }),
    }
}

/// Largest page asked for by list commands.
const PAGE_SIZE: u32 = 100;

/// Follows `next_page_token` until `limit` items are collected. Returns the items and whether
/// more were left.
pub async fn collect_pages<T, F, Fut>(limit: u32, mut fetch: F) -> Result<(Vec<T>, bool), Status>
where
    F: FnMut(String, i32) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Status>>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let want = limit.saturating_sub(items.len()).min(PAGE_SIZE as usize);
        let page_size = i32::try_from(want).unwrap_or(PAGE_SIZE as i32);
        let (page, next) = fetch(std::mem::take(&mut token), page_size).await?;
        let got = page.len();
        items.extend(page);
        if next.is_empty() || got == 0 {
            return Ok((items, false));
        }
        if items.len() >= limit {
            items.truncate(limit);
            return Ok((items, true));
        }
        token = next;
    }
}

/// Prints a list and, in table mode, says when `--limit` cut it short.
pub fn emit_page<T: View>(ctx: &Ctx, items: &[T], more: bool) -> Result<(), CliError> {
    ctx.emit_list(items)?;
    if more {
        ctx.note(&format!(
            "(showing the first {}; use --limit to see more)",
            items.len()
        ));
    }
    Ok(())
}

/// A command-line id that may be a UUID.
pub fn is_uuid(raw: &str) -> bool {
    uuid::Uuid::parse_str(raw.trim()).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[tokio::test]
    async fn pages_are_followed_up_to_the_limit() {
        let calls = RefCell::new(Vec::new());
        let fetch = |token: String, size: i32| {
            calls.borrow_mut().push((token.clone(), size));
            let start: usize = token.parse().unwrap_or(0);
            let end = (start + size as usize).min(250);
            let next = if end < 250 {
                end.to_string()
            } else {
                String::new()
            };
            async move { Ok(((start..end).collect::<Vec<_>>(), next)) }
        };
        let (items, more) = collect_pages(120, fetch).await.unwrap();
        assert_eq!(items.len(), 120);
        assert!(more);
        assert_eq!(
            calls.borrow().clone(),
            vec![(String::new(), 100), ("100".to_owned(), 20)]
        );

        let (items, more) = collect_pages(1000, fetch).await.unwrap();
        assert_eq!(items.len(), 250);
        assert!(!more);
    }

    #[test]
    fn refresh_keeps_grant_names_for_the_same_grant() {
        let cached = ActiveGrant {
            organisation_id: "o1".into(),
            role: "SERVICE_DESK".into(),
            organisation_name: Some("Desk".into()),
            ods_code: Some("X26".into()),
        };
        let same = merge_grant(Some(cached.clone()), "o1", 1).unwrap();
        assert_eq!(same, cached);
        let other = merge_grant(Some(cached), "o2", 1).unwrap();
        assert_eq!(other.organisation_name, None);
        assert_eq!(merge_grant(None, "", 0), None);
    }
}
