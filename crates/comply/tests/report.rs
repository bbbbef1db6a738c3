//! Documents for people: heat maps, HTML report, user documentation,
//! support policy, disclosure policy and security.txt.

use crate::common::output;

#[test]
fn heat_maps_are_well_formed_svg_with_every_risk_in_its_cell() {
    for (path, residual) in [
        ("docs/heatmap-initial.svg", false),
        ("docs/heatmap-residual.svg", true),
    ] {
        let svg = output(path);
        let doc = roxmltree::Document::parse(svg).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let cells: Vec<_> = root
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("cell"))
            .collect();
        assert_eq!(cells.len(), 25, "5 likelihood x 5 severity levels");
        let counted: usize = cells
            .iter()
            .map(|c| c.attribute("data-risks").unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(counted, 10, "every risk sits in one cell");
        // R2 is possible x severe initially, rare x severe residually.
        let (l, s) = if residual { ("1", "5") } else { ("3", "5") };
        let cell = cells
            .iter()
            .find(|c| {
                c.attribute("data-likelihood") == Some(l) && c.attribute("data-severity") == Some(s)
            })
            .unwrap();
        assert_ne!(cell.attribute("data-risks"), Some("0"));
        let ids: String = root
            .descendants()
            .filter(|n| n.attribute("class") == Some("risk-ids"))
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(ids.contains("R2"), "{ids}");
    }
}

#[test]
fn html_report_is_self_contained_with_both_heat_maps() {
    let html = output("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 2);
    for id in [
        "risk-assessment",
        "statement-of-applicability",
        "risk-treatment-plan",
        "security-features",
        "support-policy",
        "vulnerability-disclosure",
    ] {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    // Nothing is loaded from elsewhere.
    assert!(!html.contains("<script"));
    assert!(!html.contains("<link"));
    assert!(!html.contains("src=\"http"));
    // Markdown tables became HTML tables.
    assert!(html.contains("<table>"));
    assert!(!html.contains("|---|"));
}

#[test]
fn maker_text_cannot_inject_markup() {
    let text = crate::common::example_text().replace(
        "name = \"Kestrel SmartPlug P1\"",
        "name = \"Kestrel <script>alert(1)</script> | *P1*\"",
    );
    let p = comply::ProductFile::parse(&text).unwrap().check().unwrap();
    let out = comply::build(&p, &crate::common::options()).unwrap();
    let html = out.iter().find(|o| o.path == "report.html").unwrap();
    let html = std::str::from_utf8(&html.bytes).unwrap();
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<em>P1</em>"));
    assert!(html.contains("&lt;script&gt;"));
}

#[test]
fn user_documentation_lists_features_and_names_what_is_left_out() {
    let doc = output("docs/security-features.md");
    assert!(doc.contains("No default password: unique identity per plug"));
    assert!(doc.contains("Factory reset that erases your data (privacy)"));
    // 5.1.2.1.1: the 5.2 requirements not included, plainly.
    let left_out = doc.split("## What the product does not do").nth(1).unwrap();
    assert!(left_out.contains("5.2.2.1.2 (SHALL)"));
    assert!(left_out.contains("excluded"));
    assert!(left_out.contains("5.2.4.2 (SHOULD)"));
    assert!(!left_out.contains("| 5.2.6.1.4"));
}

#[test]
fn support_policy_states_the_end_of_security_updates() {
    let doc = output("docs/support-policy.md");
    assert!(doc.contains("until **2031-03-31**"));
    assert!(doc.contains("## Changes to this policy"));
}

#[test]
fn disclosure_policy_has_the_29147_and_30111_steps() {
    let doc = output("docs/vulnerability-disclosure.md");
    for step in [
        "Intake",
        "Acknowledgement",
        "Triage",
        "Remediation",
        "Coordinated publication",
    ] {
        assert!(doc.contains(step), "{step}");
    }
    assert!(doc.contains("within 3 days"));
    assert!(doc.contains("mailto:security@kestrel-home.example"));
}

#[test]
fn security_txt_follows_rfc_9116() {
    let txt = output(".well-known/security.txt");
    let fields: Vec<(&str, &str)> = txt
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split_once(": ").expect("Field: value"))
        .collect();
    let count = |f: &str| fields.iter().filter(|(k, _)| *k == f).count();
    assert!(count("Contact") >= 1, "Contact is mandatory");
    assert_eq!(count("Expires"), 1, "Expires is mandatory, once");
    assert!(count("Canonical") >= 1 && count("Policy") >= 1);
    assert!(count("Preferred-Languages") <= 1);
    let expires = fields.iter().find(|(k, _)| *k == "Expires").unwrap().1;
    // RFC 3339, less than a year after the version date (2026-03-02).
    assert_eq!(expires, "2027-03-01T00:00:00Z");
    for (_, v) in fields.iter().filter(|(k, _)| *k == "Contact") {
        assert!(v.starts_with("mailto:") || v.starts_with("https://"));
    }
}

#[test]
fn soa_lists_every_5_2_requirement_with_its_decision() {
    let soa = output("docs/statement-of-applicability.md");
    for r in comply::catalog::REQUIREMENTS
        .iter()
        .filter(|r| r.is_baseline() && r.level != comply::catalog::Level::Informative)
    {
        assert!(soa.contains(&format!("| {} |", r.clause)), "{}", r.clause);
    }
    assert!(soa.contains("**excluded**"));
    assert!(soa.contains("ETSI EN 303 645 provisions reached through this SoA"));
}
