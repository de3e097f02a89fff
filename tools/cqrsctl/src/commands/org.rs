//! `org create|search|get|list|set-approval|import`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;

use cqrs_proto::directory::v1 as directory;
use cqrs_rules::organisation::normalise_ods_code;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tonic::Code;
use uuid::Uuid;

use super::{Ctx, collect_pages, emit_page, is_uuid};
use crate::cli::{ImportArgs, OrgCommand, OrgCreateArgs};
use crate::errors::{CliError, ErrorReport};
use crate::import::{self, ImportRow};
use crate::output::{self, Format, View, or_dash};
use crate::views::OrganisationView;
use crate::{client, enums};

pub async fn run(ctx: &mut Ctx, cmd: OrgCommand) -> Result<(), CliError> {
    match cmd {
        OrgCommand::Create(args) => create(ctx, args).await,
        OrgCommand::Search { query, kind, limit } => {
            // Public RPC: the token is sent when there is a live session, else none.
            if ctx.cached()?.is_some() {
                let _ = ctx.signed_in().await;
            }
            let dir = ctx.directory()?;
            let kind = kind.map_or(0, |k| k as i32);
            let (orgs, more) = collect_pages(limit.limit, |page_token, page_size| {
                let mut dir = dir.clone();
                let query = query.clone();
                async move {
                    let r = dir
                        .search_organisations(directory::SearchOrganisationsRequest {
                            query,
                            kind,
                            page_size,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.organisations, r.next_page_token))
                }
            })
            .await?;
            let views: Vec<OrganisationView> = orgs.iter().map(OrganisationView::from).collect();
            emit_page(ctx, &views, more)
        }
        OrgCommand::Get { id } => {
            ctx.signed_in().await?;
            let id = resolve_org(ctx, &id).await?;
            let org = ctx
                .directory()?
                .get_organisation(directory::GetOrganisationRequest {
                    organisation_id: id,
                })
                .await?
                .into_inner()
                .organisation
                .ok_or_else(|| CliError::Other("GetOrganisation answered without one".into()))?;
            ctx.emit_one(&OrganisationView::from(&org))
        }
        OrgCommand::List { parent, limit } => {
            ctx.signed_in().await?;
            let parent_id = match parent {
                Some(p) => resolve_org(ctx, &p).await?,
                None => String::new(),
            };
            let dir = ctx.directory()?;
            let (orgs, more) = collect_pages(limit.limit, |page_token, page_size| {
                let mut dir = dir.clone();
                let parent_id = parent_id.clone();
                async move {
                    let r = dir
                        .list_organisations(directory::ListOrganisationsRequest {
                            parent_id,
                            page_size,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((r.organisations, r.next_page_token))
                }
            })
            .await?;
            let views: Vec<OrganisationView> = orgs.iter().map(OrganisationView::from).collect();
            emit_page(ctx, &views, more)
        }
        OrgCommand::SetApproval { id, multi_level } => {
            ctx.signed_in().await?;
            let id = resolve_org(ctx, &id).await?;
            let org = ctx
                .directory()?
                .set_approval_level(directory::SetApprovalLevelRequest {
                    organisation_id: id,
                    multi_level_approval: multi_level,
                })
                .await?
                .into_inner()
                .organisation
                .ok_or_else(|| CliError::Other("SetApprovalLevel answered without one".into()))?;
            ctx.emit_one(&OrganisationView::from(&org))
        }
        OrgCommand::Import(args) => import(ctx, args).await,
    }
}

async fn create(ctx: &mut Ctx, args: OrgCreateArgs) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let parent_id = match &args.parent {
        Some(p) => resolve_org(ctx, p).await?,
        None => String::new(),
    };
    let request_id = args.request_id.unwrap_or_else(Uuid::new_v4);
    let org = ctx
        .directory()?
        .create_organisation(directory::CreateOrganisationRequest {
            request_id: request_id.to_string(),
            kind: args.kind as i32,
            ods_code: args.ods.trim().to_owned(),
            name: args.name.trim().to_owned(),
            parent_id,
            multi_level_approval: args.multi_level,
        })
        .await?
        .into_inner()
        .organisation
        .ok_or_else(|| CliError::Other("CreateOrganisation answered without one".into()))?;
    ctx.emit_one(&OrganisationView::from(&org))
}

/// The organisation with exactly this ODS code, if any (SearchOrganisations also matches name
/// prefixes, so pages are followed until the code turns up).
pub async fn find_by_ods(
    dir: &mut client::Directory,
    ods_code: &str,
) -> Result<Option<directory::Organisation>, CliError> {
    let mut page_token = String::new();
    for _ in 0..20 {
        let r = dir
            .search_organisations(directory::SearchOrganisationsRequest {
                query: ods_code.to_owned(),
                kind: 0,
                page_size: 100,
                page_token,
            })
            .await?
            .into_inner();
        if let Some(org) = r
            .organisations
            .into_iter()
            .find(|o| o.ods_code.eq_ignore_ascii_case(ods_code))
        {
            return Ok(Some(org));
        }
        if r.next_page_token.is_empty() {
            return Ok(None);
        }
        page_token = r.next_page_token;
    }
    Ok(None)
}

/// An organisation id from an id or an ODS code.
pub async fn resolve_org(ctx: &mut Ctx, raw: &str) -> Result<String, CliError> {
    let raw = raw.trim();
    if is_uuid(raw) {
        return Ok(raw.to_owned());
    }
    let ods = normalise_ods_code(raw).map_err(|_| {
        CliError::Usage(format!(
            "`{raw}` is neither an organisation id nor an ODS code"
        ))
    })?;
    let mut dir = ctx.directory()?;
    match find_by_ods(&mut dir, &ods).await? {
        Some(org) => Ok(org.id),
        None => Err(CliError::NotFound(format!(
            "no organisation has the ODS code {ods}"
        ))),
    }
}

/// What happened to one CSV row.
#[derive(Debug, Clone, Serialize)]
pub struct ImportOutcome {
    pub line: u64,
    pub ods_code: String,
    pub name: String,
    pub kind: String,
    pub parent_ods: Option<String>,
    /// `created`, `existing`, `failed` or (dry run) `planned`.
    pub outcome: &'static str,
    pub organisation_id: Option<String>,
    pub request_id: String,
    /// For `existing`: how the stored organisation differs from the row, if it does.
    pub note: Option<String>,
    pub error: Option<ErrorReport>,
}

impl View for ImportOutcome {
    const HEADERS: &'static [&'static str] = &[
        "LINE",
        "ODS",
        "NAME",
        "KIND",
        "PARENT",
        "OUTCOME",
        "ORGANISATION ID",
        "NOTE",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.line.to_string(),
            self.ods_code.clone(),
            self.name.clone(),
            self.kind.clone(),
            self.parent_ods.clone().unwrap_or_else(|| "-".into()),
            self.outcome.to_owned(),
            self.organisation_id.clone().unwrap_or_else(|| "-".into()),
            match (&self.error, &self.note) {
                (Some(e), _) => e.one_line().trim_start_matches("error: ").to_owned(),
                (None, Some(n)) => n.clone(),
                (None, None) => "-".into(),
            },
        ]
    }
}

#[derive(Debug, Serialize)]
struct ImportSummary<'a> {
    created: usize,
    existing: usize,
    failed: usize,
    rows: &'a [ImportOutcome],
}

fn outcome_for(row: &ImportRow) -> ImportOutcome {
    ImportOutcome {
        line: row.line,
        ods_code: row.ods_code.clone(),
        name: row.name.clone(),
        kind: enums::kind_name(row.kind as i32),
        parent_ods: row.parent_ods.clone(),
        outcome: "planned",
        organisation_id: None,
        request_id: import::request_id_for(&row.ods_code).to_string(),
        note: None,
        error: None,
    }
}

fn differences(row: &ImportRow, org: &directory::Organisation, parent_id: &str) -> Option<String> {
    let mut diffs = Vec::new();
    if org.name != row.name {
        diffs.push(format!("name is `{}`", org.name));
    }
    if org.kind != row.kind as i32 {
        diffs.push(format!("kind is {}", enums::kind_name(org.kind)));
    }
    if org.parent_id != parent_id {
        diffs.push(format!("parent is {}", or_dash(&org.parent_id)));
    }
    (!diffs.is_empty()).then(|| format!("differs from the file: {}", diffs.join(", ")))
}

fn local_failure(code: &str, message: String, exit_code: u8) -> ErrorReport {
    ErrorReport {
        code: code.to_owned(),
        reason: None,
        domain: None,
        message,
        violations: Vec::new(),
        metadata: Default::default(),
        exit_code,
    }
}

async fn import(ctx: &mut Ctx, args: ImportArgs) -> Result<(), CliError> {
    let source = args.csv.display().to_string();
    let rows = if args.csv == Path::new("-") {
        import::parse(std::io::stdin().lock(), "stdin")?
    } else {
        let file = std::fs::File::open(&args.csv)
            .map_err(|e| CliError::Usage(format!("cannot open {source}: {e}")))?;
        import::parse(std::io::BufReader::new(file), &source)?
    };
    let mut outcomes: Vec<ImportOutcome> = rows.iter().map(outcome_for).collect();
    if args.dry_run {
        return ctx.emit_list(&outcomes);
    }
    ctx.signed_in().await?;

    let bar = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar =
            ProgressBar::with_draw_target(Some(rows.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        bar
    };

    // ODS code -> organisation id (rows of this run and parents looked up), or the line of a
    // row of this run that failed.
    let mut known: HashMap<String, Result<String, u64>> = HashMap::new();
    let mut aborted: Option<ErrorReport> = None;
    for (row, outcome) in rows.iter().zip(outcomes.iter_mut()) {
        bar.set_message(row.ods_code.clone());
        if let Some(report) = &aborted {
            outcome.outcome = "failed";
            outcome.error = Some(local_failure(
                "NOT_ATTEMPTED",
                format!("not attempted after an earlier error ({})", report.code),
                report.exit_code,
            ));
            bar.inc(1);
            continue;
        }
        match import_row(ctx, row, &mut known).await {
            Ok((created, org, note)) => {
                outcome.outcome = if created { "created" } else { "existing" };
                outcome.organisation_id = Some(org.id.clone());
                outcome.note = note;
                known.insert(row.ods_code.clone(), Ok(org.id));
            }
            Err(err) => {
                let report = err.report();
                // Signed out, or the service is gone: the remaining rows cannot fare better.
                if matches!(report.exit_code, 3 | 8) {
                    aborted = Some(report.clone());
                }
                outcome.outcome = "failed";
                outcome.error = Some(report);
                known.insert(row.ods_code.clone(), Err(row.line));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let count = |what: &str| outcomes.iter().filter(|o| o.outcome == what).count();
    let (created, existing, failed) = (count("created"), count("existing"), count("failed"));
    match ctx.format {
        Format::Json => output::emit(&output::render_json(&ImportSummary {
            created,
            existing,
            failed,
            rows: &outcomes,
        })?)?,
        Format::Table => {
            ctx.emit_list(&outcomes)?;
            output::emit(&format!(
                "{created} created, {existing} existing, {failed} failed\n"
            ))?;
        }
    }
    if failed > 0 {
        let exit_code = outcomes
            .iter()
            .find_map(|o| o.error.as_ref().map(|e| e.exit_code))
            .unwrap_or(1);
        return Err(CliError::Partial {
            message: format!(
                "{failed} of {} rows failed; fix them and run the import again (rows already \
                 done are reported as existing)",
                outcomes.len()
            ),
            exit_code,
        });
    }
    Ok(())
}

/// Creates one row, or finds it already there. `Ok((created, organisation, note))`.
async fn import_row(
    ctx: &mut Ctx,
    row: &ImportRow,
    known: &mut HashMap<String, Result<String, u64>>,
) -> Result<(bool, directory::Organisation, Option<String>), CliError> {
    // Refreshes the access token during long imports.
    ctx.signed_in().await?;
    let mut dir = ctx.directory()?;

    let parent_id = match &row.parent_ods {
        None => String::new(),
        Some(parent) => match known.get(parent) {
            Some(Ok(id)) => id.clone(),
            Some(Err(line)) => {
                return Err(CliError::NotFound(format!(
                    "parent {parent} failed on line {line}"
                )));
            }
            None => match find_by_ods(&mut dir, parent).await? {
                Some(org) => {
                    known.insert(parent.clone(), Ok(org.id.clone()));
                    org.id
                }
                None => {
                    return Err(CliError::NotFound(format!(
                        "parent {parent} is neither earlier in the file nor in the directory"
                    )));
                }
            },
        },
    };

    if let Some(org) = find_by_ods(&mut dir, &row.ods_code).await? {
        let note = differences(row, &org, &parent_id);
        return Ok((false, org, note));
    }
    let request = directory::CreateOrganisationRequest {
        request_id: import::request_id_for(&row.ods_code).to_string(),
        kind: row.kind as i32,
        ods_code: row.ods_code.clone(),
        name: row.name.clone(),
        parent_id: parent_id.clone(),
        multi_level_approval: false,
    };
    match dir.create_organisation(request).await {
        Ok(answer) => {
            let org = answer
                .into_inner()
                .organisation
                .ok_or_else(|| CliError::Other("CreateOrganisation answered without one".into()))?;
            Ok((true, org, None))
        }
        // Created meanwhile by someone else (or by a run whose answer was lost).
        Err(status) if status.code() == Code::AlreadyExists => {
            match find_by_ods(&mut dir, &row.ods_code).await? {
                Some(org) => {
                    let note = differences(row, &org, &parent_id);
                    Ok((false, org, note))
                }
                None => Err(status.into()),
            }
        }
        Err(status) => Err(status.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn row() -> ImportRow {
        ImportRow {
            line: 3,
            ods_code: "A81001".into(),
            name: "The Surgery".into(),
            kind: directory::OrganisationKind::ServiceProvider,
            parent_ods: Some("15N".into()),
            parent_line: Some(2),
        }
    }

    #[test]
    fn existing_rows_note_their_differences() {
        let mut org = directory::Organisation {
            id: "o".into(),
            kind: directory::OrganisationKind::ServiceProvider as i32,
            ods_code: "A81001".into(),
            name: "The Surgery".into(),
            parent_id: "p".into(),
            ..Default::default()
        };
        assert_eq!(differences(&row(), &org, "p"), None);
        org.name = "Old Surgery".into();
        assert_eq!(
            differences(&row(), &org, "q").as_deref(),
            Some("differs from the file: name is `Old Surgery`, parent is p")
        );
    }

    #[test]
    fn outcome_rows_render() {
        let mut o = outcome_for(&row());
        assert_eq!(o.request_id, import::request_id_for("A81001").to_string());
        o.outcome = "failed";
        o.error = Some(local_failure(
            "NOT_FOUND",
            "parent 15N failed on line 2".into(),
            5,
        ));
        let out = output::render_list(&[o], Format::Table).unwrap();
        assert!(
            out.contains("NOT_FOUND: parent 15N failed on line 2"),
            "{out}"
        );
        assert!(out.contains("SERVICE_PROVIDER"), "{out}");
    }
}
