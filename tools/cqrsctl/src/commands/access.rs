//! `invite`, `invitations`, `registrations`, `access-requests` (access service).

use cqrs_proto::access::v1 as access;
use uuid::Uuid;

use super::org::resolve_org;
use super::{Ctx, collect_pages, emit_page};
use crate::cli::{
    AccessRequestStateArg, InvitationsCommand, InviteArgs, RegistrationStateArg, ReviewCommand,
    StateArg,
};
use crate::errors::CliError;
use crate::views::{AccessRequestView, InvitationView, RegistrationView};

fn missing(what: &str) -> CliError {
    CliError::Other(format!("the access service answered without the {what}"))
}

async fn organisation_filter(ctx: &mut Ctx, raw: Option<String>) -> Result<String, CliError> {
    match raw {
        Some(raw) => resolve_org(ctx, &raw).await,
        None => Ok(String::new()),
    }
}

pub async fn invite(ctx: &mut Ctx, args: InviteArgs) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let organisation_id = resolve_org(ctx, &args.organisation).await?;
    let request_id = args.request_id.unwrap_or_else(Uuid::new_v4);
    let invitation = ctx
        .access()?
        .create_invitation(access::CreateInvitationRequest {
            request_id: request_id.to_string(),
            email: args.email.trim().to_owned(),
            first_name: args.first_name.trim().to_owned(),
            last_name: args.last_name.trim().to_owned(),
            organisation_id,
            role: args.role as i32,
        })
        .await?
        .into_inner()
        .invitation
        .ok_or_else(|| missing("invitation"))?;
    ctx.emit_one(&InvitationView::from(&invitation))
}

pub async fn invitations(ctx: &mut Ctx, cmd: InvitationsCommand) -> Result<(), CliError> {
    ctx.signed_in().await?;
    match cmd {
        InvitationsCommand::List {
            organisation,
            state,
            limit,
        } => {
            let organisation_id = organisation_filter(ctx, organisation).await?;
            let client = ctx.access()?;
            let state = state.map_or(0, |s| s as i32);
            let (items, more) = collect_pages(limit.limit, |page_token, page_size| {
                let mut client = client.clone();
                let organisation_id = organisation_id.clone();
                async move {
                    let r = client
                        .list_invitations(access::ListInvitationsRequest {
                            organisation_id,
                            state,
                            page_size,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.invitations, r.next_page_token))
                }
            })
            .await?;
            let views: Vec<InvitationView> = items.iter().map(InvitationView::from).collect();
            emit_page(ctx, &views, more)
        }
        InvitationsCommand::Resend { id } => {
            let invitation = ctx
                .access()?
                .resend_invitation(access::ResendInvitationRequest {
                    invitation_id: id.trim().to_owned(),
                })
                .await?
                .into_inner()
                .invitation
                .ok_or_else(|| missing("invitation"))?;
            ctx.emit_one(&InvitationView::from(&invitation))
        }
        InvitationsCommand::Cancel { id } => {
            let invitation = ctx
                .access()?
                .cancel_invitation(access::CancelInvitationRequest {
                    invitation_id: id.trim().to_owned(),
                })
                .await?
                .into_inner()
                .invitation
                .ok_or_else(|| missing("invitation"))?;
            ctx.emit_one(&InvitationView::from(&invitation))
        }
    }
}

/// The decision and reason of `approve` / `reject`; `None` for `list`.
fn decision<S: StateArg>(cmd: &ReviewCommand<S>) -> Option<(String, access::Decision, String)> {
    match cmd {
        ReviewCommand::List { .. } => None,
        ReviewCommand::Approve { id, reason } => Some((
            id.trim().to_owned(),
            access::Decision::Approve,
            reason.clone().unwrap_or_default(),
        )),
        ReviewCommand::Reject { id, reason } => Some((
            id.trim().to_owned(),
            access::Decision::Reject,
            reason.clone(),
        )),
    }
}

pub async fn registrations(
    ctx: &mut Ctx,
    cmd: ReviewCommand<RegistrationStateArg>,
) -> Result<(), CliError> {
    ctx.signed_in().await?;
    if let Some((registration_id, decision, reason)) = decision(&cmd) {
        let registration = ctx
            .access()?
            .review_registration(access::ReviewRegistrationRequest {
                registration_id,
                decision: decision as i32,
                reason,
            })
            .await?
            .into_inner()
            .registration
            .ok_or_else(|| missing("registration"))?;
        return ctx.emit_one(&RegistrationView::from(&registration));
    }
    let ReviewCommand::List {
        organisation,
        state,
        limit,
    } = cmd
    else {
        return Ok(());
    };
    let organisation_id = organisation_filter(ctx, organisation).await?;
    let client = ctx.access()?;
    let state = state.map_or(0, |s| s.value());
    let (items, more) = collect_pages(limit.limit, |page_token, page_size| {
        let mut client = client.clone();
        let organisation_id = organisation_id.clone();
        async move {
            let r = client
                .list_registrations(access::ListRegistrationsRequest {
                    organisation_id,
                    state,
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((r.registrations, r.next_page_token))
        }
    })
    .await?;
    let views: Vec<RegistrationView> = items.iter().map(RegistrationView::from).collect();
    emit_page(ctx, &views, more)
}

pub async fn access_requests(
    ctx: &mut Ctx,
    cmd: ReviewCommand<AccessRequestStateArg>,
) -> Result<(), CliError> {
    ctx.signed_in().await?;
    if let Some((access_request_id, decision, reason)) = decision(&cmd) {
        let request = ctx
            .access()?
            .review_access_request(access::ReviewAccessRequestRequest {
                access_request_id,
                decision: decision as i32,
                reason,
            })
            .await?
            .into_inner()
            .access_request
            .ok_or_else(|| missing("access request"))?;
        return ctx.emit_one(&AccessRequestView::from(&request));
    }
    let ReviewCommand::List {
        organisation,
        state,
        limit,
    } = cmd
    else {
        return Ok(());
    };
    let organisation_id = organisation_filter(ctx, organisation).await?;
    let client = ctx.access()?;
    let state = state.map_or(0, |s| s.value());
    let (items, more) = collect_pages(limit.limit, |page_token, page_size| {
        let mut client = client.clone();
        let organisation_id = organisation_id.clone();
        async move {
            let r = client
                .list_access_requests(access::ListAccessRequestsRequest {
                    organisation_id,
                    state,
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((r.access_requests, r.next_page_token))
        }
    })
    .await?;
    let views: Vec<AccessRequestView> = items.iter().map(AccessRequestView::from).collect();
    emit_page(ctx, &views, more)
}
