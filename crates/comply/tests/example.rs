//! The smart-plug example: a realistic product file that passes.

use crate::common::{example_outputs, example_product, example_text, options};

#[test]
fn smart_plug_passes_check() {
    let p = example_product();
    assert_eq!(p.info.id, "kestrel-smartplug-p1");
    // Every 5.2 SHALL has a decision (step e).
    for r in comply::catalog::baseline_shalls() {
        assert!(p.soa_entry(r.clause).is_some(), "{}", r.clause);
    }
}

#[test]
fn smart_plug_builds_every_output() {
    let paths: Vec<&str> = example_outputs().iter().map(|o| o.path.as_str()).collect();
    for expected in [
        "report.html",
        "docs/risk-assessment.md",
        "docs/statement-of-applicability.md",
        "docs/risk-treatment-plan.md",
        "docs/security-features.md",
        "docs/support-policy.md",
        "docs/vulnerability-disclosure.md",
        "docs/heatmap-initial.svg",
        "docs/heatmap-residual.svg",
        ".well-known/security.txt",
        "oscal/catalog.json",
        "oscal/profile.json",
        "oscal/ssp.json",
        "oscal/poam.json",
        "sbom/bom.cdx.json",
        "sbom/bom.spdx.json",
    ] {
        assert!(paths.contains(&expected), "missing {expected}");
    }
    for o in example_outputs() {
        assert!(!o.bytes.is_empty(), "{} is empty", o.path);
    }
}

#[test]
fn two_builds_are_byte_identical() {
    // A second parse and build, from scratch, in this process; the first
    // comes from the shared build. Also written to disk and read back.
    let again = comply::build(
        &comply::ProductFile::parse(&example_text())
            .unwrap()
            .check()
            .unwrap(),
        &options(),
    )
    .unwrap();
    assert_eq!(again.len(), example_outputs().len());
    for (a, b) in example_outputs().iter().zip(&again) {
        assert_eq!(a.path, b.path);
        assert!(a.bytes == b.bytes, "{} differs between builds", a.path);
    }
    let dir = tempfile::tempdir().unwrap();
    comply::write_outputs(dir.path(), &again).unwrap();
    for o in &again {
        assert_eq!(std::fs::read(dir.path().join(&o.path)).unwrap(), o.bytes);
    }
}

#[test]
fn timestamps_come_from_the_version_date() {
    let dated = |path: &str| crate::common::output(path).contains("2026-03-02T00:00:00Z");
    for path in [
        "oscal/ssp.json",
        "oscal/poam.json",
        "sbom/bom.cdx.json",
        "sbom/bom.spdx.json",
    ] {
        assert!(dated(path), "{path} does not carry the version date");
    }
    // A later version date moves every timestamp with it.
    let text = example_text().replace("version_date = 2026-03-02", "version_date = 2026-03-09");
    let p = comply::ProductFile::parse(&text).unwrap().check().unwrap();
    let out = comply::build(&p, &options()).unwrap();
    let ssp = out.iter().find(|o| o.path == "oscal/ssp.json").unwrap();
    let ssp = std::str::from_utf8(&ssp.bytes).unwrap();
    assert!(ssp.contains("2026-03-09T00:00:00Z") && !ssp.contains("2026-03-02T"));
}
