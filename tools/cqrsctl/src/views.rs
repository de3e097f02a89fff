//! The stable JSON and table shapes of what the services return. Field names and enum spellings
//! here are the tool's output contract; the protobuf messages behind them may grow.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_proto::access::v1 as access;
use cqrs_proto::common::v1 as common;
use cqrs_proto::directory::v1 as directory;
use cqrs_proto::identity::v1 as identity;
use cqrs_proto::notifications::v1 as notifications;
use serde::Serialize;

use crate::enums;
use crate::output::{View, or_dash};

/// A protobuf timestamp as a UTC time, when set and representable.
pub fn to_time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// A UTC time as a protobuf timestamp.
pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// RFC 3339, UTC, whole seconds unless the value has more (`2024-05-01T09:00:00Z`).
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn time_text(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    to_time(ts).map(format_time)
}

fn opt(text: &Option<String>) -> String {
    text.clone().unwrap_or_else(|| "-".to_owned())
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn full_name(first: &str, last: &str) -> String {
    format!("{first} {last}").trim().to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    pub id: String,
    pub realm: String,
    pub user_id: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub state: String,
    pub lock_state: String,
    pub lock_expire_time: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
    pub password_change_time: Option<String>,
    /// Whether an authenticator app is on the account.
    pub second_factor: bool,
}

impl From<&identity::Account> for AccountView {
    fn from(a: &identity::Account) -> Self {
        AccountView {
            id: a.id.clone(),
            realm: enums::realm_name(a.realm),
            user_id: non_empty(&a.user_id),
            email: a.email.clone(),
            first_name: a.first_name.clone(),
            last_name: a.last_name.clone(),
            state: enums::account_state_name(a.state),
            lock_state: enums::lock_state_name(a.lock_state),
            lock_expire_time: time_text(a.lock_expire_time.as_ref()),
            create_time: time_text(a.create_time.as_ref()),
            update_time: time_text(a.update_time.as_ref()),
            password_change_time: time_text(a.password_change_time.as_ref()),
            second_factor: a.second_factor,
        }
    }
}

impl View for AccountView {
    const HEADERS: &'static [&'static str] =
        &["ID", "USER ID", "EMAIL", "NAME", "REALM", "STATE", "LOCK"];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            opt(&self.user_id),
            self.email.clone(),
            full_name(&self.first_name, &self.last_name),
            self.realm.clone(),
            self.state.clone(),
            self.lock_state.clone(),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ID", self.id.clone()),
            ("USER ID", opt(&self.user_id)),
            ("EMAIL", self.email.clone()),
            ("NAME", full_name(&self.first_name, &self.last_name)),
            ("REALM", self.realm.clone()),
            ("STATE", self.state.clone()),
            ("LOCK", self.lock_state.clone()),
            ("LOCKED UNTIL", opt(&self.lock_expire_time)),
            ("CREATED", opt(&self.create_time)),
            ("UPDATED", opt(&self.update_time)),
            ("PASSWORD SET", opt(&self.password_change_time)),
            (
                "AUTHENTICATOR APP",
                if self.second_factor { "added" } else { "none" }.to_owned(),
            ),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrganisationView {
    pub id: String,
    pub kind: String,
    pub ods_code: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub multi_level_approval: bool,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
    pub path: Vec<String>,
}

impl From<&directory::Organisation> for OrganisationView {
    fn from(o: &directory::Organisation) -> Self {
        OrganisationView {
            id: o.id.clone(),
            kind: enums::kind_name(o.kind),
            ods_code: o.ods_code.clone(),
            name: o.name.clone(),
            parent_id: non_empty(&o.parent_id),
            multi_level_approval: o.multi_level_approval,
            create_time: time_text(o.create_time.as_ref()),
            update_time: time_text(o.update_time.as_ref()),
            path: o.path.clone(),
        }
    }
}

impl View for OrganisationView {
    const HEADERS: &'static [&'static str] =
        &["ID", "ODS", "NAME", "KIND", "PARENT", "MULTI-LEVEL"];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.ods_code.clone(),
            self.name.clone(),
            self.kind.clone(),
            opt(&self.parent_id),
            yes_no(self.multi_level_approval),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields: Vec<(&'static str, String)> =
            Self::HEADERS.iter().copied().zip(self.row()).collect();
        fields.push(("CREATED", opt(&self.create_time)));
        fields.push(("UPDATED", opt(&self.update_time)));
        fields.push(("PATH", or_dash(&self.path.join(" < "))));
        fields
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantView {
    pub id: String,
    pub account_id: String,
    pub organisation_id: String,
    pub organisation_name: String,
    pub ods_code: String,
    pub organisation_kind: String,
    pub role: String,
    pub create_time: Option<String>,
}

impl From<&directory::Grant> for GrantView {
    fn from(g: &directory::Grant) -> Self {
        GrantView {
            id: g.id.clone(),
            account_id: g.account_id.clone(),
            organisation_id: g.organisation_id.clone(),
            organisation_name: g.organisation_name.clone(),
            ods_code: g.ods_code.clone(),
            organisation_kind: enums::kind_name(g.organisation_kind),
            role: enums::role_name(g.role),
            create_time: time_text(g.create_time.as_ref()),
        }
    }
}

impl View for GrantView {
    const HEADERS: &'static [&'static str] = &[
        "GRANT ID",
        "ROLE",
        "ODS",
        "ORGANISATION",
        "ORGANISATION ID",
        "CREATED",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.role.clone(),
            or_dash(&self.ods_code),
            or_dash(&self.organisation_name),
            self.organisation_id.clone(),
            opt(&self.create_time),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub organisation_id: String,
    pub organisation_name: String,
    pub role: String,
    pub state: String,
    pub inviter_id: String,
    pub account_id: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
    pub expire_time: Option<String>,
    pub send_time: Option<String>,
}

impl From<&access::Invitation> for InvitationView {
    fn from(i: &access::Invitation) -> Self {
        InvitationView {
            id: i.id.clone(),
            email: i.email.clone(),
            first_name: i.first_name.clone(),
            last_name: i.last_name.clone(),
            organisation_id: i.organisation_id.clone(),
            organisation_name: i.organisation_name.clone(),
            role: enums::role_name(i.role),
            state: enums::invitation_state_name(i.state),
            inviter_id: i.inviter_id.clone(),
            account_id: non_empty(&i.account_id),
            create_time: time_text(i.create_time.as_ref()),
            update_time: time_text(i.update_time.as_ref()),
            expire_time: time_text(i.expire_time.as_ref()),
            send_time: time_text(i.send_time.as_ref()),
        }
    }
}

impl View for InvitationView {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "EMAIL",
        "NAME",
        "ORGANISATION",
        "ROLE",
        "STATE",
        "EXPIRES",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.email.clone(),
            full_name(&self.first_name, &self.last_name),
            or_dash(&self.organisation_name),
            self.role.clone(),
            self.state.clone(),
            opt(&self.expire_time),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ID", self.id.clone()),
            ("EMAIL", self.email.clone()),
            ("NAME", full_name(&self.first_name, &self.last_name)),
            ("ORGANISATION", or_dash(&self.organisation_name)),
            ("ORGANISATION ID", self.organisation_id.clone()),
            ("ROLE", self.role.clone()),
            ("STATE", self.state.clone()),
            ("INVITER", or_dash(&self.inviter_id)),
            ("ACCOUNT", opt(&self.account_id)),
            ("CREATED", opt(&self.create_time)),
            ("SENT", opt(&self.send_time)),
            ("EXPIRES", opt(&self.expire_time)),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrationView {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub organisation_id: String,
    pub organisation_name: String,
    pub ods_code: String,
    pub role: String,
    pub state: String,
    pub reviewer_id: Option<String>,
    pub decision_reason: Option<String>,
    pub review_time: Option<String>,
    pub account_id: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

impl From<&access::Registration> for RegistrationView {
    fn from(r: &access::Registration) -> Self {
        RegistrationView {
            id: r.id.clone(),
            email: r.email.clone(),
            first_name: r.first_name.clone(),
            last_name: r.last_name.clone(),
            organisation_id: r.organisation_id.clone(),
            organisation_name: r.organisation_name.clone(),
            ods_code: r.ods_code.clone(),
            role: enums::role_name(r.role),
            state: enums::registration_state_name(r.state),
            reviewer_id: non_empty(&r.reviewer_id),
            decision_reason: non_empty(&r.decision_reason),
            review_time: time_text(r.review_time.as_ref()),
            account_id: non_empty(&r.account_id),
            create_time: time_text(r.create_time.as_ref()),
            update_time: time_text(r.update_time.as_ref()),
        }
    }
}

impl View for RegistrationView {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "EMAIL",
        "NAME",
        "ODS",
        "ORGANISATION",
        "ROLE",
        "STATE",
        "SUBMITTED",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.email.clone(),
            full_name(&self.first_name, &self.last_name),
            or_dash(&self.ods_code),
            or_dash(&self.organisation_name),
            self.role.clone(),
            self.state.clone(),
            opt(&self.create_time),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields: Vec<(&'static str, String)> =
            Self::HEADERS.iter().copied().zip(self.row()).collect();
        fields.push(("REVIEWER", opt(&self.reviewer_id)));
        fields.push(("REASON", opt(&self.decision_reason)));
        fields.push(("REVIEWED", opt(&self.review_time)));
        fields.push(("ACCOUNT", opt(&self.account_id)));
        fields
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRequestView {
    pub id: String,
    pub account_id: String,
    pub organisation_id: String,
    pub organisation_name: String,
    pub role: String,
    pub reason: String,
    pub state: String,
    pub reviewer_id: Option<String>,
    pub decision_reason: Option<String>,
    pub review_time: Option<String>,
    pub grant_id: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

impl From<&access::AccessRequest> for AccessRequestView {
    fn from(r: &access::AccessRequest) -> Self {
        AccessRequestView {
            id: r.id.clone(),
            account_id: r.account_id.clone(),
            organisation_id: r.organisation_id.clone(),
            organisation_name: r.organisation_name.clone(),
            role: enums::role_name(r.role),
            reason: r.reason.clone(),
            state: enums::access_request_state_name(r.state),
            reviewer_id: non_empty(&r.reviewer_id),
            decision_reason: non_empty(&r.decision_reason),
            review_time: time_text(r.review_time.as_ref()),
            grant_id: non_empty(&r.grant_id),
            create_time: time_text(r.create_time.as_ref()),
            update_time: time_text(r.update_time.as_ref()),
        }
    }
}

impl View for AccessRequestView {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "ACCOUNT",
        "ORGANISATION",
        "ROLE",
        "STATE",
        "REASON",
        "SUBMITTED",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.account_id.clone(),
            or_dash(&self.organisation_name),
            self.role.clone(),
            self.state.clone(),
            or_dash(&self.reason),
            opt(&self.create_time),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields: Vec<(&'static str, String)> =
            Self::HEADERS.iter().copied().zip(self.row()).collect();
        fields.push(("ORGANISATION ID", self.organisation_id.clone()));
        fields.push(("REVIEWER", opt(&self.reviewer_id)));
        fields.push(("DECISION REASON", opt(&self.decision_reason)));
        fields.push(("REVIEWED", opt(&self.review_time)));
        fields.push(("GRANT", opt(&self.grant_id)));
        fields
    }
}

/// An audit event from any of the four audit trails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEventView {
    pub service: &'static str,
    pub sequence: i64,
    pub id: String,
    pub create_time: Option<String>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub details: BTreeMap<String, String>,
    /// The actor's name, organisation and role at the time; empty when not known.
    pub actor_name: Option<String>,
    pub actor_organisation_id: Option<String>,
    pub actor_role: Option<String>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    /// Changed fields: `{ field: [before, after] }`, each as JSON.
    pub changes: BTreeMap<String, (String, String)>,
    #[serde(skip)]
    pub time: Option<DateTime<Utc>>,
}

impl AuditEventView {
    /// An event of `service`'s trail (every trail answers the same `cqrs.common.v1` shape).
    pub fn of(service: &'static str, e: &common::AuditEvent) -> Self {
        AuditEventView {
            service,
            sequence: e.sequence,
            id: e.id.clone(),
            create_time: time_text(e.create_time.as_ref()),
            actor_kind: enums::actor_kind_name(e.actor_kind),
            actor_id: non_empty(&e.actor_id),
            action: e.action.clone(),
            target_type: e.target_type.clone(),
            target_id: e.target_id.clone(),
            outcome: enums::outcome_name(e.outcome),
            request_id: non_empty(&e.request_id),
            details: e.details.clone().into_iter().collect(),
            actor_name: non_empty(&e.actor_name),
            actor_organisation_id: non_empty(&e.actor_organisation_id),
            actor_role: non_empty(&e.actor_role),
            client_address: non_empty(&e.client_address),
            user_agent: non_empty(&e.user_agent),
            changes: e
                .changes
                .iter()
                .map(|c| {
                    (
                        c.field.clone(),
                        (c.before_json.clone(), c.after_json.clone()),
                    )
                })
                .collect(),
            time: to_time(e.create_time.as_ref()),
        }
    }
}

fn details_text(details: &BTreeMap<String, String>) -> String {
    details
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn changes_text(changes: &BTreeMap<String, (String, String)>) -> String {
    changes
        .iter()
        .map(|(field, (before, after))| format!("{field}: {before} -> {after}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl View for AuditEventView {
    const HEADERS: &'static [&'static str] = &[
        "TIME", "SERVICE", "OUTCOME", "ACTION", "ACTOR", "TARGET", "REQUEST", "DETAILS", "CHANGES",
    ];

    fn row(&self) -> Vec<String> {
        let mut actor = match &self.actor_id {
            Some(id) => format!("{}:{id}", self.actor_kind),
            None => self.actor_kind.clone(),
        };
        let context: Vec<&str> = [&self.actor_name, &self.actor_role, &self.client_address]
            .into_iter()
            .filter_map(|v| v.as_deref())
            .collect();
        if !context.is_empty() {
            actor = format!("{actor} ({})", context.join(", "));
        }
        vec![
            opt(&self.create_time),
            self.service.to_owned(),
            self.outcome.clone(),
            self.action.clone(),
            actor,
            if self.target_id.is_empty() {
                or_dash(&self.target_type)
            } else {
                format!("{}:{}", self.target_type, self.target_id)
            },
            opt(&self.request_id),
            or_dash(&details_text(&self.details)),
            or_dash(&changes_text(&self.changes)),
        ]
    }
}

/// One e-mail delivery (the notification service's log; it has no audit trail RPC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryView {
    pub service: &'static str,
    pub id: String,
    pub create_time: Option<String>,
    pub template: String,
    pub to: String,
    pub account_id: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub deliver_time: Option<String>,
    pub security: bool,
    #[serde(skip)]
    pub time: Option<DateTime<Utc>>,
}

impl From<&notifications::Delivery> for DeliveryView {
    fn from(d: &notifications::Delivery) -> Self {
        DeliveryView {
            service: "notifications",
            id: d.id.clone(),
            create_time: time_text(d.create_time.as_ref()),
            template: enums::email_template_name(d.template),
            to: d.to.clone(),
            account_id: non_empty(&d.account_id),
            state: enums::delivery_state_name(d.state),
            attempts: d.attempts,
            last_error: non_empty(&d.last_error),
            deliver_time: time_text(d.deliver_time.as_ref()),
            security: d.security,
            time: to_time(d.create_time.as_ref()),
        }
    }
}

impl View for DeliveryView {
    const HEADERS: &'static [&'static str] = &[
        "TIME",
        "STATE",
        "TEMPLATE",
        "TO",
        "ATTEMPTS",
        "ID",
        "LAST ERROR",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            opt(&self.create_time),
            self.state.clone(),
            self.template.clone(),
            self.to.clone(),
            self.attempts.to_string(),
            self.id.clone(),
            opt(&self.last_error),
        ]
    }
}

/// The signed-in user of a profile (`login`, `whoami`, `use-role`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub profile: String,
    pub account_id: String,
    pub user_id: Option<String>,
    pub email: String,
    pub name: String,
    pub realm: String,
    pub active_role: Option<String>,
    pub active_organisation_id: Option<String>,
    pub active_organisation_name: Option<String>,
    pub active_ods_code: Option<String>,
    pub access_token_expires_at: String,
    pub session_expires_at: Option<String>,
}

impl View for SessionView {
    const HEADERS: &'static [&'static str] = &[
        "PROFILE",
        "ACCOUNT",
        "USER ID",
        "EMAIL",
        "NAME",
        "REALM",
        "ROLE",
        "ORGANISATION",
        "ODS",
        "ORGANISATION ID",
        "TOKEN EXPIRES",
        "SESSION EXPIRES",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.profile.clone(),
            self.account_id.clone(),
            opt(&self.user_id),
            self.email.clone(),
            self.name.clone(),
            self.realm.clone(),
            self.active_role
                .clone()
                .unwrap_or_else(|| "(none selected)".to_owned()),
            opt(&self.active_organisation_name),
            opt(&self.active_ods_code),
            opt(&self.active_organisation_id),
            self.access_token_expires_at.clone(),
            opt(&self.session_expires_at),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::output::{Format, render_list, render_one};

    fn ts(rfc: &str) -> Option<prost_types::Timestamp> {
        Some(to_timestamp(
            DateTime::parse_from_rfc3339(rfc)
                .unwrap()
                .with_timezone(&Utc),
        ))
    }

    fn account() -> identity::Account {
        identity::Account {
            id: "6f1c".into(),
            realm: identity::Realm::National as i32,
            user_id: "JSM482".into(),
            email: "jo.smith@nhs.net".into(),
            first_name: "Jo".into(),
            last_name: "Smith".into(),
            state: identity::AccountState::Active as i32,
            lock_state: identity::LockState::Unlocked as i32,
            lock_expire_time: None,
            create_time: ts("2024-05-01T09:00:00Z"),
            update_time: None,
            password_change_time: ts("2024-05-01T09:30:00.5Z"),
            second_factor: false,
        }
    }

    #[test]
    fn account_json_is_stable() {
        let view = AccountView::from(&account());
        let json: serde_json::Value =
            serde_json::from_str(&render_one(&view, Format::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "6f1c",
                "realm": "NATIONAL",
                "user_id": "JSM482",
                "email": "jo.smith@nhs.net",
                "first_name": "Jo",
                "last_name": "Smith",
                "state": "ACTIVE",
                "lock_state": "UNLOCKED",
                "lock_expire_time": null,
                "create_time": "2024-05-01T09:00:00Z",
                "update_time": null,
                "password_change_time": "2024-05-01T09:30:00.500Z",
                "second_factor": false,
            })
        );
    }

    #[test]
    fn account_table() {
        let mut local = account();
        local.realm = identity::Realm::Local as i32;
        local.user_id.clear();
        local.lock_state = identity::LockState::PermanentlyLocked as i32;
        let out = render_list(
            &[AccountView::from(&account()), AccountView::from(&local)],
            Format::Table,
        )
        .unwrap();
        assert_eq!(
            out,
            "\
ID    USER ID  EMAIL             NAME      REALM     STATE   LOCK
6f1c  JSM482   jo.smith@nhs.net  Jo Smith  NATIONAL  ACTIVE  UNLOCKED
6f1c  -        jo.smith@nhs.net  Jo Smith  LOCAL     ACTIVE  PERMANENTLY_LOCKED
"
        );
    }

    #[test]
    fn audit_events_from_every_trail_share_one_shape() {
        let e = common::AuditEvent {
            id: "e1".into(),
            actor_id: "a1".into(),
            actor_kind: common::ActorKind::User as i32,
            action: "GRANT_ROLE".into(),
            target_type: "GRANT".into(),
            target_id: "g1".into(),
            outcome: common::AuditOutcome::Success as i32,
            request_id: String::new(),
            create_time: ts("2024-05-01T09:00:00Z"),
            details: [("role".to_owned(), "PRACTICE_USER".to_owned())].into(),
            actor_name: "Ann Smith".into(),
            actor_role: "SERVICE_DESK".into(),
            changes: vec![common::FieldChange {
                field: "grants.role".into(),
                before_json: "null".into(),
                after_json: "\"PRACTICE_USER\"".into(),
            }],
            ..common::AuditEvent::default()
        };
        let view = AuditEventView::of("directory", &e);
        assert_eq!(view.service, "directory");
        assert_eq!(
            view.row(),
            vec![
                "2024-05-01T09:00:00Z",
                "directory",
                "SUCCESS",
                "GRANT_ROLE",
                "USER:a1 (Ann Smith, SERVICE_DESK)",
                "GRANT:g1",
                "-",
                "role=PRACTICE_USER",
                "grants.role: null -> \"PRACTICE_USER\""
            ]
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["details"]["role"], "PRACTICE_USER");
        assert!(json.get("time").is_none());
    }

    #[test]
    fn timestamps_round_trip() {
        let t = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(to_time(Some(&to_timestamp(t))), Some(t));
        assert_eq!(format_time(t), "2030-01-02T03:04:05.123Z");
        assert_eq!(
            to_time(Some(&prost_types::Timestamp {
                seconds: 0,
                nanos: -1
            })),
            None
        );
    }
}
