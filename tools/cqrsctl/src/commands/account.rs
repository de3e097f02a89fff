//! `account …` (identity; `revoke` is directory RevokeAllRoles) and `grants list`.

use cqrs_proto::directory::v1 as directory;
use cqrs_proto::identity::v1 as identity;
use cqrs_proto::identity::v1::lookup_account_request::Key;
use serde::Serialize;

use super::{Ctx, collect_pages, emit_page, is_uuid};
use crate::cli::{AccountCommand, GrantsCommand};
use crate::errors::CliError;
use crate::output::View;
use crate::views::{AccountView, GrantView};

fn missing() -> CliError {
    CliError::Other("the identity service answered without the account".into())
}

/// How a command-line account reference is looked up.
#[derive(Debug, PartialEq, Eq)]
pub enum AccountRef {
    Id(String),
    Email(String),
    UserId(String),
}

/// An id (UUID), an e-mail address (has `@`) or a User ID (anything else, upper-cased).
pub fn account_ref(raw: &str) -> AccountRef {
    let raw = raw.trim();
    if is_uuid(raw) {
        AccountRef::Id(raw.to_owned())
    } else if raw.contains('@') {
        AccountRef::Email(raw.to_owned())
    } else {
        AccountRef::UserId(raw.to_ascii_uppercase())
    }
}

async fn lookup(ctx: &mut Ctx, key: Key) -> Result<identity::Account, CliError> {
    ctx.identity()?
        .lookup_account(identity::LookupAccountRequest { key: Some(key) })
        .await?
        .into_inner()
        .account
        .ok_or_else(missing)
}

/// The account id for an id, a User ID or an e-mail address.
pub async fn resolve_account(ctx: &mut Ctx, raw: &str) -> Result<String, CliError> {
    match account_ref(raw) {
        AccountRef::Id(id) => Ok(id),
        AccountRef::Email(email) => Ok(lookup(ctx, Key::Email(email)).await?.id),
        AccountRef::UserId(user_id) => Ok(lookup(ctx, Key::UserId(user_id)).await?.id),
    }
}

/// `account send-reset` has nothing to show but what was done.
#[derive(Serialize)]
struct Done {
    account_id: String,
    action: &'static str,
}

impl View for Done {
    const HEADERS: &'static [&'static str] = &["ACCOUNT", "DONE"];
    fn row(&self) -> Vec<String> {
        vec![self.account_id.clone(), self.action.to_owned()]
    }
}

pub async fn run(ctx: &mut Ctx, cmd: AccountCommand) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let account = match cmd {
        AccountCommand::Lookup { user_id, email } => {
            let key = match (user_id, email) {
                (Some(u), _) => Key::UserId(u.trim().to_ascii_uppercase()),
                (None, Some(e)) => Key::Email(e.trim().to_owned()),
                (None, None) => return Err(CliError::Usage("give --user-id or --email".into())),
            };
            lookup(ctx, key).await?
        }
        AccountCommand::Get { account } => {
            let account_id = resolve_account(ctx, &account).await?;
            ctx.identity()?
                .get_account(identity::GetAccountRequest { account_id })
                .await?
                .into_inner()
                .account
                .ok_or_else(missing)?
        }
        AccountCommand::List {
            query,
            state,
            realm,
            limit,
        } => {
            let client = ctx.identity()?;
            let query = query.unwrap_or_default();
            let state = state.map_or(0, |s| s as i32);
            let realm = realm.map_or(0, |r| r as i32);
            let (items, more) = collect_pages(limit.limit, |page_token, page_size| {
                let mut client = client.clone();
                let query = query.clone();
                async move {
                    let r = client
                        .list_accounts(identity::ListAccountsRequest {
                            realm,
                            state,
                            query,
                            account_ids: Vec::new(),
                            page_size,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.accounts, r.next_page_token))
                }
            })
            .await?;
            let views: Vec<AccountView> = items.iter().map(AccountView::from).collect();
            return emit_page(ctx, &views, more);
        }
        AccountCommand::Unlock { account } => {
            let account_id = resolve_account(ctx, &account).await?;
            ctx.identity()?
                .unlock_account(identity::UnlockAccountRequest { account_id })
                .await?
                .into_inner()
                .account
                .ok_or_else(missing)?
        }
        AccountCommand::SendReset { account } => {
            let account_id = resolve_account(ctx, &account).await?;
            ctx.identity()?
                .send_password_reset(identity::SendPasswordResetRequest {
                    account_id: account_id.clone(),
                })
                .await?;
            return ctx.emit_one(&Done {
                account_id,
                action: "password reset link e-mailed",
            });
        }
        AccountCommand::Disable { account, reason } => {
            let account_id = resolve_account(ctx, &account).await?;
            ctx.identity()?
                .disable_account(identity::DisableAccountRequest {
                    account_id,
                    reason: reason.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .account
                .ok_or_else(missing)?
        }
        AccountCommand::RemoveSecondFactor { account } => {
            let account_id = resolve_account(ctx, &account).await?;
            ctx.identity()?
                .remove_second_factor(identity::RemoveSecondFactorRequest {
                    account_id: account_id.clone(),
                })
                .await?;
            return ctx.emit_one(&Done {
                account_id,
                action: "authenticator app removed; the owner is e-mailed and signed out",
            });
        }
        AccountCommand::Enable { account } => {
            let account_id = resolve_account(ctx, &account).await?;
            ctx.identity()?
                .enable_account(identity::EnableAccountRequest { account_id })
                .await?
                .into_inner()
                .account
                .ok_or_else(missing)?
        }
        AccountCommand::Revoke { account } => {
            let account_id = resolve_account(ctx, &account).await?;
            let removed = ctx
                .directory()?
                .revoke_all_roles(directory::RevokeAllRolesRequest { account_id })
                .await?
                .into_inner()
                .grants;
            let views: Vec<GrantView> = removed.iter().map(GrantView::from).collect();
            ctx.emit_list(&views)?;
            ctx.note(&format!(
                "{} grant(s) removed; the login is kept",
                views.len()
            ));
            return Ok(());
        }
    };
    ctx.emit_one(&AccountView::from(&account))
}

pub async fn grants(ctx: &mut Ctx, cmd: GrantsCommand) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let GrantsCommand::List { account } = cmd;
    let account_id = resolve_account(ctx, &account).await?;
    let client = ctx.directory()?;
    let (items, more) = collect_pages(100_000, |page_token, _| {
        let mut client = client.clone();
        let account_id = account_id.clone();
        async move {
            let r = client
                .list_grants(directory::ListGrantsRequest {
                    account_id,
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((r.grants, r.next_page_token))
        }
    })
    .await?;
    let views: Vec<GrantView> = items.iter().map(GrantView::from).collect();
    emit_page(ctx, &views, more)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn account_references() {
        assert_eq!(
            account_ref("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            AccountRef::Id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into())
        );
        assert_eq!(
            account_ref(" jo.smith@nhs.net "),
            AccountRef::Email("jo.smith@nhs.net".into())
        );
        assert_eq!(account_ref("jsm482"), AccountRef::UserId("JSM482".into()));
    }
}
