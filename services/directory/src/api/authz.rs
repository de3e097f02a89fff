//! Who may call what: the suite's two-step authorisation (`cqrs_edge::scope`), checking
//! permission before existence:
//!
//! 1. [`by_role`] (no I/O): a service token is internal; a user needs an active grant whose
//!    role carries the permission (`cqrs_auth::role_grants`). Anything else is refused before
//!    any lookup.
//! 2. [`in_scope`], once the target's ancestry and the active grant's current existence are
//!    loaded in one query: the shared decision (`cqrs_auth::decide`) on the target. A user
//!    whose grant has since been revoked is refused (`GRANT_REVOKED`) even while its session
//!    lives. A missing target is `NOT_FOUND` only to callers that would be allowed to see
//!    anything there — internal callers and suite-wide roles; everyone else gets the same
//!    `PERMISSION_DENIED` as for an existing organisation outside their scope, so ids cannot
//!    be probed.

pub use cqrs_edge::scope::{
    Access, GRANT_REVOKED, NO_ACTIVE_GRANT, SERVICE_PRINCIPAL_REQUIRED, by_permission as by_role,
    in_scope, internal_only,
};
