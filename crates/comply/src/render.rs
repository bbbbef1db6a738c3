//! Documents for people: Markdown from minijinja templates, the same
//! Markdown as one self-contained HTML report, likelihood × severity heat
//! maps as SVG, and `security.txt` (RFC 9116).

use std::fmt::Write as _;

use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;

use crate::Error;
use crate::catalog::{self, Level, REQUIREMENTS};
use crate::check::{Product, Scales, SoaStatus, Treatment, fmt_date};

/// The documents, in report order: (file stem, title, template).
pub(crate) const DOCUMENTS: &[(&str, &str, &str)] = &[
    (
        "risk-assessment",
        "Risk assessment",
        include_str!("../templates/risk-assessment.md"),
    ),
    (
        "statement-of-applicability",
        "Statement of Applicability",
        include_str!("../templates/statement-of-applicability.md"),
    ),
    (
        "risk-treatment-plan",
        "Risk treatment plan",
        include_str!("../templates/risk-treatment-plan.md"),
    ),
    (
        "security-features",
        "Security and privacy features",
        include_str!("../templates/security-features.md"),
    ),
    (
        "support-policy",
        "Security support policy",
        include_str!("../templates/support-policy.md"),
    ),
    (
        "vulnerability-disclosure",
        "Vulnerability disclosure policy",
        include_str!("../templates/vulnerability-disclosure.md"),
    ),
];

const REPORT_HTML: &str = include_str!("../templates/report.html");

#[derive(Serialize)]
struct RiskView {
    id: String,
    title: String,
    source: String,
    description: String,
    assets: Vec<String>,
    likelihood: String,
    severity: String,
    score: u32,
    acceptable: bool,
    evaluation: String,
    priority: Option<i64>,
    treatment: String,
    treatment_rationale: String,
    controls: Vec<String>,
    residual_likelihood: String,
    residual_severity: String,
    residual_score: u32,
    residual_acceptable: bool,
}

#[derive(Serialize)]
struct SoaView {
    clause: &'static str,
    level: &'static str,
    topic: &'static str,
    text: &'static str,
    status: &'static str,
    justification: String,
    features: Vec<String>,
    risks: Vec<String>,
    crosswalk: String,
    bulwark: String,
}

#[derive(Serialize)]
struct PlanView {
    id: String,
    title: String,
    description: String,
    status: String,
    owner: String,
    due: String,
    features: Vec<String>,
    risks: Vec<String>,
}

#[derive(Serialize)]
struct FeatureView {
    name: String,
    description: String,
    user_guidance: String,
    privacy: bool,
    clauses: Vec<String>,
}

#[derive(Serialize)]
struct GapView {
    clause: &'static str,
    level: &'static str,
    text: &'static str,
    status: &'static str,
    justification: String,
}

#[derive(Serialize)]
struct EtsiView {
    provision: &'static str,
    relationship: &'static str,
    clause: &'static str,
    status: &'static str,
}

#[derive(Serialize)]
struct Context<'a> {
    p: &'a Product,
    date: String,
    tool_version: &'static str,
    risks: Vec<RiskView>,
    soa: Vec<SoaView>,
    plan: Vec<PlanView>,
    features: Vec<FeatureView>,
    not_included: Vec<GapView>,
    etsi: Vec<EtsiView>,
    security_updates_until: String,
    security_txt_expires: String,
    plan_communicated: String,
    approved: String,
    html: bool,
    heatmap_initial: String,
    heatmap_residual: String,
}

fn level_name(scale: &[String], i: u32) -> String {
    usize::try_from(i)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| scale.get(i))
        .cloned()
        .unwrap_or_default()
}

fn context(p: &Product, html: bool) -> Context<'_> {
    let s = &p.scales;
    let risks = p
        .risks
        .iter()
        .map(|r| RiskView {
            id: r.id.clone(),
            title: r.title.clone(),
            source: r.source.clone(),
            description: r.description.clone(),
            assets: r
                .assets
                .iter()
                .map(|a| {
                    p.assets
                        .iter()
                        .find(|x| &x.id == a)
                        .map_or(a.clone(), |x| x.name.clone())
                })
                .collect(),
            likelihood: level_name(&s.likelihood, r.likelihood),
            severity: level_name(&s.severity, r.severity),
            score: r.likelihood * r.severity,
            acceptable: s.acceptable(r.likelihood, r.severity),
            evaluation: r.evaluation.clone(),
            priority: r.priority,
            treatment: r
                .treatment
                .map_or("none (within the acceptance criteria)", Treatment::as_str)
                .to_owned(),
            treatment_rationale: r.treatment_rationale.clone(),
            controls: r
                .controls
                .iter()
                .map(|c| {
                    p.controls
                        .iter()
                        .find(|x| &x.id == c)
                        .map_or(c.clone(), |x| format!("{} {}", x.id, x.title))
                })
                .collect(),
            residual_likelihood: level_name(&s.likelihood, r.residual_likelihood),
            residual_severity: level_name(&s.severity, r.residual_severity),
            residual_score: r.residual_likelihood * r.residual_severity,
            residual_acceptable: s.acceptable(r.residual_likelihood, r.residual_severity),
        })
        .collect();
    let coverage = catalog::bulwark_coverage();
    let soa = REQUIREMENTS
        .iter()
        .filter(|r| r.is_baseline() && r.level != Level::Informative)
        .map(|r| {
            let e = p.soa_entry(r.clause);
            SoaView {
                clause: r.clause,
                level: r.level.as_str(),
                topic: r.topic,
                text: r.text,
                status: e.map_or("not stated", |e| e.status.as_str()),
                justification: e.map(|e| e.justification.clone()).unwrap_or_default(),
                features: e
                    .map(|e| {
                        e.features
                            .iter()
                            .filter_map(|f| p.feature(f).map(|f| f.name.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                risks: e.map(|e| e.risks.clone()).unwrap_or_default(),
                crosswalk: r
                    .crosswalk
                    .iter()
                    .map(|x| {
                        let doc = if x.document == "etsi-en-303-645" {
                            "EN 303 645"
                        } else {
                            "IR 8259A"
                        };
                        format!("{doc} {} ({})", x.provision, x.relationship.as_str())
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                bulwark: coverage
                    .iter()
                    .find(|c| c.clause == r.clause)
                    .map(|c| c.status.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let plan = p
        .controls
        .iter()
        .map(|c| PlanView {
            id: c.id.clone(),
            title: c.title.clone(),
            description: c.description.clone(),
            status: c.status.clone(),
            owner: c.owner.clone(),
            due: c.due.map(fmt_date).unwrap_or_default(),
            features: c
                .features
                .iter()
                .filter_map(|f| p.feature(f).map(|f| f.name.clone()))
                .collect(),
            risks: p
                .risks
                .iter()
                .filter(|r| r.controls.contains(&c.id))
                .map(|r| r.id.clone())
                .collect(),
        })
        .collect();
    let features = p
        .features
        .iter()
        .map(|f| FeatureView {
            name: f.name.clone(),
            description: f.description.clone(),
            user_guidance: f.user_guidance.clone(),
            privacy: f.privacy,
            clauses: p
                .soa
                .iter()
                .filter(|e| e.status != SoaStatus::Excluded && e.features.contains(&f.id))
                .map(|e| e.requirement.clause.to_owned())
                .collect(),
        })
        .collect();
    let not_included = p
        .not_included()
        .into_iter()
        .map(|(r, e)| GapView {
            clause: r.clause,
            level: r.level.as_str(),
            text: r.text,
            status: e.map_or("not stated", |e| e.status.as_str()),
            justification: e.map(|e| e.justification.clone()).unwrap_or_default(),
        })
        .collect();
    let mut etsi = Vec::new();
    for e in &p.soa {
        for x in e
            .requirement
            .crosswalk
            .iter()
            .filter(|x| x.document == "etsi-en-303-645")
        {
            etsi.push(EtsiView {
                provision: x.provision,
                relationship: x.relationship.as_str(),
                clause: e.requirement.clause,
                status: e.status.as_str(),
            });
        }
    }
    etsi.sort_by_key(|v| {
        let mut parts = v
            .provision
            .split(['.', '-'])
            .map(|n| n.parse::<u32>().unwrap_or(0));
        (parts.next(), parts.next(), parts.next(), v.clause)
    });
    Context {
        p,
        date: fmt_date(p.info.version_date),
        tool_version: env!("CARGO_PKG_VERSION"),
        risks,
        soa,
        plan,
        features,
        not_included,
        etsi,
        security_updates_until: fmt_date(p.support.security_updates_until),
        security_txt_expires: fmt_date(p.vdp.security_txt_expires),
        plan_communicated: fmt_date(p.risk_owner.plan_communicated),
        approved: fmt_date(p.risk_owner.approved),
        html,
        heatmap_initial: heatmap(p, false),
        heatmap_residual: heatmap(p, true),
    }
}

/// Escapes maker text for a Markdown line or table cell: Markdown
/// punctuation and HTML are made literal, newlines become spaces.
pub(crate) fn md_escape(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(flat.len());
    for (i, c) in flat.chars().enumerate() {
        // Block markers only matter at the start; `>` cannot close a tag
        // because `<` is always escaped.
        let leading_marker = i == 0 && matches!(c, '-' | '+' | '=' | '>' | '#');
        if leading_marker || matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '|' | '&') {
            out.push('\\');
        }
        out.push(c);
    }
    // "1. text" at the start would become an ordered list.
    if let Some(pos) = out.find(['.', ')'])
        && pos > 0
        && out[..pos].chars().all(|c| c.is_ascii_digit())
        && out[pos + 1..].chars().next().is_none_or(|c| c == ' ')
    {
        out.insert(pos, '\\');
    }
    out
}

fn environment() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.add_filter("md", |v: Value| -> String {
        match v.as_str() {
            Some(s) => md_escape(s),
            None => md_escape(&v.to_string()),
        }
    });
    for (stem, _, source) in DOCUMENTS {
        env.add_template(stem, source).map_err(|e| Error::Render {
            document: (*stem).to_owned(),
            message: format!("{e:#}"),
        })?;
    }
    env.add_template("report.html", REPORT_HTML)
        .map_err(|e| Error::Render {
            document: "report.html".into(),
            message: format!("{e:#}"),
        })?;
    Ok(env)
}

/// Renders every document as Markdown: (file name, text).
pub(crate) fn markdown(p: &Product) -> Result<Vec<(String, String)>, Error> {
    render_all(p, false)
}

fn render_all(p: &Product, html: bool) -> Result<Vec<(String, String)>, Error> {
    let env = environment()?;
    let ctx = Value::from(Serde(context(p, html)));
    DOCUMENTS
        .iter()
        .map(|(stem, _, _)| {
            let text = env
                .get_template(stem)
                .and_then(|t| t.render(ctx.clone()))
                .map_err(|e| Error::Render {
                    document: (*stem).to_owned(),
                    message: format!("{e:#}"),
                })?;
            Ok((format!("{stem}.md"), tidy(&text)))
        })
        .collect()
}

/// Collapses runs of blank lines the templates' control blocks leave and
/// ends the file with one newline.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    let trimmed = out.trim_matches('\n');
    format!("{trimmed}\n")
}

/// The self-contained HTML report: every document, heat maps inline.
pub(crate) fn html_report(p: &Product) -> Result<String, Error> {
    use pulldown_cmark::{Options, Parser, html};
    let env = environment()?;
    let mut sections = Vec::new();
    for ((stem, title, _), (_, md)) in DOCUMENTS.iter().zip(render_all(p, true)?) {
        let mut body = String::new();
        html::push_html(&mut body, Parser::new_ext(&md, Options::ENABLE_TABLES));
        sections.push(minijinja::context! {
            id => *stem,
            title => *title,
            body => Value::from_safe_string(body),
        });
    }
    let ctx = minijinja::context! {
        p => Value::from(Serde(p)),
        date => fmt_date(p.info.version_date),
        tool_version => env!("CARGO_PKG_VERSION"),
        sections => sections,
    };
    env.get_template("report.html")
        .and_then(|t| t.render(ctx))
        .map(|s| tidy(&s))
        .map_err(|e| Error::Render {
            document: "report.html".into(),
            message: format!("{e:#}"),
        })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Colour of a cell: within the criteria, up to twice, beyond.
fn cell_colour(scales: &Scales, l: u32, s: u32) -> &'static str {
    let score = l * s;
    if score <= scales.accept_max_score {
        "#9fd89f"
    } else if score <= scales.accept_max_score.saturating_mul(2) {
        "#f6c86e"
    } else {
        "#e8735f"
    }
}

/// A likelihood × severity heat map: likelihood rising upwards, severity
/// rising rightwards, each cell holding the ids of the risks in it. No
/// blank line inside, so it can sit in a Markdown HTML block.
pub(crate) fn heatmap(p: &Product, residual: bool) -> String {
    const CELL_W: u32 = 110;
    const CELL_H: u32 = 64;
    const LEFT: u32 = 130;
    const TOP: u32 = 44;
    let s = &p.scales;
    let rows = u32::try_from(s.likelihood.len()).unwrap_or(0);
    let cols = u32::try_from(s.severity.len()).unwrap_or(0);
    let width = LEFT + cols * CELL_W + 20;
    let height = TOP + rows * CELL_H + 70;
    let title = if residual {
        "Residual risk"
    } else {
        "Initial risk"
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-labelledby="hm-{kind}-title" font-family="sans-serif" font-size="12">"#,
        kind = if residual { "residual" } else { "initial" }
    );
    let _ = writeln!(
        svg,
        r#"<title id="hm-{kind}-title">{title}: likelihood × severity ({name})</title>"#,
        kind = if residual { "residual" } else { "initial" },
        name = xml_escape(&p.info.name)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{x}" y="24" font-size="15" font-weight="bold" text-anchor="middle">{title}</text>"#,
        x = LEFT + cols * CELL_W / 2
    );
    for row in 0..rows {
        let l = rows - row; // top row = highest likelihood
        let y = TOP + row * CELL_H;
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{ty}" text-anchor="end" class="likelihood-label">{label}</text>"#,
            x = LEFT - 8,
            ty = y + CELL_H / 2 + 4,
            label = xml_escape(&level_name(&s.likelihood, l))
        );
        for col in 0..cols {
            let sev = col + 1;
            let x = LEFT + col * CELL_W;
            let ids: Vec<&str> = p
                .risks
                .iter()
                .filter(|r| {
                    if residual {
                        r.residual_likelihood == l && r.residual_severity == sev
                    } else {
                        r.likelihood == l && r.severity == sev
                    }
                })
                .map(|r| r.id.as_str())
                .collect();
            let _ = writeln!(
                svg,
                r##"<rect class="cell" data-likelihood="{l}" data-severity="{sev}" data-risks="{n}" x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="{fill}" stroke="#ffffff" stroke-width="2"/>"##,
                n = ids.len(),
                fill = cell_colour(s, l, sev)
            );
            for (i, chunk) in ids.chunks(3).take(3).enumerate() {
                let line = u32::try_from(i).unwrap_or(0);
                let mut text = chunk.join(", ");
                if i == 2 && ids.len() > 9 {
                    text.push_str(", …");
                }
                let _ = writeln!(
                    svg,
                    r#"<text class="risk-ids" x="{tx}" y="{ty}" text-anchor="middle">{t}</text>"#,
                    tx = x + CELL_W / 2,
                    ty = y + 22 + line * 16,
                    t = xml_escape(&text)
                );
            }
        }
    }
    for col in 0..cols {
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="middle" class="severity-label">{label}</text>"#,
            x = LEFT + col * CELL_W + CELL_W / 2,
            y = TOP + rows * CELL_H + 18,
            label = xml_escape(&level_name(&s.severity, col + 1))
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{x}" y="{y}" text-anchor="middle" font-weight="bold">Severity →</text>"#,
        x = LEFT + cols * CELL_W / 2,
        y = TOP + rows * CELL_H + 42
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{y}" text-anchor="middle" font-weight="bold" transform="rotate(-90 16 {y})">Likelihood →</text>"#,
        y = TOP + rows * CELL_H / 2
    );
    svg.push_str("</svg>\n");
    svg
}

/// `/.well-known/security.txt` per RFC 9116.
pub(crate) fn security_txt(p: &Product) -> String {
    let v = &p.vdp;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Security contact for {} (model {}), {}.",
        p.info.name, p.info.model, p.info.maker
    );
    let _ = writeln!(
        out,
        "# Generated by bulwark comply from product file version {}.",
        p.info.version
    );
    for c in &v.contact {
        let _ = writeln!(out, "Contact: {c}");
    }
    let _ = writeln!(
        out,
        "Expires: {}T00:00:00Z",
        fmt_date(v.security_txt_expires)
    );
    if !v.encryption.is_empty() {
        let _ = writeln!(out, "Encryption: {}", v.encryption);
    }
    if !v.preferred_languages.is_empty() {
        let _ = writeln!(
            out,
            "Preferred-Languages: {}",
            v.preferred_languages.join(", ")
        );
    }
    let _ = writeln!(out, "Canonical: {}", v.canonical_url);
    let _ = writeln!(out, "Policy: {}", v.policy_url);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escape_neutralises_markup() {
        assert_eq!(md_escape("a|b"), "a\\|b");
        assert_eq!(md_escape("<script>"), "\\<script>");
        assert_eq!(md_escape("> quote"), "\\> quote");
        assert_eq!(md_escape("Settings > Updates"), "Settings > Updates");
        assert_eq!(md_escape("line\nbreak"), "line break");
        assert_eq!(md_escape("- item"), "\\- item");
        assert_eq!(md_escape("12. point"), "12\\. point");
        assert_eq!(md_escape("v1.2 ok"), "v1.2 ok");
        assert_eq!(md_escape("1.3.0"), "1.3.0");
        assert_eq!(md_escape("7."), "7\\.");
    }

    #[test]
    fn markdown_escape_survives_html_rendering() {
        use pulldown_cmark::{Parser, html};
        let mut out = String::new();
        html::push_html(
            &mut out,
            Parser::new(&md_escape("<img src=x onerror=alert(1)> **x** [a](b)")),
        );
        assert!(!out.contains("<img"), "{out}");
        assert!(!out.contains("<strong>"), "{out}");
        assert!(!out.contains("<a "), "{out}");
    }
}
