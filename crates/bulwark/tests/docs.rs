//! The repository keeps its promises: the code map names every crate and
//! only those, and the traceability table points at real code and tests.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::common::repo_root;

const SHALLS_5_2: &[&str] = &[
    "5.2.2.1.1",
    "5.2.2.1.2",
    "5.2.3.1.1",
    "5.2.3.1.2",
    "5.2.4.1.1",
    "5.2.4.1.2",
    "5.2.5.1.1",
    "5.2.5.1.2",
    "5.2.5.1.3",
    "5.2.5.1.4",
    "5.2.6.1.1",
    "5.2.6.1.2",
    "5.2.6.1.3",
    "5.2.6.1.4",
    "5.2.7.1.1",
    "5.2.7.1.2",
    "5.2.7.1.3",
];
const SHALLS_5_1: &[&str] = &[
    "5.1.1.1.1",
    "5.1.1.1.2",
    "5.1.1.1.3",
    "5.1.1.1.4",
    "5.1.1.1.5",
    "5.1.1.1.6",
    "5.1.1.1.7",
    "5.1.2.1.1",
    "5.1.2.1.2",
    "5.1.2.1.3",
    "5.1.3.1.1",
    "5.1.3.1.2",
];

#[test]
fn code_map_matches_crates() {
    let root = repo_root();
    let text = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let map = text
        .split("## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a Code map section");
    let map = map.split("\n## ").next().unwrap_or(map);
    let documented: BTreeSet<String> = map
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|s| s.trim().to_owned())
        .collect();
    let crates: BTreeSet<String> = fs::read_dir(root.join("crates"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        documented, crates,
        "ARCHITECTURE.md's code map and crates/ disagree"
    );
}

struct Row {
    clause: String,
    status: String,
    code: Vec<String>,
    tests: Vec<String>,
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| l.starts_with("| 5."))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            // SHALL tables: clause | requirement | status | code | test;
            // the SHOULD table: clause | what | code | test.
            let (status, code, tests) = if cells.len() == 5 {
                (cells[2], cells[3], cells[4])
            } else {
                ("implemented", cells[2], cells[3])
            };
            Row {
                clause: cells[0].to_owned(),
                status: status.to_owned(),
                code: backticked(code),
                tests: backticked(tests),
            }
        })
        .collect()
}

/// Whether `file::module::function` names a test function that exists.
fn test_exists(root: &Path, reference: &str) -> Result<(), String> {
    let mut parts = reference.split("::");
    let file = parts.next().unwrap_or_default();
    let path_parts: Vec<&str> = parts.collect();
    let Some((function, modules)) = path_parts.split_last() else {
        return Err(format!("{reference}: expected file::module::function"));
    };
    let path = root.join(file);
    let main = fs::read_to_string(&path).map_err(|e| format!("{reference}: {e}"))?;
    let mut sources = vec![main];
    // Each module is in the sources read so far, inline or as a file
    // beside its parent or in the parent's folder (`tests/api.rs` with
    // `mod config;` in `tests/api/config.rs`, nested likewise).
    let mut parent = path.clone();
    for (depth, module) in modules.iter().enumerate() {
        let declared = sources.iter().any(|s| {
            s.contains(&format!("mod {module} {{")) || s.contains(&format!("mod {module};"))
        });
        if !declared {
            return Err(if depth == 0 {
                format!("{reference}: no module {module} in {file}")
            } else {
                format!("{reference}: no module {module}")
            });
        }
        let beside = parent.with_file_name(format!("{module}.rs"));
        let below = parent.with_extension("").join(format!("{module}.rs"));
        // A test crate's root has its modules beside it; any other module
        // file has them in its own folder (Rust's rule), but `#[path]`
        // may put a root's modules in the folder too.
        let candidates = if depth == 0 {
            [beside, below]
        } else {
            [below, beside]
        };
        for candidate in candidates {
            if let Ok(module_file) = fs::read_to_string(&candidate) {
                sources.push(module_file);
                parent = candidate;
                break;
            }
        }
    }
    let needle = format!("fn {function}(");
    let found = sources.iter().any(|s| {
        s.match_indices(&needle).any(|(at, _)| {
            // The function must be a test: #[test] within the lines above.
            let before = &s[..at];
            before
                .rsplit('\n')
                .take(4)
                .any(|l| l.trim() == "#[test]" || l.trim().starts_with("#[tokio::test"))
        })
    });
    if found {
        Ok(())
    } else {
        Err(format!("{reference}: no #[test] fn {function}"))
    }
}

#[test]
fn traceability_names_real_code_and_tests() {
    let root = repo_root();
    let text = fs::read_to_string(root.join("docs/traceability.md")).unwrap();
    let rows = rows(&text);
    let mut problems = Vec::new();
    for clause in SHALLS_5_2.iter().chain(SHALLS_5_1) {
        let n = rows.iter().filter(|r| r.clause == *clause).count();
        if n != 1 {
            problems.push(format!("{clause}: {n} rows, expected exactly one"));
        }
    }
    for row in &rows {
        let status = row.status.as_str();
        if status.starts_with("planned") {
            if !status.contains("(#") {
                problems.push(format!("{}: planned without an issue number", row.clause));
            }
        } else if status.starts_with("implemented") || status.starts_with("partial") {
            if row.tests.is_empty() {
                problems.push(format!("{}: {status} but no test", row.clause));
            }
        } else {
            problems.push(format!("{}: unknown status {status:?}", row.clause));
        }
        for path in &row.code {
            if !root.join(path).exists() {
                problems.push(format!("{}: code path {path} does not exist", row.clause));
            }
        }
        for test in &row.tests {
            if let Err(e) = test_exists(&root, test) {
                problems.push(format!("{}: {e}", row.clause));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/traceability.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn traceability_checker_rejects_a_missing_test() {
    let root = repo_root();
    assert!(
        test_exists(
            &root,
            "crates/bulwark/tests/tests.rs::cli::two_units_share_nothing"
        )
        .is_ok()
    );
    assert!(test_exists(&root, "crates/bulwark/tests/tests.rs::cli::no_such_test").is_err());
    assert!(
        test_exists(
            &root,
            "crates/bulwark/tests/tests.rs::nomodule::two_units_share_nothing"
        )
        .is_err()
    );
    // A helper that is not a #[test] does not count.
    assert!(test_exists(&root, "crates/bulwark/tests/tests.rs::docs::backticked").is_err());
}

#[test]
fn security_model_doc_matches_the_permission_matrix() {
    use access::{Permission, Role, role_allows};
    let text = fs::read_to_string(repo_root().join("docs/security-model.md")).unwrap();
    let roles = [Role::Owner, Role::Operator, Role::Viewer, Role::Service];
    let mut seen = 0;
    for permission in Permission::ALL {
        let name = serde_json::to_value(permission).unwrap();
        let name = name.as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {name} ")))
            .unwrap_or_else(|| panic!("docs/security-model.md has no row for {name}"));
        let cells: Vec<&str> = row
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .skip(1)
            .collect();
        for (role, cell) in roles.iter().zip(&cells) {
            let documented = cell.starts_with("yes");
            let granted_only = cell.starts_with("if granted");
            let actual = role_allows(*role, permission);
            assert!(
                documented == actual || (granted_only && !actual && *role == Role::Service),
                "{name} for {role:?}: doc says {cell:?}, code says {actual}"
            );
            assert_eq!(
                cell.contains("re-entered"),
                actual && permission.is_destructive() && *role != Role::Service,
                "{name} for {role:?}: re-authentication note"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, Permission::ALL.len());
}
