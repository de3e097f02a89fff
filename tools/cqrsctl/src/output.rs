//! Rendering: fixed-width tables for people, key/value blocks for one item, and stable JSON
//! (the view structs in `views`, never the raw protobuf messages).

use std::io::{self, Write};

use serde::Serialize;

use crate::errors::CliError;

/// `--output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    #[default]
    Table,
    /// Stable JSON on stdout (one value per command; JSON Lines for `audit tail --follow`).
    Json,
}

/// An item the tool can print: its JSON form is the struct itself.
pub trait View: Serialize {
    /// Column headings of the table form.
    const HEADERS: &'static [&'static str];
    /// One table row, in `HEADERS` order.
    fn row(&self) -> Vec<String>;
    /// The key/value form used when a single item is shown; by default the table columns.
    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::HEADERS.iter().copied().zip(self.row()).collect()
    }
}

/// Replaces control characters (escape sequences, new lines) so server-supplied text cannot
/// move the cursor or forge lines on a terminal.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `-` for an empty cell.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// A borderless table: columns two spaces apart, no trailing spaces, one `\n` per line. Cells
/// are sanitised; widths are display widths (comfy-table uses `unicode-width`).
fn grid(header: Option<&[&str]>, rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    if let Some(header) = header {
        table.set_header(header.iter().copied());
    }
    for row in rows {
        table.add_row(row.iter().map(|c| sanitize(c)));
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, COLUMN_GAP));
    }
    table.lines().fold(String::new(), |mut out, line| {
        out.push_str(line.trim_end());
        out.push('\n');
        out
    })
}

/// Spaces between two columns.
const COLUMN_GAP: u16 = 2;

/// A fixed-width table: a heading row, then one line per row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    grid(Some(headers), rows.iter().cloned())
}

/// `KEY  value` lines for one item.
pub fn key_values(fields: &[(&str, String)]) -> String {
    grid(
        None,
        fields
            .iter()
            .map(|(key, value)| vec![(*key).to_owned(), value.clone()]),
    )
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| CliError::Other(format!("cannot encode JSON output: {e}")))
}

/// A list: a table, or a JSON array.
pub fn render_list<T: View>(items: &[T], format: Format) -> Result<String, CliError> {
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(View::row).collect();
            Ok(table(T::HEADERS, &rows))
        }
        Format::Json => json(items),
    }
}

/// One item: key/value lines, or a JSON object.
pub fn render_one<T: View>(item: &T, format: Format) -> Result<String, CliError> {
    match format {
        Format::Table => Ok(key_values(&item.fields())),
        Format::Json => json(item),
    }
}

/// Any serialisable value as JSON (for outputs that are not views, e.g. import summaries).
pub fn render_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    json(value)
}

/// Writes to stdout. A closed pipe (`cqrsctl ... | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Other(format!("cannot write to stdout: {e}"))),
    }
}

/// A note for people (never for scripts): stderr, table mode only.
pub fn note(format: Format, text: &str) {
    if format == Format::Table {
        eprintln!("{text}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Person {
        id: String,
        name: String,
    }

    impl View for Person {
        const HEADERS: &'static [&'static str] = &["ID", "NAME"];
        fn row(&self) -> Vec<String> {
            vec![self.id.clone(), self.name.clone()]
        }
    }

    fn people() -> Vec<Person> {
        vec![
            Person {
                id: "1".into(),
                name: "Ann Lee".into(),
            },
            Person {
                id: "22".into(),
                name: "Bo".into(),
            },
        ]
    }

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        assert_eq!(
            render_list(&people(), Format::Table).unwrap(),
            "ID  NAME\n1   Ann Lee\n22  Bo\n"
        );
    }

    #[test]
    fn empty_tables_keep_their_heading() {
        assert_eq!(
            render_list::<Person>(&[], Format::Table).unwrap(),
            "ID  NAME\n"
        );
        assert_eq!(render_list::<Person>(&[], Format::Json).unwrap(), "[]\n");
    }

    #[test]
    fn json_lists_are_arrays_of_the_view() {
        let json: serde_json::Value =
            serde_json::from_str(&render_list(&people(), Format::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"id": "1", "name": "Ann Lee"}, {"id": "22", "name": "Bo"}])
        );
    }

    #[test]
    fn one_item_is_key_values() {
        let p = &people()[0];
        assert_eq!(
            render_one(p, Format::Table).unwrap(),
            "ID    1\nNAME  Ann Lee\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_one(p, Format::Json).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"id": "1", "name": "Ann Lee"}));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let evil = Person {
            id: "1".into(),
            name: "Eve\u{1b}[2J\nroot".into(),
        };
        let out = render_list(&[evil], Format::Table).unwrap();
        assert!(!out.contains('\u{1b}'));
        assert_eq!(out.lines().count(), 2);
        // JSON keeps the exact text, escaped.
        let json = render_list(
            &[Person {
                id: "1".into(),
                name: "a\u{1b}b".into(),
            }],
            Format::Json,
        )
        .unwrap();
        assert!(json.contains("a\\u001bb"), "{json}");
    }

    #[test]
    fn unicode_width_counts_characters() {
        let out = table(&["N"], &[vec!["Zoë".into()], vec!["Jo".into()]]);
        assert_eq!(out, "N\nZoë\nJo\n");
        let out = table(&["NAME", "X"], &[vec!["Zoë".into(), "1".into()]]);
        assert_eq!(out, "NAME  X\nZoë   1\n");
    }

    #[test]
    fn wide_characters_take_their_display_width() {
        let out = table(&["N", "X"], &[vec!["日本".into(), "1".into()]]);
        assert_eq!(out, "N     X\n日本  1\n");
    }
}
