//! The 5.1.1.1.5 process, checked: injected gaps, each reported once at
//! its position; hostile input never panics.

use std::collections::BTreeSet;

use comply::{Error, GapKind, ProductFile};

use crate::common::example_text;

/// Replaces exactly one occurrence of `from`.
fn inject(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "ambiguous injection {from:?}"
    );
    text.replacen(from, to, 1)
}

/// 1-based line of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"));
    text[..at].matches('\n').count() + 1
}

/// Each injection: (kind expected, edit from, edit to, where the gap must
/// point: a unique text in the edited file).
const INJECTIONS: &[(GapKind, &str, &str, &str)] = &[
    (
        GapKind::Invalid,
        "capability_class = 1\n",
        "capability_class = 4\n",
        "capability_class = 4",
    ),
    (
        GapKind::Missing,
        "considerations = \"The standby budget",
        "# considerations = \"The standby budget",
        "[constraints]",
    ),
    (
        GapKind::UntreatedRisk,
        "evaluation = \"treat\"\npriority = 3\ntreatment = \"remove-source\"\ntreatment_rationale = \"Factory reset",
        "evaluation = \"treat\"\npriority = 3\ntreatment_rationale = \"Factory reset",
        "id = \"R6\"",
    ),
    (
        GapKind::UnknownReference,
        "controls = [\"C-MTLS\", \"C-API-AUTH\"]",
        "controls = [\"C-MTLS\", \"C-APIAUTH\"]",
        "\"C-APIAUTH\"",
    ),
    (
        GapKind::UnanalysedRisk,
        "likelihood = \"possible\"\nseverity = \"minor\"\nevaluation = \"treat\"\npriority = 3\ntreatment = \"remove-source\"\ntreatment_rationale = \"Energy",
        "likelihood = \"possible\"\nevaluation = \"treat\"\npriority = 3\ntreatment = \"remove-source\"\ntreatment_rationale = \"Energy",
        "id = \"R9\"",
    ),
    (
        GapKind::UnevaluatedRisk,
        "evaluation = \"accept\"\n",
        "",
        "id = \"R10\"",
    ),
    (
        GapKind::UnplannedControl,
        "owner = \"Firmware team\"\ndue = 2026-05-31\n\n[[control]]\nid = \"C-SURFACE\"",
        "owner = \"Firmware team\"\n\n[[control]]\nid = \"C-SURFACE\"",
        "id = \"C-RESET\"",
    ),
    (
        GapKind::ControlWithoutFeature,
        "features = [\"F-LOCAL-FIRST\"]\nstatus = \"implemented\"",
        "features = []\nstatus = \"implemented\"",
        "id = \"C-LOCAL-FIRST\"",
    ),
    (
        GapKind::UnjustifiedExclusion,
        "justification = \"The plug has no hub or gateway role and cannot change the configuration of any other device.\"\n",
        "",
        "requirement = \"5.2.2.1.2\"",
    ),
    (
        GapKind::BaselineNotAddressed,
        "[[soa]]\nrequirement = \"5.2.3.1.1\"\nstatus = \"included\"\nfeatures = [\"F-RESET\"]\nrisks = [\"R6\"]\njustification = \"Reset re-applies secure defaults (no weak cipher suites, no open interfaces) and crypto-erases user data.\"\n\n",
        "",
        // Reported where the SoA ends (the last entry).
        "requirement = \"5.2.7.2\"",
    ),
    (
        GapKind::UnsupportedInclusion,
        "status = \"included\"\nfeatures = [\"F-IDENTITY\"]\nrisks = [\"R9\"]",
        "status = \"included\"\nrisks = [\"R9\"]",
        "requirement = \"5.2.6.1.3\"",
    ),
    (
        GapKind::ResidualNotAccepted,
        "\"R6\", \"R7\", \"R8\"",
        "\"R6\", \"R8\"",
        "id = \"R7\"",
    ),
    (
        GapKind::Duplicate,
        "[[asset]]\nid = \"A-LAN\"",
        "[[asset]]\nid = \"A-LAN\"\nname = \"Home network\"\n\n[[asset]]\n# the duplicate\nid = \"A-LAN\"",
        "# the duplicate",
    ),
];

#[test]
fn every_kind_of_injected_gap_is_reported_once_at_its_position() {
    let mut text = example_text();
    for (_, from, to, _) in INJECTIONS {
        text = inject(&text, from, to);
    }
    let gaps = ProductFile::parse(&text).unwrap().check().unwrap_err();
    let listing: Vec<String> = gaps.iter().map(ToString::to_string).collect();
    let listing = listing.join("\n");
    assert_eq!(
        gaps.len(),
        INJECTIONS.len(),
        "one gap per injection, got:\n{listing}"
    );
    let kinds: BTreeSet<GapKind> = gaps.iter().map(|g| g.kind).collect();
    let expected: BTreeSet<GapKind> = INJECTIONS.iter().map(|i| i.0).collect();
    assert_eq!(kinds, expected, "{listing}");
    for (kind, _, _, at) in INJECTIONS {
        let line = line_of(&text, at);
        let gap = gaps.iter().find(|g| g.kind == *kind).unwrap();
        // A gap points at the marker's line or next to it (a table's gaps
        // point at its first key, the marker may be its header or a
        // comment above the key).
        assert!(
            gap.line.abs_diff(line) <= 1,
            "{kind:?} reported at line {}, expected {line}:\n{listing}",
            gap.line
        );
        assert!(gap.clause.starts_with("5.1."), "{gap}");
    }
}

#[test]
fn each_injection_alone_gives_exactly_its_gap() {
    for (kind, from, to, _) in INJECTIONS {
        let text = inject(&example_text(), from, to);
        let gaps = ProductFile::parse(&text).unwrap().check().unwrap_err();
        let listing: Vec<String> = gaps.iter().map(ToString::to_string).collect();
        assert_eq!(gaps.len(), 1, "{kind:?}:\n{}", listing.join("\n"));
        assert_eq!(gaps[0].kind, *kind, "{}", listing.join("\n"));
    }
}

#[test]
fn a_risk_accepted_above_the_criteria_is_an_evaluation_gap() {
    // R6 scores likely x minor = 8 > 4.
    let text = inject(
        &example_text(),
        "likelihood = \"likely\"\nseverity = \"minor\"\nevaluation = \"treat\"",
        "likelihood = \"likely\"\nseverity = \"minor\"\nevaluation = \"accept\"",
    );
    let gaps = ProductFile::parse(&text).unwrap().check().unwrap_err();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].kind, GapKind::UnevaluatedRisk);
    assert!(gaps[0].message.contains("R6"), "{}", gaps[0]);
}

#[test]
fn the_init_template_reports_what_to_fill_in() {
    let gaps = ProductFile::parse(comply::PRODUCT_TEMPLATE)
        .expect("the template is valid TOML")
        .check()
        .unwrap_err();
    // Many gaps, all positioned inside the file, starting with [product].
    assert!(gaps.len() > 20, "{}", gaps.len());
    let lines = comply::PRODUCT_TEMPLATE.lines().count();
    assert!(gaps.iter().all(|g| g.line >= 1 && g.line <= lines));
    assert!(gaps.iter().any(|g| g.kind == GapKind::BaselineNotAddressed));
    assert!(gaps.iter().any(|g| g.message.contains("`name` is empty")));
}

#[test]
fn syntax_errors_name_their_line() {
    let text = inject(&example_text(), "kind = \"device\"\n", "kind = device\n");
    match ProductFile::parse(&text) {
        Err(Error::Syntax { line, .. }) => assert_eq!(line, line_of(&text, "kind = device")),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn truncated_and_mangled_files_never_panic() {
    let text = example_text();
    let bytes = text.as_bytes();
    // Every prefix on a 97-byte stride, and byte flips on a 131 stride.
    for end in (0..bytes.len()).step_by(97) {
        if let Ok(prefix) = std::str::from_utf8(&bytes[..end])
            && let Ok(file) = ProductFile::parse(prefix)
        {
            let _ = file.check();
        }
    }
    for at in (0..bytes.len()).step_by(131) {
        for flip in [b'"', b'[', b'=', b'\n', b'#', 0xff] {
            let mut mangled = bytes.to_vec();
            mangled[at] = flip;
            if let Ok(s) = std::str::from_utf8(&mangled)
                && let Ok(file) = ProductFile::parse(s)
            {
                let _ = file.check();
            }
        }
    }
    // Out-of-range numbers and dates are gaps, not panics.
    for (from, to) in [
        ("memory_mib = 128", "memory_mib = -9223372036854775808"),
        (
            "accept_max_score = 4",
            "accept_max_score = 9223372036854775807",
        ),
        ("acknowledge_days = 3", "acknowledge_days = -1"),
        (
            "version_date = 2026-03-02",
            "version_date = 2026-03-02T10:00:00Z",
        ),
        ("capability_class = 1", "capability_class = -1"),
        ("priority = 4", "priority = 9223372036854775807"),
    ] {
        let t = inject(&text, from, to);
        let _ = ProductFile::parse(&t).map(|f| f.check());
    }
}
