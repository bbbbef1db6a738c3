use assess::{AssessedTarget, Finding, Report, Verdict};

/// The Markdown of `report` has exactly one table row per finding, under
/// the heading of its clause, and the JSON reads back equal.
pub fn assert_renders(report: &Report) {
    let markdown = report.to_markdown();
    let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), report.findings.len(), "{markdown}");
    for finding in &report.findings {
        let row = format!("| `{}` |", finding.check);
        assert_eq!(
            rows.iter().filter(|r| r.starts_with(&row)).count(),
            1,
            "{row} in {markdown}"
        );
        assert!(
            markdown.contains(&format!("## {}", finding.clause)),
            "{markdown}"
        );
    }
    // Every table row has the four columns: no evidence broke out of its cell.
    for row in rows {
        let cells = row.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 5, "{row}");
    }
    let back: Report = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(&back, report);
}

fn finding(clause: &str, check: &str, verdict: Verdict, evidence: &[&str]) -> Finding {
    Finding {
        clause: clause.into(),
        related: vec![],
        check: check.into(),
        title: format!("title of {check}"),
        verdict,
        evidence: evidence.iter().map(|e| (*e).to_owned()).collect(),
    }
}

/// Device-supplied text with pipes, line breaks and HTML stays in its cell;
/// clauses get one table each, in the order they first appear; every
/// verdict survives the JSON round trip.
#[test]
fn markdown_has_one_row_per_finding_and_json_round_trips() {
    let report = Report {
        target: AssessedTarget {
            url: "https://127.0.0.1:8443".into(),
            device_id: Some("0b6c".into()),
            manufacturer_roots_sha256: vec!["ab".repeat(32)],
        },
        started: "2030-01-01T00:00:00Z".into(),
        finished: "2030-01-01T00:00:09Z".into(),
        tool_version: "0.1.0".into(),
        findings: vec![
            finding("5.2.6.1.4", "a", Verdict::Pass, &["x | y", "line\nbreak"]),
            finding(
                "5.2.6.2",
                "b",
                Verdict::Fail,
                &["<script>alert(1)</script>"],
            ),
            finding("5.2.6.1.4", "c", Verdict::NotApplicable, &[]),
            finding("5.1.2.1.2", "d", Verdict::Error, &["no answer"]),
        ],
    };
    assert_renders(&report);
    let markdown = report.to_markdown();
    assert!(!markdown.contains("<script>"), "{markdown}");
    assert_eq!(markdown.matches("## 5.2.6.1.4").count(), 1, "{markdown}");
    let order: Vec<usize> = ["## 5.2.6.1.4", "## 5.2.6.2", "## 5.1.2.1.2"]
        .iter()
        .map(|h| markdown.find(h).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{markdown}");
    assert!(markdown.contains("1 pass, 1 fail, 1 not applicable, 1 error"));
    let json = report.to_json();
    for verdict in ["\"pass\"", "\"fail\"", "\"not-applicable\"", "\"error\""] {
        assert!(json.contains(verdict), "{json}");
    }
}
