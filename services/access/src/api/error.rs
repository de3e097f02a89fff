//! The access service's errors: the suite's common ones ([`ApiError`]) plus its own reasons,
//! mapped to `tonic::Status` once, in `cqrs_edge`.

use cqrs_edge::{ApiError, Refusal, ServiceReason};
use tonic::Code;

use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.access";

/// Reason of every refused link, whatever the cause (unknown, used, expired, cancelled,
/// replaced by a resend): the answers must not tell them apart.
pub const LINK_INVALID: &str = "LINK_INVALID";

/// Every failure of an access RPC.
pub type AccessError = ApiError<AccessReason>;

/// What only the access service refuses.
#[derive(Debug, thiserror::Error)]
pub enum AccessReason {
    /// An invitation link that does not work (see [`LINK_INVALID`]).
    #[error("the link is invalid, already used or expired")]
    LinkInvalid,
}

impl ServiceReason for AccessReason {
    const DOMAIN: &'static str = DOMAIN;

    fn refusal(&self) -> Refusal {
        match self {
            AccessReason::LinkInvalid => Refusal::new(
                Code::FailedPrecondition,
                LINK_INVALID,
                "the link is invalid, already used or expired",
            ),
        }
    }
}

impl From<StoreError> for AccessError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(e) => AccessError::database_unavailable(e),
            StoreError::Database(e) => AccessError::internal(e),
            // Callers that expect a conflict map it themselves; any other is a bug.
            e @ StoreError::Conflict(_) => AccessError::internal(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::clients::PeerError;
    use tonic::Status;
    use tonic_types::StatusExt;

    #[test]
    fn statuses_carry_reasons() {
        let st = Status::from(AccessError::PermissionDenied("OWN_REQUEST"));
        assert_eq!(st.code(), Code::PermissionDenied);
        let info = st.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "OWN_REQUEST");
        assert_eq!(info.domain, DOMAIN);
        let st = Status::from(AccessError::from(AccessReason::LinkInvalid));
        assert_eq!(st.code(), Code::FailedPrecondition);
        assert_eq!(st.get_details_error_info().unwrap().reason, LINK_INVALID);
        let st = Status::from(AccessError::from(PeerError::Unavailable {
            service: "identity",
            code: Code::Unavailable,
            message: "connection refused".into(),
        }));
        assert_eq!(st.code(), Code::Unavailable);
        assert!(!st.message().contains("refused"));
    }

    #[test]
    fn internal_errors_hide_their_text() {
        let st = Status::from(AccessError::internal(std::io::Error::other(
            "SELECT * FROM invitations",
        )));
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("SELECT"));
    }
}
