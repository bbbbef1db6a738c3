//! What an assessment found: findings with their clause, verdict and
//! evidence, as JSON (serde) or Markdown (a table per clause).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The device behaved as the clause asks.
    Pass,
    /// The device did not: the evidence says how.
    Fail,
    /// The device does not offer what the check looks at (e.g. it
    /// publishes no disclosure documents).
    NotApplicable,
    /// The check could not be carried out (a missing tool, no answer):
    /// nothing is known either way.
    Error,
}

impl Verdict {
    /// How the Markdown shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::NotApplicable => "n/a",
            Self::Error => "error",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The clause of ISO/IEC 27402 the check gives evidence for.
    pub clause: String,
    /// Further clauses the same evidence bears on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    /// Short stable identifier of the check, e.g. `default-credentials`.
    pub check: String,
    /// What the check looks at, in a sentence.
    pub title: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was sent and what came back, one line each; never a secret.
    pub evidence: Vec<String>,
}

impl Finding {
    pub(crate) fn new(
        clause: &str,
        related: &[&str],
        check: &str,
        title: &str,
        verdict: Verdict,
        evidence: Vec<String>,
    ) -> Self {
        Self {
            clause: clause.to_owned(),
            related: related.iter().map(|c| (*c).to_owned()).collect(),
            check: check.to_owned(),
            title: title.to_owned(),
            verdict,
            evidence,
        }
    }
}

/// The device that was assessed, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessedTarget {
    /// The URL assessed.
    pub url: String,
    /// The device identifier the certificate had to carry, if one was given.
    pub device_id: Option<String>,
    /// SHA-256 of each manufacturer root trusted for the device certificate.
    pub manufacturer_roots_sha256: Vec<String>,
}

/// An assessment: what was tested, when, by which version, and the findings
/// in the order the checks ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The device.
    pub target: AssessedTarget,
    /// Start (RFC 3339, UTC).
    pub started: String,
    /// End (RFC 3339, UTC).
    pub finished: String,
    /// `assess` crate version that produced the report.
    pub tool_version: String,
    /// One per check.
    pub findings: Vec<Finding>,
}

/// Our short paraphrase of each clause a check reports on (never the
/// standard's text; see docs/traceability.md).
fn clause_summary(clause: &str) -> &'static str {
    match clause {
        "5.1.2.1.2" => "Security documentation is public while the device is supported",
        "5.1.3.1.1" => "Vulnerability disclosure processes are documented and reachable",
        "5.2.2.1.1" => "Only authorized entities can change configuration",
        "5.2.5.1.1" => "Transmitted data is protected from access, change and disclosure",
        "5.2.6.1.1" => "Logical access to interfaces is limited to authorized entities",
        "5.2.6.1.4" => "No common values for critical SSPs such as standard passwords",
        "5.2.6.2" => "Input is validated; remote interfaces resist common attacks",
        _ => "",
    }
}

impl Report {
    /// Whether any check failed (the command exits 1 then).
    pub fn has_failures(&self) -> bool {
        self.findings.iter().any(|f| f.verdict == Verdict::Fail)
    }

    /// How many findings have `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings and lists always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Markdown: a heading and a table per clause (in the order the clauses
    /// first appear), one row per finding.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# ISO/IEC 27402 conformance assessment\n");
        let _ = writeln!(out, "- Target: `{}`", cell(&self.target.url));
        if let Some(id) = &self.target.device_id {
            let _ = writeln!(out, "- Device identifier: `urn:uuid:{}`", cell(id));
        }
        for root in &self.target.manufacturer_roots_sha256 {
            let _ = writeln!(out, "- Manufacturer root SHA-256: `{root}`");
        }
        let _ = writeln!(out, "- Started: {}", self.started);
        let _ = writeln!(out, "- Finished: {}", self.finished);
        let _ = writeln!(out, "- Tool: bulwark assess {}", self.tool_version);
        let _ = writeln!(
            out,
            "- Result: {} pass, {} fail, {} not applicable, {} error\n",
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::NotApplicable),
            self.count(Verdict::Error),
        );
        let mut clauses: Vec<&str> = Vec::new();
        for finding in &self.findings {
            if !clauses.contains(&finding.clause.as_str()) {
                clauses.push(&finding.clause);
            }
        }
        for clause in clauses {
            let summary = clause_summary(clause);
            if summary.is_empty() {
                let _ = writeln!(out, "## {}\n", cell(clause));
            } else {
                let _ = writeln!(out, "## {} — {summary}\n", cell(clause));
            }
            let _ = writeln!(out, "| Check | What | Verdict | Evidence |");
            let _ = writeln!(out, "|---|---|---|---|");
            for f in self.findings.iter().filter(|f| f.clause == clause) {
                let mut what = cell(&f.title);
                if !f.related.is_empty() {
                    let _ = write!(what, " (also {})", cell(&f.related.join(", ")));
                }
                let evidence: Vec<String> = f.evidence.iter().map(|e| cell(e)).collect();
                let _ = writeln!(
                    out,
                    "| `{}` | {what} | {} | {} |",
                    cell(&f.check),
                    f.verdict.label(),
                    evidence.join("<br>")
                );
            }
            out.push('\n');
        }
        out
    }
}

/// Text made safe for one Markdown table cell: no line breaks, no column
/// separators, no HTML from the device.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\''),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_text_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc<script>`"), "a\\|b c&lt;script&gt;'");
    }
}
