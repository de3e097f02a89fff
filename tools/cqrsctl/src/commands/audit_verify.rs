//! `audit verify`: for each service, recomputes its hash chain from the events it answers,
//! checks the checkpoints it signed and those the other services keep of it, and names the
//! first break (the rules: `cqrs_audit_chain`). Nothing here trusts the service's database:
//! an edited, removed or reordered event, a rewritten tail or a restored older backup each
//! shows as a break.

use cqrs_audit_chain::{
    Break, ChainVerifier, HeldCheckpoint, PublicKey, Summary, checkpoint_from_proto, hex,
    record_from_proto,
};
use cqrs_proto::audit::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::{Service, VerifyArgs};
use crate::errors::{CliError, exit};
use crate::output::View;

/// Events asked for per page.
const PAGE_SIZE: i32 = 1000;

/// One service's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub service: &'static str,
    pub intact: bool,
    pub verified: u64,
    /// Events from before the chain existed (counted, not verifiable).
    pub unhashed: u64,
    pub head: i64,
    pub head_hash: String,
    /// Checkpoints matched, by holder, e.g. `identity:3 access:2`.
    pub checkpoints: String,
    /// The first break: its event number and what is wrong.
    pub break_at: Option<i64>,
    pub problem: Option<String>,
    /// Services whose checkpoints could not be read (their view is missing, not wrong).
    pub unreachable: Vec<&'static str>,
}

impl View for ChainReport {
    const HEADERS: &'static [&'static str] = &[
        "SERVICE",
        "RESULT",
        "EVENTS",
        "HEAD",
        "CHECKPOINTS",
        "FIRST BREAK",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.service.to_owned(),
            if self.intact { "intact" } else { "BROKEN" }.to_owned(),
            if self.unhashed > 0 {
                format!(
                    "{} (+{} from before the chain)",
                    self.verified, self.unhashed
                )
            } else {
                self.verified.to_string()
            },
            self.head.to_string(),
            if self.checkpoints.is_empty() {
                "-".to_owned()
            } else {
                self.checkpoints.clone()
            },
            match (&self.break_at, &self.problem) {
                (Some(at), Some(problem)) => format!("event {at}: {problem}"),
                _ => "-".to_owned(),
            },
        ]
    }
}

pub async fn run(ctx: &mut Ctx, args: VerifyArgs) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let services: Vec<Service> = match args.service {
        Some(one) => vec![one],
        None => Service::ALL.to_vec(),
    };
    let mut reports = Vec::new();
    for service in services {
        reports.push(verify(ctx, service, args.from).await?);
    }
    ctx.emit_list(&reports)?;
    for report in &reports {
        if !report.unreachable.is_empty() {
            ctx.note(&format!(
                "({}: the checkpoints kept by {} could not be read)",
                report.service,
                report.unreachable.join(", ")
            ));
        }
    }
    let broken: Vec<&str> = reports
        .iter()
        .filter(|r| !r.intact)
        .map(|r| r.service)
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CliError::Partial {
            message: format!("audit trail broken: {}", broken.join(", ")),
            exit_code: exit::TAMPERED,
        })
    }
}

/// Verifies `service`'s chain against every checkpoint held of it.
pub async fn verify(ctx: &mut Ctx, service: Service, from: i64) -> Result<ChainReport, CliError> {
    let info = ctx
        .audit_chain(service)?
        .get_chain_info(pb::GetChainInfoRequest {})
        .await?
        .into_inner();
    let keys: Vec<PublicKey> = info
        .public_keys
        .iter()
        .filter_map(|k| PublicKey::parse(k).ok())
        .collect();

    let mut held = Vec::new();
    let mut unreachable = Vec::new();
    for holder in Service::ALL {
        let request = pb::ListCheckpointsRequest {
            service: if holder == service {
                String::new()
            } else {
                info.service.clone()
            },
            start_sequence: 0,
        };
        match ctx.audit_chain(holder)?.list_checkpoints(request).await {
            Ok(answer) => held.extend(answer.into_inner().checkpoints.iter().filter_map(|c| {
                Some(HeldCheckpoint {
                    holder: holder.name().to_owned(),
                    checkpoint: checkpoint_from_proto(c)?,
                })
            })),
            // Another service being down hides its view; it does not make this chain wrong.
            Err(_) if holder != service => unreachable.push(holder.name()),
            Err(status) => return Err(status.into()),
        }
    }

    let mut verifier = ChainVerifier::new(keys, held, from);
    let result = feed(ctx, service, &mut verifier).await?;
    let outcome = result.and_then(|()| verifier.finish());
    Ok(report(service, outcome, unreachable))
}

/// Streams the chain into `verifier`; the first break ends it.
async fn feed(
    ctx: &mut Ctx,
    service: Service,
    verifier: &mut ChainVerifier,
) -> Result<Result<(), Break>, CliError> {
    let mut client = ctx.audit_chain(service)?;
    let mut page_token = String::new();
    let start = verifier.start();
    loop {
        let page = client
            .list_chain_events(pb::ListChainEventsRequest {
                start_sequence: start,
                page_size: PAGE_SIZE,
                page_token,
            })
            .await?
            .into_inner();
        for event in &page.events {
            let (record, hash) = record_from_proto(event).map_err(|e| {
                CliError::Other(format!("event {} is malformed: {e}", event.sequence))
            })?;
            if let Err(found) = verifier.push(&record, hash.as_ref()) {
                return Ok(Err(found));
            }
        }
        if page.next_page_token.is_empty() || page.events.is_empty() {
            return Ok(Ok(()));
        }
        page_token = page.next_page_token;
    }
}

fn report(
    service: Service,
    outcome: Result<Summary, Break>,
    unreachable: Vec<&'static str>,
) -> ChainReport {
    match outcome {
        Ok(summary) => ChainReport {
            service: service.name(),
            intact: true,
            verified: summary.verified,
            unhashed: summary.unhashed,
            head: summary.head,
            head_hash: hex(&summary.head_hash),
            checkpoints: summary
                .checkpoints
                .iter()
                .map(|(holder, n)| format!("{holder}:{n}"))
                .collect::<Vec<_>>()
                .join(" "),
            break_at: None,
            problem: None,
            unreachable,
        },
        Err(found) => ChainReport {
            service: service.name(),
            intact: false,
            verified: 0,
            unhashed: 0,
            head: 0,
            head_hash: String::new(),
            checkpoints: String::new(),
            break_at: Some(found.sequence()),
            problem: Some(found.to_string()),
            unreachable,
        },
    }
}
