//! The one rule for free-text names (people's and organisations'): trimmed, required,
//! bounded in Unicode code points, without control characters, because names end up in mail
//! headers, pages and logs.

/// `raw` trimmed, or the field-violation description of why it is not a name.
pub(crate) fn normalise(
    raw: &str,
    max_chars: usize,
    too_long: &'static str,
) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("is required");
    }
    if name.chars().count() > max_chars {
        return Err(too_long);
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}
