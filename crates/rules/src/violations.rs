//! Per-field validation failures: every problem of a request is collected and reported at
//! once (the edge turns them into one `google.rpc.BadRequest`).

use std::fmt;

/// Per-field validation failures, reported as one `google.rpc.BadRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldViolations(Vec<(String, String)>);

impl FieldViolations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (proto field path, e.g. `"email"` or `"params.name"`) is wrong.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// A required UUID field: `None` (and a violation) when it is empty or not a UUID.
    pub fn uuid(&mut self, field: &str, raw: &str) -> Option<uuid::Uuid> {
        if raw.is_empty() {
            self.add(field, "is required");
            return None;
        }
        uuid::Uuid::parse_str(raw)
            .map_err(|_| self.add(field, "must be a UUID"))
            .ok()
    }

    /// An optional UUID field: empty means unset (`None`, no violation).
    pub fn optional_uuid(&mut self, field: &str, raw: &str) -> Option<uuid::Uuid> {
        if raw.is_empty() {
            None
        } else {
            self.uuid(field, raw)
        }
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of violations.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `(field, description)` pairs in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(f, d)| (f.as_str(), d.as_str()))
    }

    /// `Ok(())` when empty, so validation can end with `violations.into_result()?`.
    pub fn into_result(self) -> Result<(), FieldViolations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, description)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {description}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldViolations {}
