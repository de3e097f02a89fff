//! The directory's errors: the suite's common ones ([`ApiError`]) plus the directory's own
//! reasons, mapped to `tonic::Status` once, in `cqrs_edge`.

use cqrs_edge::{ApiError, Refusal, ServiceReason};
use tonic::Code;

use crate::store::StoreError;

pub const DOMAIN: &str = "cqrs.directory";

/// Every failure of a directory RPC.
pub type DirectoryError = ApiError<DirectoryReason>;

/// What only the directory refuses.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryReason {
    #[error("the ODS code is already taken")]
    OdsCodeTaken,
}

impl ServiceReason for DirectoryReason {
    const DOMAIN: &'static str = DOMAIN;

    fn refusal(&self) -> Refusal {
        match self {
            DirectoryReason::OdsCodeTaken => Refusal::new(
                Code::AlreadyExists,
                "ODS_CODE_TAKEN",
                "an organisation with this ODS code already exists",
            ),
        }
    }
}

impl From<StoreError> for DirectoryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::OdsCodeTaken => DirectoryReason::OdsCodeTaken.into(),
            StoreError::Unavailable(e) => DirectoryError::database_unavailable(e),
            StoreError::Database(e) => DirectoryError::internal(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic::Status;
    use tonic_types::StatusExt;

    #[test]
    fn statuses_carry_reasons() {
        let st = Status::from(DirectoryError::PermissionDenied("NO_GRANT_IN_SCOPE"));
        assert_eq!(st.code(), Code::PermissionDenied);
        let info = st.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "NO_GRANT_IN_SCOPE");
        assert_eq!(info.domain, DOMAIN);
        let st = Status::from(DirectoryError::from(DirectoryReason::OdsCodeTaken));
        assert_eq!(st.code(), Code::AlreadyExists);
        assert_eq!(
            st.get_error_details().error_info().unwrap().reason,
            "ODS_CODE_TAKEN"
        );
    }

    #[test]
    fn internal_errors_hide_their_text() {
        let st = Status::from(DirectoryError::internal(std::io::Error::other(
            "SELECT * FROM grants",
        )));
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("SELECT"));
    }
}
