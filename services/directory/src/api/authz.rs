//! Who may call what: the suite's two-step authorisation (`cqrs_edge::scope`, which says the
//! rules), under the names the directory's handlers use. The directory's part is step 2's
//! input: the target organisation's ancestry and whether the caller's active grant still
//! exists, loaded in one query (`DirectoryApi::authorise_org`) before [`in_scope`] decides.

pub use cqrs_edge::scope::{
    Access, GRANT_REVOKED, NO_ACTIVE_GRANT, SERVICE_PRINCIPAL_REQUIRED, by_permission as by_role,
    in_scope, internal_only,
};
