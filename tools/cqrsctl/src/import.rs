//! `org import`: reading and checking the CSV file before anything is sent.
//!
//! Columns (header row required, any order, case-insensitive): `ods_code`, `name`, `kind`
//! and optionally `parent_ods`. Blank lines and lines starting with `#` are skipped. Every
//! problem in the file is reported at once, by line, and nothing is sent while there is one:
//! - `ods_code`: 3-6 letters and digits with at least one letter (upper-cased); unique in the
//!   file;
//! - `name`: 1-200 characters, no control characters;
//! - `kind`: region, commissioning-organisation, service-provider, service-desk (any case,
//!   `-` or `_`);
//! - `parent_ods`: empty for regions and service desks, required otherwise; when the parent is
//!   in the file it must come on an earlier line and be of the kind the tree requires (region >
//!   commissioning organisation > service provider); otherwise it must already exist.

use cqrs_rules::organisation::{OrganisationKind as Kind, normalise_ods_code};
use std::collections::HashMap;
use std::io::Read;

use cqrs_proto::directory::v1::OrganisationKind;
use uuid::Uuid;

use crate::enums;
use crate::errors::{CliError, Violation};

/// Namespace of the import's request ids (UUID v5 of the ODS code): the same ODS code always
/// gives the same request id, so a re-run after a lost answer cannot create a second row.
pub const REQUEST_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5c0e_7f1a_3b2d_4c8e_9a61_0d4f_2e7b_c913);

/// The request id `org import` sends for an ODS code (already normalised).
pub fn request_id_for(ods_code: &str) -> Uuid {
    Uuid::new_v5(
        &REQUEST_ID_NAMESPACE,
        format!("cqrsctl/org-import/{ods_code}").as_bytes(),
    )
}

/// One checked row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRow {
    /// 1-based line number in the file.
    pub line: u64,
    pub ods_code: String,
    pub name: String,
    pub kind: OrganisationKind,
    pub parent_ods: Option<String>,
    /// Line of the parent when it is in the file.
    pub parent_line: Option<u64>,
}

/// The kind a `kind` organisation sits under: the directory's tree rule (`cqrs_rules`).
fn parent_kind(kind: OrganisationKind) -> Option<OrganisationKind> {
    let kind = Kind::parse(kind.as_str_name().strip_prefix("ORGANISATION_KIND_")?)?;
    let parent = kind.parent_kind()?;
    OrganisationKind::from_str_name(&format!("ORGANISATION_KIND_{}", parent.as_str()))
}

const COLUMNS: [&str; 4] = ["ods_code", "name", "kind", "parent_ods"];

/// Reads and checks the whole file. `source` names it in messages.
pub fn parse(mut input: impl Read, source: &str) -> Result<Vec<ImportRow>, CliError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Usage(format!("cannot read {source}: {e}")))?;
    // A record's position is where the reader started on it, before the blank and comment
    // lines it skipped; its line is that of the first byte after them.
    let line_of = |byte: u64| -> u64 { line_of_record(&bytes, byte) };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(bytes.as_slice());
    let bad_file =
        |e: csv::Error| CliError::invalid(format!("{source}: not a readable CSV file: {e}"));

    let headers = reader.headers().map_err(bad_file)?.clone();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut problems: Vec<Violation> = Vec::new();
    for (i, raw) in headers.iter().enumerate() {
        let name = raw
            .trim_start_matches('\u{feff}')
            .trim()
            .to_ascii_lowercase();
        match COLUMNS.iter().find(|c| **c == name) {
            Some(column) if index.contains_key(column) => problems.push(Violation {
                field: "header".into(),
                description: format!("column `{column}` appears twice"),
            }),
            Some(column) => {
                index.insert(column, i);
            }
            None => problems.push(Violation {
                field: "header".into(),
                description: format!(
                    "unknown column `{raw}`; expected ods_code, name, kind, parent_ods"
                ),
            }),
        }
    }
    for required in ["ods_code", "name", "kind"] {
        if !index.contains_key(required) {
            problems.push(Violation {
                field: "header".into(),
                description: format!("missing column `{required}`"),
            });
        }
    }
    if !problems.is_empty() {
        return Err(invalid(source, problems));
    }
    let column = |record: &csv::StringRecord, name: &str| -> String {
        index
            .get(name)
            .and_then(|i| record.get(*i))
            .unwrap_or("")
            .to_owned()
    };

    // First pass: each row on its own.
    struct Raw {
        line: u64,
        ods: Option<String>,
        name: Option<String>,
        kind: Option<OrganisationKind>,
        parent: Option<String>,
        parent_ok: bool,
    }
    let mut raws = Vec::new();
    for record in reader.records() {
        let record = record.map_err(bad_file)?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(0, |p| line_of(p.byte()));
        let mut problem = |field: &str, description: String| {
            problems.push(Violation {
                field: format!("line {line}: {field}"),
                description,
            });
        };
        let ods = normalise_ods_code(&column(&record, "ods_code"))
            .map_err(|e| problem("ods_code", e.to_owned()))
            .ok();
        let name_raw = column(&record, "name");
        let name = if name_raw.is_empty() {
            problem("name", "is required".into());
            None
        } else if name_raw.chars().count() > 200 {
            problem("name", "must be at most 200 characters".into());
            None
        } else if name_raw.chars().any(char::is_control) {
            problem("name", "must not contain control characters".into());
            None
        } else {
            Some(name_raw)
        };
        let kind = enums::parse_kind(&column(&record, "kind"))
            .map_err(|e| problem("kind", e))
            .ok();
        let parent_raw = column(&record, "parent_ods");
        let mut parent_ok = true;
        let parent = if parent_raw.is_empty() {
            None
        } else {
            match normalise_ods_code(&parent_raw) {
                Ok(p) => Some(p),
                Err(e) => {
                    problem("parent_ods", e.to_owned());
                    parent_ok = false;
                    None
                }
            }
        };
        if let Some(kind) = kind {
            match (parent_kind(kind), &parent) {
                (None, Some(_)) => problem(
                    "parent_ods",
                    format!(
                        "must be empty: a {} has no parent",
                        enums::kind_name(kind as i32)
                    ),
                ),
                (Some(want), None) if parent_ok => problem(
                    "parent_ods",
                    format!(
                        "is required: a {} sits under a {}",
                        enums::kind_name(kind as i32),
                        enums::kind_name(want as i32)
                    ),
                ),
                _ => {}
            }
        }
        if let (Some(ods), Some(parent)) = (&ods, &parent)
            && ods == parent
        {
            problem("parent_ods", "cannot be the row's own ODS code".into());
        }
        raws.push(Raw {
            line,
            ods,
            name,
            kind,
            parent,
            parent_ok,
        });
    }

    // Second pass: uniqueness and order.
    let mut first_line: HashMap<&str, (u64, Option<OrganisationKind>)> = HashMap::new();
    for raw in &raws {
        if let Some(ods) = raw.ods.as_deref() {
            if let Some((line, _)) = first_line.get(ods) {
                problems.push(Violation {
                    field: format!("line {}: ods_code", raw.line),
                    description: format!("{ods} already appears on line {line}"),
                });
            } else {
                first_line.insert(ods, (raw.line, raw.kind));
            }
        }
    }
    let mut rows = Vec::new();
    for raw in &raws {
        let mut parent_line = None;
        if let (Some(parent), Some(kind)) = (raw.parent.as_deref(), raw.kind)
            && raw.ods.as_deref() != Some(parent)
            && let Some((line, parent_kind_found)) = first_line.get(parent)
        {
            if *line > raw.line {
                problems.push(Violation {
                    field: format!("line {}: parent_ods", raw.line),
                    description: format!(
                        "{parent} is defined on line {line}, after this row; parents must come first"
                    ),
                });
            } else if let (Some(want), Some(found)) = (parent_kind(kind), parent_kind_found)
                && want != *found
            {
                problems.push(Violation {
                    field: format!("line {}: parent_ods", raw.line),
                    description: format!(
                        "{parent} (line {line}) is a {}; a {} sits under a {}",
                        enums::kind_name(*found as i32),
                        enums::kind_name(kind as i32),
                        enums::kind_name(want as i32)
                    ),
                });
            }
            parent_line = Some(*line);
        }
        if let (Some(ods_code), Some(name), Some(kind), true) =
            (&raw.ods, &raw.name, raw.kind, raw.parent_ok)
        {
            rows.push(ImportRow {
                line: raw.line,
                ods_code: ods_code.clone(),
                name: name.clone(),
                kind,
                parent_ods: raw.parent.clone(),
                parent_line,
            });
        }
    }
    if !problems.is_empty() {
        return Err(invalid(source, problems));
    }
    if rows.is_empty() {
        return Err(CliError::invalid(format!("{source}: no rows to import")));
    }
    Ok(rows)
}

/// The 1-based line of the record the reader started reading at `byte`.
fn line_of_record(bytes: &[u8], byte: u64) -> u64 {
    let mut pos = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == b'\n');
        let line = &rest[..end.unwrap_or(rest.len())];
        let skipped = line.is_empty() || line == b"\r" || line.first() == Some(&b'#');
        match end {
            Some(end) if skipped => pos += end + 1,
            _ => break,
        }
    }
    let newlines = bytes
        .get(..pos)
        .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count());
    u64::try_from(newlines)
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// The line a problem is about (0 for the header), to report problems in file order.
fn problem_line(v: &Violation) -> u64 {
    v.field
        .strip_prefix("line ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn invalid(source: &str, mut violations: Vec<Violation>) -> CliError {
    violations.sort_by_key(problem_line);
    let n = violations.len();
    CliError::Invalid {
        message: format!(
            "{source}: {n} problem{}; nothing was sent",
            if n == 1 { "" } else { "s" }
        ),
        violations,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<ImportRow> {
        parse(text.as_bytes(), "t.csv").unwrap()
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text.as_bytes(), "t.csv").unwrap_err() {
            CliError::Invalid { violations, .. } => violations
                .into_iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_a_tree_in_order() {
        let rows = ok("\
ods_code,name,kind,parent_ods
Y56,London,region,
15n, North Central London ,COMMISSIONING_ORGANISATION,y56

# a practice
A81001,\"The Surgery, High St\",service-provider,15N
");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].ods_code, "Y56");
        assert_eq!(rows[0].parent_ods, None);
        assert_eq!(rows[1].ods_code, "15N");
        assert_eq!(rows[1].name, "North Central London");
        assert_eq!(rows[1].parent_ods.as_deref(), Some("Y56"));
        assert_eq!(rows[1].parent_line, Some(2));
        assert_eq!(rows[2].name, "The Surgery, High St");
        assert_eq!(rows[2].kind, OrganisationKind::ServiceProvider);
        assert_eq!(rows[2].line, 6);
    }

    #[test]
    fn columns_in_any_order_and_parent_column_optional() {
        let rows = ok("\u{feff}Kind,Name,ODS_CODE\nregion,London,Y56\n");
        assert_eq!(rows[0].ods_code, "Y56");
        assert_eq!(rows[0].kind, OrganisationKind::Region);
        // A parent outside the file must already exist: only checked when importing.
        let rows = ok("ods_code,name,kind,parent_ods\nA81001,Surgery,service-provider,15N\n");
        assert_eq!(rows[0].parent_line, None);
    }

    #[test]
    fn header_problems() {
        assert_eq!(
            problems("ods,name,kind\nY56,London,region\n"),
            vec![
                "header: unknown column `ods`; expected ods_code, name, kind, parent_ods",
                "header: missing column `ods_code`",
            ]
        );
        assert_eq!(
            problems("ods_code,name,kind,kind\n"),
            vec!["header: column `kind` appears twice"]
        );
    }

    #[test]
    fn every_row_problem_is_reported_by_line() {
        let found = problems(
            "\
ods_code,name,kind,parent_ods
Y56,London,region,
Y56,London again,region,
,No code,region,
A81001,Surgery,service-provider,
QWO,,commissioning-organisation,Y56
15N,Board,planet,Y56
Y57,Region,region,Y56
Z1,Bad code,region,
A81002,Self,service-provider,A81002
",
        );
        assert_eq!(
            found,
            vec![
                "line 3: ods_code: Y56 already appears on line 2",
                "line 4: ods_code: is required",
                "line 5: parent_ods: is required: a SERVICE_PROVIDER sits under a COMMISSIONING_ORGANISATION",
                "line 6: name: is required",
                "line 7: kind: unknown value `planet`; expected one of: region, commissioning-organisation, service-provider, service-desk",
                "line 8: parent_ods: must be empty: a REGION has no parent",
                "line 9: ods_code: must be 3 to 6 letters and digits, at least one a letter (e.g. Y56, 15N, A81001)",
                "line 10: parent_ods: cannot be the row's own ODS code",
            ]
        );
    }

    #[test]
    fn parents_must_come_first_and_be_the_right_kind() {
        let found = problems(
            "\
ods_code,name,kind,parent_ods
A81001,Surgery,service-provider,15N
15N,Board,commissioning-organisation,Y56
Y56,London,region,
A81002,Other,service-provider,Y56
",
        );
        assert_eq!(
            found,
            vec![
                "line 2: parent_ods: 15N is defined on line 3, after this row; parents must come first",
                "line 3: parent_ods: Y56 is defined on line 4, after this row; parents must come first",
                "line 5: parent_ods: Y56 (line 4) is a REGION; a SERVICE_PROVIDER sits under a COMMISSIONING_ORGANISATION",
            ]
        );
    }

    #[test]
    fn malformed_files() {
        let err = parse("ods_code,name,kind\nY56,London\n".as_bytes(), "t.csv").unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert!(err.to_string().contains("not a readable CSV"), "{err}");
        let err = parse("ods_code,name,kind\n".as_bytes(), "t.csv").unwrap_err();
        assert!(err.to_string().contains("no rows"), "{err}");
        let err = parse("".as_bytes(), "t.csv").unwrap_err();
        assert_eq!(err.exit_code(), 6);
    }

    #[test]
    fn request_ids_are_deterministic_per_ods_code() {
        assert_eq!(request_id_for("A81001"), request_id_for("A81001"));
        assert_ne!(request_id_for("A81001"), request_id_for("A81002"));
        assert_eq!(request_id_for("Y56").get_version_num(), 5);
        // Pinned: changing it would make re-runs of older imports send new request ids.
        assert_eq!(
            request_id_for("Y56").to_string(),
            "661d079c-eb49-5848-af10-ad1455f54977"
        );
    }
}
