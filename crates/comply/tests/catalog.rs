//! The requirement catalog as data and as OSCAL.

use comply::catalog::{self, Level, Relationship};
use serde_json::Value;

#[test]
fn every_shall_and_should_of_clause_5_is_in_the_catalog() {
    let shalls = catalog::REQUIREMENTS
        .iter()
        .filter(|r| r.level == Level::Shall)
        .count();
    let shoulds = catalog::REQUIREMENTS
        .iter()
        .filter(|r| r.level == Level::Should)
        .count();
    // 12 SHALLs in 5.1 and 17 in 5.2; ten SHOULD subclauses.
    assert_eq!(shalls, 29);
    assert_eq!(shoulds, 10);
    for r in catalog::REQUIREMENTS {
        assert!(r.text.len() > 20, "{} has no paraphrase", r.clause);
    }
}

#[test]
fn crosswalk_names_known_provisions_only() {
    let etsi_ok = |p: &str| {
        let mut it = p.split('-');
        let (Some(section), Some(n), None) = (it.next(), it.next(), it.next()) else {
            return false;
        };
        (section.starts_with("5.") || section == "6") && n.parse::<u32>().is_ok()
    };
    for r in catalog::REQUIREMENTS {
        for x in r.crosswalk {
            match x.document {
                "etsi-en-303-645" => assert!(etsi_ok(x.provision), "{}: {}", r.clause, x.provision),
                "nist-ir-8259a" => assert!(
                    [
                        "device-identification",
                        "device-configuration",
                        "data-protection",
                        "logical-access-to-interfaces",
                        "software-update",
                        "cybersecurity-state-awareness"
                    ]
                    .contains(&x.provision),
                    "{}: {}",
                    r.clause,
                    x.provision
                ),
                other => panic!("unknown document {other}"),
            }
        }
    }
    // The headline mappings.
    let maps = |clause: &str, provision: &str| {
        catalog::requirement(clause)
            .unwrap()
            .crosswalk
            .iter()
            .any(|x| x.provision == provision)
    };
    assert!(maps("5.2.6.1.4", "5.1-1"));
    assert!(maps("5.1.3.1.2", "5.2-1"));
    assert!(maps("5.2.4.1.1", "5.11-1"));
    assert!(maps("5.1.2.1.3", "5.3-13"));
    let subset = catalog::requirement("5.1.3.1.2").unwrap().crosswalk[0];
    assert_eq!(subset.relationship, Relationship::Subset);
}

#[test]
fn bulwark_features_come_from_the_traceability_table() {
    let table =
        std::fs::read_to_string(crate::common::repo_root().join("docs/traceability.md")).unwrap();
    // The compiled-in copy is the file in the repository.
    assert_eq!(
        catalog::parse_traceability(&table),
        catalog::bulwark_coverage()
    );
    let row = catalog::bulwark_coverage()
        .into_iter()
        .find(|c| c.clause == "5.2.6.1.4")
        .unwrap();
    assert!(row.status.starts_with("implemented"));
    assert!(!row.code.is_empty());
}

#[test]
fn oscal_catalog_holds_every_requirement_with_its_crosswalk() {
    let cat: Value = serde_json::from_slice(&comply::catalog_json()).unwrap();
    let mut ids = Vec::new();
    fn walk(v: &Value, ids: &mut Vec<String>) {
        for c in v["controls"].as_array().into_iter().flatten() {
            ids.push(c["id"].as_str().unwrap().to_owned());
        }
        for g in v["groups"].as_array().into_iter().flatten() {
            walk(g, ids);
        }
    }
    walk(&cat["catalog"], &mut ids);
    let expected: Vec<String> = catalog::REQUIREMENTS
        .iter()
        .map(|r| format!("iso27402-{}", r.clause))
        .collect();
    assert_eq!(ids, expected);
    let text = String::from_utf8(comply::catalog_json()).unwrap();
    assert!(text.contains("\"name\": \"etsi-en-303-645\""));
    assert!(text.contains("\"class\": \"subset\""));
}
