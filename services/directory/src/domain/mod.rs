//! The directory's rules, without I/O: organisation kinds and the tree they form, ODS codes
//! and names, which roles a kind of organisation can hold, and search queries.

pub mod organisation;

pub use organisation::{
    NewOrganisation, OrganisationKind, ParentRule, SearchQuery, normalise_name, normalise_ods_code,
    role_valid_at,
};
