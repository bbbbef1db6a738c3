//! OSCAL outputs against NIST's OSCAL 1.2.3 JSON schemas.

use serde_json::Value;

use crate::common::{output, repo_root};

fn schema(model: &str) -> Value {
    let path = repo_root().join(format!(
        "crates/comply/tests/data/oscal/oscal_{model}_schema.json"
    ));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_valid(model: &str, document: &str) {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema(model))
        .expect("NIST schema compiles");
    let instance: Value = serde_json::from_str(document).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{model} is not valid OSCAL:\n{}",
        errors.join("\n")
    );
}

#[test]
fn catalog_validates_against_the_nist_schema() {
    assert_valid("catalog", output("oscal/catalog.json"));
    assert_valid(
        "catalog",
        std::str::from_utf8(&comply::catalog_json()).unwrap(),
    );
}

#[test]
fn profile_validates_against_the_nist_schema() {
    assert_valid("profile", output("oscal/profile.json"));
}

#[test]
fn ssp_validates_against_the_nist_schema() {
    assert_valid("ssp", output("oscal/ssp.json"));
}

#[test]
fn poam_validates_against_the_nist_schema() {
    assert_valid("poam", output("oscal/poam.json"));
}

#[test]
fn the_validator_rejects_a_broken_document() {
    // The schema check must be able to fail: an SSP without its
    // control implementation is not OSCAL.
    let mut ssp: Value = serde_json::from_str(output("oscal/ssp.json")).unwrap();
    ssp["system-security-plan"]
        .as_object_mut()
        .unwrap()
        .remove("control-implementation");
    let validator = jsonschema::validator_for(&schema("ssp")).unwrap();
    assert!(!validator.is_valid(&ssp));
}

#[test]
fn ssp_statuses_follow_the_soa() {
    let ssp: Value = serde_json::from_str(output("oscal/ssp.json")).unwrap();
    let reqs = ssp["system-security-plan"]["control-implementation"]["implemented-requirements"]
        .as_array()
        .unwrap();
    let state = |clause: &str| {
        let r = reqs
            .iter()
            .find(|r| r["control-id"] == format!("iso27402-{clause}"))
            .unwrap_or_else(|| panic!("no implemented-requirement for {clause}"));
        r["by-components"][0]["implementation-status"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(state("5.2.6.1.4"), "implemented");
    assert_eq!(state("5.2.2.1.2"), "not-applicable");
    assert_eq!(state("5.2.4.2"), "partial");
    // Every SHALL of the standard is in the SSP.
    for r in comply::catalog::REQUIREMENTS
        .iter()
        .filter(|r| r.level == comply::catalog::Level::Shall)
    {
        state(r.clause);
    }
}

#[test]
fn poam_holds_every_risk_and_the_planned_milestones() {
    let poam: Value = serde_json::from_str(output("oscal/poam.json")).unwrap();
    let risks = poam["plan-of-action-and-milestones"]["risks"]
        .as_array()
        .unwrap();
    assert_eq!(risks.len(), 10);
    let r2 = risks
        .iter()
        .find(|r| r["title"].as_str().unwrap().starts_with("R2:"))
        .unwrap();
    assert_eq!(r2["status"], "remediating");
    assert_eq!(r2["deadline"], "2026-09-30T00:00:00Z");
    let r10 = risks
        .iter()
        .find(|r| r["title"].as_str().unwrap().starts_with("R10:"))
        .unwrap();
    assert_eq!(r10["status"], "deviation-approved");
}
