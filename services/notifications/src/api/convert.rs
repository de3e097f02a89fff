//! Rows to protobuf messages.

use cqrs_proto::notifications::v1 as pb;

use crate::domain::{DeliveryState, Template};
use crate::store::{DeliveryRow, NotificationRow, PreferencesRow};

pub use cqrs_edge::timestamp;

pub fn delivery(row: &DeliveryRow) -> pb::Delivery {
    let state = match row.state() {
        Some(DeliveryState::Pending) => pb::DeliveryState::Pending,
        Some(DeliveryState::Delivered) => pb::DeliveryState::Delivered,
        Some(DeliveryState::DeadLetter) => pb::DeliveryState::DeadLetter,
        Some(DeliveryState::Suppressed) => pb::DeliveryState::Suppressed,
        None => pb::DeliveryState::Unspecified,
    };
    let pending = row.state() == Some(DeliveryState::Pending);
    pb::Delivery {
        id: row.id.to_string(),
        idempotency_key: row.idempotency_key.clone(),
        template: row.template().map(template_to_proto).unwrap_or_default() as i32,
        to: row.recipient.clone(),
        account_id: row.account_id.map(|id| id.to_string()).unwrap_or_default(),
        state: state as i32,
        attempts: row.attempts,
        last_error: row.last_error.clone().unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        next_attempt_time: pending.then(|| timestamp(row.next_attempt_at)),
        deliver_time: row.delivered_at.map(timestamp),
        security: row.security,
    }
}

pub fn notification(row: &NotificationRow) -> pb::Notification {
    pb::Notification {
        id: row.id.to_string(),
        account_id: row.account_id.to_string(),
        kind: row.kind.clone(),
        title: row.title.clone(),
        body: row.body.clone(),
        read: row.read_at.is_some(),
        create_time: Some(timestamp(row.created_at)),
        read_time: row.read_at.map(timestamp),
        subject_id: row.subject_id.clone(),
    }
}

pub fn preferences(row: &PreferencesRow) -> pb::Preferences {
    pb::Preferences {
        account_id: row.account_id.to_string(),
        email_enabled: row.email_enabled,
        update_time: row.updated_at.map(timestamp),
    }
}

/// The wire enum of a template: its value name is the template's stored name.
pub fn template_to_proto(template: Template) -> pb::EmailTemplate {
    pb::EmailTemplate::from_str_name(template.as_str()).unwrap_or_default()
}

/// The template a request names; `None` for unspecified or unknown numbers.
pub fn template_from_proto(value: i32) -> Option<Template> {
    pb::EmailTemplate::try_from(value)
        .ok()
        .and_then(|t| Template::parse(t.as_str_name()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn every_template_round_trips_through_the_wire_enum() {
        for template in Template::ALL {
            let wire = template_to_proto(template);
            assert_ne!(wire, pb::EmailTemplate::Unspecified, "{template:?}");
            assert_eq!(template_from_proto(wire as i32), Some(template));
        }
        assert_eq!(template_from_proto(0), None);
        assert_eq!(template_from_proto(999), None);
    }
}
