//! `audit tail`: the latest audit events of a service (ListAuditEvents, newest first), or with
//! `--follow` a poll every 2 s that prints new events oldest first. For the notification
//! service the e-mail delivery log (ListDeliveries) is shown.
//!
//! `audit search`: every service's trail in one list, newest first (each service's
//! ListAuditEvents with the same filters, merged). `audit verify` is in `audit_verify`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_proto::access::v1 as access;
use cqrs_proto::directory::v1 as directory;
use cqrs_proto::identity::v1 as identity;
use cqrs_proto::notifications::v1 as notifications;
use cqrs_rules::clock::{Clock, SystemClock};

use super::Ctx;
use crate::cli::{AuditCommand, SearchArgs, Service, TailArgs};
use crate::errors::{CliError, exit};
use crate::output::{self, Format, View, sanitize};
use crate::views::{AuditEventView, DeliveryView, to_timestamp};

const POLL_EVERY: Duration = Duration::from_secs(2);
/// Events are looked for again this far behind the newest one seen: an event written by a
/// transaction that committed late carries an earlier time.
const LOOKBACK: chrono::Duration = chrono::Duration::seconds(10);
/// Most events read per poll.
const FOLLOW_CAP: usize = 5_000;

/// Something with an identity and a time, printed by `audit tail`.
pub trait Entry: View + Clone {
    fn id(&self) -> &str;
    fn time(&self) -> Option<DateTime<Utc>>;
}

impl Entry for AuditEventView {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }
}

impl Entry for DeliveryView {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }
}

/// Where entries come from: newest first, at most `cap`, none older than `start`.
trait Source {
    type Entry: Entry;
    async fn fetch(
        &self,
        ctx: &mut Ctx,
        start: Option<DateTime<Utc>>,
        cap: usize,
    ) -> Result<Vec<Self::Entry>, CliError>;
}

struct AuditTrail {
    service: Service,
    action: String,
    actor: String,
    target: String,
    /// Only events before this time (search's paging).
    before: Option<DateTime<Utc>>,
}

macro_rules! list_audit {
    ($client:expr, $pkg:ident, $self:ident, $start:ident, $cap:ident) => {{
        let mut client = $client;
        let mut out: Vec<AuditEventView> = Vec::new();
        let mut page_token = String::new();
        loop {
            let page_size = i32::try_from($cap.saturating_sub(out.len()).min(500)).unwrap_or(500);
            let r = client
                .list_audit_events($pkg::ListAuditEventsRequest {
                    actor_id: $self.actor.clone(),
                    target_id: $self.target.clone(),
                    action: $self.action.clone(),
                    start_time: $start.map(to_timestamp),
                    end_time: $self.before.map(to_timestamp),
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            out.extend(
                r.audit_events
                    .iter()
                    .map(|e| AuditEventView::of(stringify!($pkg), e)),
            );
            if r.next_page_token.is_empty() || r.audit_events.is_empty() || out.len() >= $cap {
                out.truncate($cap);
                break;
            }
            page_token = r.next_page_token;
        }
        Ok(out)
    }};
}

impl Source for AuditTrail {
    type Entry = AuditEventView;

    async fn fetch(
        &self,
        ctx: &mut Ctx,
        start: Option<DateTime<Utc>>,
        cap: usize,
    ) -> Result<Vec<AuditEventView>, CliError> {
        match self.service {
            Service::Identity => list_audit!(ctx.identity()?, identity, self, start, cap),
            Service::Directory => list_audit!(ctx.directory()?, directory, self, start, cap),
            Service::Access => list_audit!(ctx.access()?, access, self, start, cap),
            Service::Notifications => {
                list_audit!(ctx.notifications()?, notifications, self, start, cap)
            }
        }
    }
}

struct Deliveries;

impl Source for Deliveries {
    type Entry = DeliveryView;

    async fn fetch(
        &self,
        ctx: &mut Ctx,
        start: Option<DateTime<Utc>>,
        cap: usize,
    ) -> Result<Vec<DeliveryView>, CliError> {
        let mut client = ctx.notifications()?;
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let r = client
                .list_deliveries(notifications::ListDeliveriesRequest {
                    state: 0,
                    page_size: 100,
                    page_token,
                })
                .await?
                .into_inner();
            let mut older = false;
            for d in &r.deliveries {
                let view = DeliveryView::from(d);
                match (start, view.time) {
                    (Some(start), Some(t)) if t < start => older = true,
                    _ => out.push(view),
                }
            }
            if older || r.next_page_token.is_empty() || r.deliveries.is_empty() || out.len() >= cap
            {
                out.truncate(cap);
                return Ok(out);
            }
            page_token = r.next_page_token;
        }
    }
}

pub async fn run(ctx: &mut Ctx, cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Tail(args) => run_tail(ctx, args).await,
        AuditCommand::Search(args) => search(ctx, args).await,
        AuditCommand::Verify(args) => super::audit_verify::run(ctx, args).await,
    }
}

/// `audit search`: the newest `limit` events matching the filters across the trails asked for.
async fn search(ctx: &mut Ctx, args: SearchArgs) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let now = SystemClock.now();
    let services = if args.service.is_empty() {
        Service::ALL.to_vec()
    } else {
        args.service.clone()
    };
    let since = args.since.map(|s| s.resolve(now));
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut found: Vec<AuditEventView> = Vec::new();
    for service in services {
        let trail = AuditTrail {
            service,
            action: args.action.clone().unwrap_or_default(),
            actor: args.actor.clone().unwrap_or_default(),
            target: args.target.clone().unwrap_or_default(),
            before: args.before.map(|b| b.resolve(now)),
        };
        // Each trail's newest `limit` are enough for the newest `limit` of all.
        found.extend(trail.fetch(ctx, since, limit).await?);
    }
    found.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let more = found.len() > limit;
    found.truncate(limit);
    ctx.emit_list(&found)?;
    if let (true, Some(last)) = (more, found.last().and_then(|e| e.create_time.as_deref())) {
        ctx.note(&format!("(more events: add --before {last})"));
    }
    Ok(())
}

async fn run_tail(ctx: &mut Ctx, args: TailArgs) -> Result<(), CliError> {
    if args.service == Service::Notifications {
        if args.action.is_some() || args.actor.is_some() || args.target.is_some() {
            return Err(CliError::Usage(
                "--action, --actor and --target do not apply to the notification service's \
                 delivery log"
                    .into(),
            ));
        }
        ctx.note("(the notification service keeps no audit trail; showing its e-mail deliveries)");
        return tail(ctx, &args, &Deliveries).await;
    }
    let trail = AuditTrail {
        service: args.service,
        action: args.action.clone().unwrap_or_default(),
        actor: args.actor.clone().unwrap_or_default(),
        target: args.target.clone().unwrap_or_default(),
        before: None,
    };
    tail(ctx, &args, &trail).await
}

/// Entries of `batch` not in `seen`, oldest first; records them in `seen`.
pub fn fresh<E: Entry>(batch: Vec<E>, seen: &mut HashMap<String, Option<DateTime<Utc>>>) -> Vec<E> {
    let mut new: Vec<E> = batch
        .into_iter()
        .filter(|e| !seen.contains_key(e.id()))
        .collect();
    new.reverse();
    for e in &new {
        seen.insert(e.id().to_owned(), e.time());
    }
    new
}

/// Forgets ids too old to come back in a poll starting at `watermark - LOOKBACK`.
pub fn prune(seen: &mut HashMap<String, Option<DateTime<Utc>>>, watermark: DateTime<Utc>) {
    let keep_from = watermark - LOOKBACK - LOOKBACK;
    seen.retain(|_, t| t.is_none_or(|t| t >= keep_from));
}

/// One entry per line, for `--follow`.
fn stream_line<E: Entry>(entry: &E, format: Format) -> Result<String, CliError> {
    match format {
        Format::Json => serde_json::to_string(entry)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| CliError::Other(format!("cannot encode JSON output: {e}"))),
        Format::Table => {
            let cells: Vec<String> = entry.row().iter().map(|c| sanitize(c)).collect();
            Ok(format!("{}\n", cells.join("  ")))
        }
    }
}

async fn tail<S: Source>(ctx: &mut Ctx, args: &TailArgs, source: &S) -> Result<(), CliError> {
    ctx.signed_in().await?;
    let since = args.since.map(|s| s.resolve(SystemClock.now()));
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let first = source.fetch(ctx, since, limit).await?;
    if !args.follow {
        return ctx.emit_list(&first);
    }

    let mut seen = HashMap::new();
    let mut watermark = first.iter().filter_map(Entry::time).max();
    let initial = fresh(first, &mut seen);
    if ctx.format == Format::Table {
        output::emit(&format!("{}\n", S::Entry::HEADERS.join("  ")))?;
    }
    for e in &initial {
        output::emit(&stream_line(e, ctx.format)?)?;
    }
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let batch = match ctx.signed_in().await {
            Ok(_) => {
                let start = watermark.map(|w| w - LOOKBACK).or(since);
                source.fetch(ctx, start, FOLLOW_CAP).await
            }
            Err(e) => Err(e),
        };
        let batch = match batch {
            Ok(batch) => batch,
            // Keep following through an outage; anything else ends the command.
            Err(e) if e.exit_code() == exit::UNAVAILABLE => {
                eprintln!("{} (retrying)", e.report().one_line());
                continue;
            }
            Err(e) => return Err(e),
        };
        for e in fresh(batch, &mut seen) {
            if let Some(t) = e.time() {
                watermark = Some(watermark.map_or(t, |w| w.max(t)));
            }
            output::emit(&stream_line(&e, ctx.format)?)?;
        }
        if let Some(w) = watermark {
            prune(&mut seen, w);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn event(id: &str, secs: i64) -> AuditEventView {
        let time = DateTime::from_timestamp(1_700_000_000 + secs, 0);
        let e = cqrs_proto::common::v1::AuditEvent {
            id: id.into(),
            create_time: time.map(to_timestamp),
            actor_id: "a".into(),
            actor_kind: cqrs_proto::common::v1::ActorKind::User as i32,
            outcome: cqrs_proto::common::v1::AuditOutcome::Success as i32,
            action: "SIGN_IN".into(),
            ..Default::default()
        };
        AuditEventView::of("identity", &e)
    }

    #[test]
    fn follow_prints_each_event_once_oldest_first() {
        let mut seen = HashMap::new();
        // Newest first, as the services answer.
        let first = fresh(vec![event("c", 3), event("b", 2), event("a", 1)], &mut seen);
        assert_eq!(
            first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // The next poll overlaps (look-back) and has a late commit with an older time.
        let next = fresh(
            vec![
                event("e", 5),
                event("d", 4),
                event("c", 3),
                event("late", 2),
            ],
            &mut seen,
        );
        assert_eq!(
            next.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["late", "d", "e"]
        );
        assert!(fresh(vec![event("e", 5)], &mut seen).is_empty());
    }

    #[test]
    fn old_ids_are_forgotten() {
        let mut seen = HashMap::new();
        fresh(vec![event("new", 100), event("old", 0)], &mut seen);
        prune(
            &mut seen,
            DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        );
        assert!(seen.contains_key("new"));
        assert!(!seen.contains_key("old"));
    }

    #[test]
    fn stream_lines() {
        let e = event("a", 0);
        let json: serde_json::Value =
            serde_json::from_str(stream_line(&e, Format::Json).unwrap().trim_end()).unwrap();
        assert_eq!(json["id"], "a");
        assert_eq!(json["service"], "identity");
        let line = stream_line(&e, Format::Table).unwrap();
        assert!(
            line.starts_with("2023-11-14T22:13:20Z  identity  SUCCESS  SIGN_IN  USER:a"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }
}
