//! Who is calling, as established by the auth layer.

use uuid::Uuid;

use cqrs_rules::{Permission, Role, role_grants};

/// The grant a user picked for this session: acts as `role` at `organisation_id` (and, for
/// scope checks, at its descendants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActiveGrant {
    /// Organisation the grant is at.
    pub organisation_id: Uuid,
    /// Role held there.
    pub role: Role,
}

/// How a session's person proved who they are, as its tokens carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignInProof {
    /// RFC 8176 method references (`amr`): `pwd`, `otp`, `fed`.
    pub methods: Vec<String>,
    /// The last second-factor check of the session, if the person has a second factor.
    pub second_factor: Option<SecondFactorCheck>,
    /// The person's display name when they signed in (the `name` claim), so every service's
    /// audit trail can say who acted without a lookup. Empty when not known.
    pub display_name: String,
}

/// When a second factor was last checked, and until when that check counts for the
/// administrative actions that need a recent one (step-up). Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondFactorCheck {
    pub checked_at: i64,
    pub fresh_until: i64,
}

impl SignInProof {
    /// Whether an action needing a recent second-factor check must ask for one first: only a
    /// person with a second factor whose last check is older than the window. (Whoever has
    /// none holds no role that needs one: identity refuses such roles until one is added.)
    pub fn needs_step_up(&self, now: i64) -> bool {
        self.second_factor
            .is_some_and(|check| now > check.fresh_until)
    }
}

/// The authenticated caller, inserted into request extensions by [`crate::AuthLayer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in person.
    User {
        /// The account (`sub`).
        account_id: Uuid,
        /// The session (`sid`) that must stay live for the token to count.
        session_id: String,
        /// The picked grant, if any.
        active: Option<ActiveGrant>,
        /// How the person signed in, and their last second-factor check.
        proof: SignInProof,
    },
    /// Another service, authenticated with a service token.
    Service {
        /// The service's client id (`sub`).
        client_id: String,
    },
}

impl Principal {
    /// The account of a user principal.
    pub fn account_id(&self) -> Option<Uuid> {
        match self {
            Principal::User { account_id, .. } => Some(*account_id),
            Principal::Service { .. } => None,
        }
    }

    /// Whether this is a service principal.
    pub fn is_service(&self) -> bool {
        matches!(self, Principal::Service { .. })
    }

    /// The role of the active grant, if a user picked one.
    pub fn active_role(&self) -> Option<Role> {
        self.active_grant().map(|g| g.role)
    }

    /// The active grant, if a user picked one.
    pub fn active_grant(&self) -> Option<&ActiveGrant> {
        match self {
            Principal::User { active, .. } => active.as_ref(),
            Principal::Service { .. } => None,
        }
    }

    /// The session of a user principal.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Principal::User { session_id, .. } => Some(session_id),
            Principal::Service { .. } => None,
        }
    }

    /// How a user principal signed in (`None` for a service).
    pub fn proof(&self) -> Option<&SignInProof> {
        match self {
            Principal::User { proof, .. } => Some(proof),
            Principal::Service { .. } => None,
        }
    }

    /// The client id of a service principal.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Principal::Service { client_id } => Some(client_id),
            Principal::User { .. } => None,
        }
    }

    /// Whether the active role carries `permission` (ignores scope; services add that).
    pub fn has_permission(&self, permission: Permission) -> bool {
        self.active_role()
            .is_some_and(|role| role_grants(role, permission))
    }
}

/// The caller of a handler, or `Unauthenticated` if the auth layer did not set one (a public
/// RPC, or a handler mounted without the layer).
pub fn principal<T>(req: &tonic::Request<T>) -> Result<&Principal, tonic::Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(crate::error::unauthenticated)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn user(active: Option<ActiveGrant>) -> Principal {
        Principal::User {
            account_id: Uuid::from_u128(7),
            session_id: "s1".into(),
            active,
            proof: SignInProof::default(),
        }
    }

    #[test]
    fn accessors() {
        let grant = ActiveGrant {
            organisation_id: Uuid::from_u128(9),
            role: Role::ServiceDesk,
        };
        let u = user(Some(grant));
        assert_eq!(u.account_id(), Some(Uuid::from_u128(7)));
        assert!(!u.is_service());
        assert_eq!(u.active_role(), Some(Role::ServiceDesk));
        assert_eq!(u.session_id(), Some("s1"));
        assert!(u.has_permission(Permission::UnlockAccount));
        assert!(!user(None).has_permission(Permission::ViewScope));

        let s = Principal::Service {
            client_id: "outbox".into(),
        };
        assert!(s.is_service());
        assert_eq!(s.account_id(), None);
        assert_eq!(s.active_role(), None);
        assert_eq!(s.client_id(), Some("outbox"));
    }

    #[test]
    fn principal_helper() {
        let mut req = tonic::Request::new(());
        let err = principal(&req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        req.extensions_mut().insert(user(None));
        assert_eq!(principal(&req).unwrap(), &user(None));
    }
}
