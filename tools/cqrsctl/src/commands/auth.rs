//! `login`, `logout`, `whoami`, `use-role`.

use std::io::{BufRead, IsTerminal};

use cqrs_proto::common::v1 as common;
use cqrs_proto::directory::v1 as directory;
use cqrs_proto::identity::v1 as identity;
use cqrs_rules::clock::{Clock, SystemClock};
use tonic::Code;

use super::Ctx;
use crate::cli::{LoginArgs, LogoutArgs, UseRoleArgs};
use crate::enums;
use crate::errors::CliError;
use crate::profile::{ActiveGrant, CachedAccount, Profile};
use crate::views::{self, GrantView, SessionView};

/// Which grant `--role` / `--organisation` (or their absence) picks.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// Exactly one grant fits.
    One(&'a directory::Grant),
    /// The account has no grants at all.
    NoGrants,
    /// Several fit; the user has to say which.
    Ambiguous(Vec<&'a directory::Grant>),
    /// The options given match none of the account's grants.
    NoMatch,
}

/// `organisation` matches a grant's organisation id, or its ODS code in any case.
pub fn pick_grant<'a>(
    grants: &'a [directory::Grant],
    role: Option<common::Role>,
    organisation: Option<&str>,
) -> Pick<'a> {
    if grants.is_empty() {
        return Pick::NoGrants;
    }
    let organisation = organisation.map(str::trim);
    let fits: Vec<&directory::Grant> = grants
        .iter()
        .filter(|g| role.is_none_or(|r| g.role == r as i32))
        .filter(|g| {
            organisation.is_none_or(|o| {
                g.organisation_id == o
                    || (!g.ods_code.is_empty() && g.ods_code.eq_ignore_ascii_case(o))
            })
        })
        .collect();
    match fits.as_slice() {
        [] => Pick::NoMatch,
        [one] => Pick::One(one),
        _ => Pick::Ambiguous(fits),
    }
}

fn active_grant(grant: &directory::Grant) -> ActiveGrant {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    ActiveGrant {
        organisation_id: grant.organisation_id.clone(),
        role: enums::role_name(grant.role),
        organisation_name: non_empty(&grant.organisation_name),
        ods_code: non_empty(&grant.ods_code),
    }
}

fn session_view(profile_name: &str, profile: &Profile) -> SessionView {
    let a = &profile.account;
    let g = profile.active_grant.as_ref();
    SessionView {
        profile: profile_name.to_owned(),
        account_id: a.id.clone(),
        user_id: a.user_id.clone(),
        email: a.email.clone(),
        name: format!("{} {}", a.first_name, a.last_name)
            .trim()
            .to_owned(),
        realm: a.realm.clone(),
        active_role: g.map(|g| g.role.clone()),
        active_organisation_id: g.map(|g| g.organisation_id.clone()),
        active_organisation_name: g.and_then(|g| g.organisation_name.clone()),
        active_ods_code: g.and_then(|g| g.ods_code.clone()),
        access_token_expires_at: views::format_time(profile.access_token_expires_at),
        session_expires_at: profile.session_expires_at.map(views::format_time),
    }
}

/// The password: the first line of stdin with `--password-stdin`, else a prompt on the
/// terminal without echo. Never logged, never cached.
fn read_password(from_stdin: bool) -> Result<String, CliError> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Other(format!("cannot read the password from stdin: {e}")))?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
    } else {
        if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
            return Err(CliError::Usage(
                "no terminal to ask for the password on; use --password-stdin".into(),
            ));
        }
        rpassword::prompt_password("Password: ").map_err(|e| {
            CliError::Usage(format!(
                "cannot prompt for the password ({e}); use --password-stdin"
            ))
        })?
    };
    if password.is_empty() {
        return Err(CliError::invalid("the password is empty"));
    }
    Ok(password)
}

async fn select_role(
    ctx: &mut Ctx,
    profile: &mut Profile,
    grant: &directory::Grant,
) -> Result<(), CliError> {
    ctx.save(profile.clone())?;
    let answer = ctx
        .identity()?
        .select_role(identity::SelectRoleRequest {
            organisation_id: grant.organisation_id.clone(),
            role: grant.role,
        })
        .await?
        .into_inner();
    profile.access_token = answer.access_token;
    if let Some(expires) = views::to_time(answer.expires_at.as_ref()) {
        profile.access_token_expires_at = expires;
    }
    profile.active_grant = Some(active_grant(answer.grant.as_ref().unwrap_or(grant)));
    ctx.save(profile.clone())
}

fn list_grants_note(ctx: &Ctx, grants: &[&directory::Grant], what: &str) {
    ctx.note(what);
    let views: Vec<GrantView> = grants.iter().map(|g| GrantView::from(*g)).collect();
    let text = crate::output::table(
        &["ROLE", "ODS", "ORGANISATION", "ORGANISATION ID"],
        &views
            .iter()
            .map(|v| {
                vec![
                    v.role.clone(),
                    crate::output::or_dash(&v.ods_code),
                    crate::output::or_dash(&v.organisation_name),
                    v.organisation_id.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    ctx.note(text.trim_end());
}

/// Signs out a replaced session, refreshing its access token first if it has expired.
async fn end_previous_session(ctx: &mut Ctx, old: &Profile) {
    let mut token = old.access_token.clone();
    if old.needs_refresh(SystemClock.now(), chrono::Duration::seconds(5)) {
        let Ok(mut identity) = ctx.identity_anonymous() else {
            return;
        };
        match identity
            .refresh_access_token(identity::RefreshAccessTokenRequest {
                session_token: old.session_token.clone(),
            })
            .await
        {
            Ok(answer) => token = answer.into_inner().access_token,
            // Already ended (or unreachable: it will expire by itself).
            Err(_) => return,
        }
    }
    ctx.token.set(Some(token));
    if let Ok(mut identity) = ctx.identity() {
        let _ = identity.sign_out(identity::SignOutRequest {}).await;
    }
    ctx.token.set(None);
}

/// The second step of a sign-in: the authenticator code (6 digits) or a recovery code.
async fn complete_sign_in(
    ctx: &mut Ctx,
    challenge_token: &str,
    code: Option<&str>,
) -> Result<identity::SignInResponse, CliError> {
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(CliError::Usage(
            "this account has an authenticator app: sign in again with --code and its \
             6-digit code (or a recovery code)"
                .into(),
        ));
    };
    let digits = code.chars().filter(char::is_ascii_digit).count();
    let (code, recovery_code) = if digits == code.chars().filter(|c| *c != ' ').count() {
        (code.to_owned(), String::new())
    } else {
        (String::new(), code.to_owned())
    };
    let used_recovery_code = !recovery_code.is_empty();
    let done = ctx
        .identity_anonymous()?
        .complete_sign_in(identity::CompleteSignInRequest {
            challenge_token: challenge_token.to_owned(),
            code,
            recovery_code,
        })
        .await?
        .into_inner();
    if used_recovery_code {
        ctx.note(&format!(
            "a recovery code was used; {} left",
            done.recovery_codes_left
        ));
    }
    Ok(done.into())
}

pub async fn login(ctx: &mut Ctx, args: LoginArgs) -> Result<(), CliError> {
    let login = args
        .user_id
        .as_deref()
        .map(|u| u.trim().to_ascii_uppercase())
        .or_else(|| args.email.as_deref().map(|e| e.trim().to_owned()))
        .unwrap_or_default();
    if login.is_empty() {
        return Err(CliError::Usage("give --user-id or --email".into()));
    }
    let password = read_password(args.password_stdin)?;

    let previous = ctx.cached().ok().flatten();
    let mut answer = ctx
        .identity_anonymous()?
        .sign_in(identity::SignInRequest { login, password })
        .await?
        .into_inner();
    if answer.second_factor_required {
        answer = complete_sign_in(ctx, &answer.challenge_token, args.code.as_deref()).await?;
    }
    let account = answer
        .account
        .as_ref()
        .ok_or_else(|| CliError::Other("SignIn answered without an account".into()))?;
    let mut profile = Profile {
        identity_url: ctx.identity_url().to_owned(),
        account: CachedAccount {
            id: account.id.clone(),
            realm: enums::realm_name(account.realm),
            user_id: (!account.user_id.is_empty()).then(|| account.user_id.clone()),
            email: account.email.clone(),
            first_name: account.first_name.clone(),
            last_name: account.last_name.clone(),
        },
        session_token: answer.session_token.clone(),
        access_token: answer.access_token.clone(),
        access_token_expires_at: views::to_time(answer.expires_at.as_ref())
            .unwrap_or_else(|| SystemClock.now()),
        session_expires_at: answer
            .session
            .as_ref()
            .and_then(|s| views::to_time(s.expire_time.as_ref())),
        active_grant: None,
    };
    // The profile's previous session, if any, is ended now that the new one exists (best
    // effort: a failed sign-in above leaves it alone).
    if let Some(old) = previous
        && old.identity_url == ctx.identity_url()
    {
        end_previous_session(ctx, &old).await;
    }
    ctx.save(profile.clone())?;

    let flags_given = args.role.is_some() || args.organisation.is_some();
    match pick_grant(&answer.grants, args.role, args.organisation.as_deref()) {
        Pick::One(grant) => select_role(ctx, &mut profile, grant).await?,
        Pick::NoGrants => ctx.note("signed in; the account has no roles to select"),
        Pick::Ambiguous(grants) if !flags_given => list_grants_note(
            ctx,
            &grants,
            "signed in with no active role; choose one with `cqrsctl use-role --role ROLE --organisation ID|ODS`:",
        ),
        Pick::Ambiguous(grants) => {
            ctx.emit_one(&session_view(&ctx.profile_name, &profile))?;
            list_grants_note(
                ctx,
                &grants,
                "several grants fit; choose one with `cqrsctl use-role`:",
            );
            return Err(CliError::Usage(
                "signed in, but --role/--organisation fit several grants; no role selected".into(),
            ));
        }
        Pick::NoMatch => {
            ctx.emit_one(&session_view(&ctx.profile_name, &profile))?;
            let all: Vec<&directory::Grant> = answer.grants.iter().collect();
            list_grants_note(ctx, &all, "the account's grants:");
            return Err(CliError::NotFound(
                "signed in, but no grant of the account fits --role/--organisation; no role selected"
                    .into(),
            ));
        }
    }
    ctx.emit_one(&session_view(&ctx.profile_name, &profile))
}

pub async fn logout(ctx: &mut Ctx, args: LogoutArgs) -> Result<(), CliError> {
    if ctx.cached()?.is_none() {
        ctx.note(&format!("profile `{}` is not signed in", ctx.profile_name));
        return Ok(());
    }
    let outcome = match ctx.signed_in().await {
        Ok(_) => match ctx.identity()?.sign_out(identity::SignOutRequest {}).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::Unauthenticated => Ok(()),
            Err(status) => Err(CliError::from(status)),
        },
        // The session already ended.
        Err(CliError::NotSignedIn(_)) => Ok(()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            ctx.forget()?;
            ctx.note("signed out");
            Ok(())
        }
        Err(e) if args.force => {
            ctx.forget()?;
            ctx.note(&format!(
                "the session could not be ended at the server ({}); the local cache was deleted",
                e.report().one_line()
            ));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub async fn whoami(ctx: &mut Ctx) -> Result<(), CliError> {
    let mut profile = ctx.signed_in().await?;
    // Confirms the session at the server and shows the account as it is now.
    let answer = ctx
        .identity()?
        .get_account(identity::GetAccountRequest {
            account_id: profile.account.id.clone(),
        })
        .await?
        .into_inner();
    if let Some(a) = answer.account {
        profile.account.email = a.email;
        profile.account.first_name = a.first_name;
        profile.account.last_name = a.last_name;
    }
    ctx.emit_one(&session_view(&ctx.profile_name, &profile))
}

pub async fn use_role(ctx: &mut Ctx, args: UseRoleArgs) -> Result<(), CliError> {
    let mut profile = ctx.signed_in().await?;
    let grants = ctx
        .directory()?
        .list_grants(directory::ListGrantsRequest {
            account_id: profile.account.id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .grants;
    if args.role.is_none() && args.organisation.is_none() && grants.len() != 1 {
        let views: Vec<GrantView> = grants.iter().map(GrantView::from).collect();
        ctx.emit_list(&views)?;
        ctx.note("choose one with `cqrsctl use-role --role ROLE --organisation ID|ODS`");
        return Ok(());
    }
    match pick_grant(&grants, args.role, args.organisation.as_deref()) {
        Pick::One(grant) => select_role(ctx, &mut profile, grant).await?,
        Pick::NoGrants => {
            return Err(CliError::NotFound("the account has no grants".into()));
        }
        Pick::NoMatch => {
            return Err(CliError::NotFound(
                "no grant of the account fits --role/--organisation".into(),
            ));
        }
        Pick::Ambiguous(fits) => {
            list_grants_note(ctx, &fits, "several grants fit:");
            return Err(CliError::Usage(
                "--role/--organisation fit several grants; give both".into(),
            ));
        }
    }
    ctx.emit_one(&session_view(&ctx.profile_name, &profile))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use common::Role;

    fn grant(org: &str, ods: &str, role: Role) -> directory::Grant {
        directory::Grant {
            id: format!("g-{org}-{}", role as i32),
            account_id: "a".into(),
            organisation_id: org.into(),
            role: role as i32,
            organisation_name: format!("Org {org}"),
            ods_code: ods.into(),
            organisation_kind: 0,
            create_time: None,
        }
    }

    #[test]
    fn the_only_grant_is_picked_without_options() {
        let grants = [grant("o1", "X26", Role::ServiceDesk)];
        assert_eq!(pick_grant(&grants, None, None), Pick::One(&grants[0]));
        assert_eq!(pick_grant(&[], None, None), Pick::NoGrants);
    }

    #[test]
    fn several_grants_need_options() {
        let grants = [
            grant("o1", "15N", Role::CommissioningAccountAdministrator),
            grant("o1", "15N", Role::CommissioningApprover),
            grant("o2", "A81001", Role::PracticeManager),
        ];
        assert!(matches!(pick_grant(&grants, None, None), Pick::Ambiguous(v) if v.len() == 3));
        assert!(
            matches!(pick_grant(&grants, None, Some("o1")), Pick::Ambiguous(v) if v.len() == 2)
        );
        assert_eq!(
            pick_grant(&grants, Some(Role::CommissioningApprover), Some("15n")),
            Pick::One(&grants[1])
        );
        assert_eq!(
            pick_grant(&grants, Some(Role::PracticeManager), None),
            Pick::One(&grants[2])
        );
        assert_eq!(
            pick_grant(&grants, None, Some(" a81001 ")),
            Pick::One(&grants[2])
        );
        assert_eq!(
            pick_grant(&grants, Some(Role::ServiceDesk), None),
            Pick::NoMatch
        );
        assert_eq!(
            pick_grant(&grants, Some(Role::PracticeManager), Some("o1")),
            Pick::NoMatch
        );
    }
}
