//! Organisations and the tree they form: a new organisation's fields and its parent's kind,
//! and search queries.
//!
//! Rules (DESIGN §2 "Organisations"):
//! - Kinds nest `REGION` > `COMMISSIONING_ORGANISATION` > `SERVICE_PROVIDER` (a GP practice):
//!   a region has no parent, a commissioning organisation's parent is a region, a provider's
//!   is a commissioning organisation. `SERVICE_DESK` organisations have no parent.
//! - `multi_level_approval` exists on service providers only and is off unless set.
//! - ODS codes, names and which roles each kind can hold are shared by the suite
//!   (`cqrs_rules::organisation`, re-exported here).

use cqrs_rules::FieldViolations;
pub use cqrs_rules::organisation::{
    NAME_MAX_CHARS, ODS_MAX_LEN, ODS_MIN_LEN, OrganisationKind, normalise_name, normalise_ods_code,
    role_valid_at,
};
use uuid::Uuid;

/// Shortest search query: one character would match a large part of the directory.
pub const SEARCH_MIN_CHARS: usize = 2;

/// How a new organisation's parent must look, checked against the stored parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentRule {
    pub kind: OrganisationKind,
    pub parent_kind: OrganisationKind,
}

impl ParentRule {
    /// `Err(self)` when the parent is of another kind than the tree requires.
    pub fn check(self, actual: OrganisationKind) -> Result<(), ParentRule> {
        if actual == self.parent_kind {
            Ok(())
        } else {
            Err(self)
        }
    }

    pub fn describe(self) -> String {
        format!(
            "the parent of a {} must be a {}",
            self.kind, self.parent_kind
        )
    }
}

/// A validated CreateOrganisation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrganisation {
    pub kind: OrganisationKind,
    pub ods_code: String,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub multi_level_approval: bool,
}

impl NewOrganisation {
    /// Checks every field, recording each problem in `violations`; `None` if any. `kind` is
    /// `None` when the request's kind was missing or unknown, which the caller reports (it
    /// knows which of the two); the other fields are still checked.
    pub fn validate(
        violations: &mut FieldViolations,
        kind: Option<OrganisationKind>,
        ods_code: &str,
        name: &str,
        parent_id: &str,
        multi_level_approval: bool,
    ) -> Option<NewOrganisation> {
        let before = violations.len();
        let ods_code = normalise_ods_code(ods_code)
            .map_err(|e| violations.add("ods_code", e))
            .ok();
        let name = normalise_name(name)
            .map_err(|e| violations.add("name", e))
            .ok();
        let parent_id = match kind.map(OrganisationKind::parent_kind) {
            Some(Some(parent_kind)) if parent_id.is_empty() => {
                violations.add(
                    "parent_id",
                    format!(
                        "is required: a {} sits under a {parent_kind}",
                        kind_name(kind)
                    ),
                );
                None
            }
            Some(Some(_)) => Uuid::parse_str(parent_id)
                .map_err(|_| violations.add("parent_id", "must be a UUID"))
                .ok(),
            Some(None) if !parent_id.is_empty() => {
                violations.add(
                    "parent_id",
                    format!("must be empty: a {} has no parent", kind_name(kind)),
                );
                None
            }
            // No kind: nothing to check the parent against yet.
            _ => None,
        };
        if multi_level_approval && kind != Some(OrganisationKind::ServiceProvider) {
            violations.add(
                "multi_level_approval",
                "only service providers have an approval level",
            );
        }
        if violations.len() != before {
            return None;
        }
        // An unreported missing kind would be a caller bug; refuse rather than guess.
        Some(NewOrganisation {
            kind: kind?,
            ods_code: ods_code?,
            name: name?,
            parent_id,
            multi_level_approval,
        })
    }

    /// The parent rule to check once the parent is loaded; `None` for roots.
    pub fn parent_rule(&self) -> Option<ParentRule> {
        self.kind.parent_kind().map(|parent_kind| ParentRule {
            kind: self.kind,
            parent_kind,
        })
    }
}

fn kind_name(kind: Option<OrganisationKind>) -> &'static str {
    kind.map_or("organisation", OrganisationKind::as_str)
}

/// A SearchOrganisations query: a name prefix (compared without case by the store) and, when
/// the query has the shape of one, an exact ODS code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    pub name_prefix: String,
    pub ods_code: Option<String>,
}

impl SearchQuery {
    pub fn parse(raw: &str) -> Result<SearchQuery, &'static str> {
        let query = raw.trim();
        let chars = query.chars().count();
        if chars < SEARCH_MIN_CHARS {
            return Err("must be at least 2 characters");
        }
        if chars > NAME_MAX_CHARS {
            return Err("must be at most 200 characters");
        }
        if query.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(SearchQuery {
            name_prefix: query.to_owned(),
            ods_code: normalise_ods_code(query).ok(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use OrganisationKind as K;

    #[test]
    fn tree_rules() {
        assert_eq!(K::Region.parent_kind(), None);
        assert_eq!(K::ServiceDesk.parent_kind(), None);
        assert_eq!(K::CommissioningOrganisation.parent_kind(), Some(K::Region));
        assert_eq!(
            K::ServiceProvider.parent_kind(),
            Some(K::CommissioningOrganisation)
        );
        let rule = ParentRule {
            kind: K::ServiceProvider,
            parent_kind: K::CommissioningOrganisation,
        };
        assert!(rule.check(K::CommissioningOrganisation).is_ok());
        assert!(rule.check(K::Region).is_err());
        assert_eq!(
            rule.describe(),
            "the parent of a SERVICE_PROVIDER must be a COMMISSIONING_ORGANISATION"
        );
    }

    fn validate(
        kind: Option<K>,
        ods: &str,
        name: &str,
        parent: &str,
        mla: bool,
    ) -> Result<NewOrganisation, Vec<String>> {
        let mut v = FieldViolations::new();
        NewOrganisation::validate(&mut v, kind, ods, name, parent, mla)
            .ok_or_else(|| v.iter().map(|(f, _)| f.to_owned()).collect())
    }

    #[test]
    fn new_organisations() {
        let parent = Uuid::new_v4().to_string();
        let ok = validate(
            Some(K::ServiceProvider),
            "a81001",
            " Surgery ",
            &parent,
            true,
        )
        .unwrap();
        assert_eq!(ok.ods_code, "A81001");
        assert_eq!(ok.name, "Surgery");
        assert!(ok.multi_level_approval);
        assert_eq!(
            ok.parent_rule().map(|r| r.parent_kind),
            Some(K::CommissioningOrganisation)
        );
        assert!(validate(Some(K::Region), "Y56", "North", "", false).is_ok());
        assert!(validate(Some(K::ServiceDesk), "DSK", "Desk", "", false).is_ok());
        assert!(validate(None, "DSK", "Desk", "", false).is_err());

        assert_eq!(
            validate(Some(K::ServiceProvider), "A81001", "S", "", false).unwrap_err(),
            ["parent_id"]
        );
        assert_eq!(
            validate(Some(K::Region), "Y56", "N", &parent, false).unwrap_err(),
            ["parent_id"]
        );
        assert_eq!(
            validate(Some(K::CommissioningOrganisation), "15N", "C", "nope", true).unwrap_err(),
            ["parent_id", "multi_level_approval"]
        );
        assert_eq!(
            validate(None, "!", "", "", false).unwrap_err(),
            ["ods_code", "name"]
        );
    }

    #[test]
    fn search_queries() {
        let q = SearchQuery::parse(" a81001 ").unwrap();
        assert_eq!(q.name_prefix, "a81001");
        assert_eq!(q.ods_code.as_deref(), Some("A81001"));
        let q = SearchQuery::parse("Riverside Sur").unwrap();
        assert_eq!(q.ods_code, None);
        assert!(SearchQuery::parse("a").is_err());
        assert!(SearchQuery::parse(" ").is_err());
        assert!(SearchQuery::parse(&"x".repeat(201)).is_err());
    }
}
