//! SBOMs, validated by independent tools: cyclonedx-python-lib (which
//! ships the CycloneDX JSON schemas) and spdx-tools (`pyspdxtools`).

use std::process::Command;

use serde_json::Value;

use crate::common::{output, output_file, python_with};

const CYCLONEDX: &str = "cyclonedx-python-lib[json-validation]==11.12.0";
const SPDX: &str = "spdx-tools==0.8.5";

/// Validates a CycloneDX 1.6 JSON file; returns the validator's complaint.
fn cyclonedx_errors(path: &std::path::Path) -> Option<String> {
    let python = python_with("cyclonedx.validation.json", CYCLONEDX);
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
        print(err if err else '')\n\
        sys.exit(1 if err else 0)\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn spdx_errors(path: &std::path::Path) -> Option<String> {
    python_with("spdx_tools", SPDX);
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("pyspdxtools is needed: pip install {SPDX} ({e})"));
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn cyclonedx_validates_with_cyclonedx_python_lib() {
    let dir = tempfile::tempdir().unwrap();
    let file = output_file(dir.path(), "sbom/bom.cdx.json");
    if let Some(e) = cyclonedx_errors(&file) {
        panic!("CycloneDX validation failed:\n{e}");
    }
    // The validator can fail: an unknown component type is refused.
    let mut bom: Value = serde_json::from_str(output("sbom/bom.cdx.json")).unwrap();
    bom["components"][0]["type"] = "gadget".into();
    let bad = dir.path().join("bad.cdx.json");
    std::fs::write(&bad, bom.to_string()).unwrap();
    assert!(cyclonedx_errors(&bad).is_some());
}

#[test]
fn spdx_validates_with_spdx_tools() {
    let dir = tempfile::tempdir().unwrap();
    let file = output_file(dir.path(), "sbom/bom.spdx.json");
    if let Some(e) = spdx_errors(&file) {
        panic!("SPDX validation failed:\n{e}");
    }
    let mut doc: Value = serde_json::from_str(output("sbom/bom.spdx.json")).unwrap();
    doc["packages"][1]["licenseDeclared"] = "MIT/Apache".into();
    let bad = dir.path().join("bad.spdx.json");
    std::fs::write(&bad, doc.to_string()).unwrap();
    assert!(spdx_errors(&bad).is_some());
}

#[test]
fn sbom_holds_the_cargo_tree_and_declared_components() {
    let bom: Value = serde_json::from_str(output("sbom/bom.cdx.json")).unwrap();
    let components = bom["components"].as_array().unwrap();
    let find = |name: &str| components.iter().find(|c| c["name"] == name);
    // The device binary and crates it links, with purls, licences, hashes.
    assert_eq!(find("bulwark").unwrap()["type"], "application");
    let serde = find("serde").expect("serde is in the tree");
    assert!(
        serde["purl"]
            .as_str()
            .unwrap()
            .starts_with("pkg:cargo/serde@")
    );
    assert!(
        serde["licenses"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("MIT")
    );
    assert_eq!(serde["hashes"][0]["alg"], "SHA-256");
    // Dev-dependencies are not part of the device.
    assert!(
        find("testkit").is_none(),
        "dev-dependency in the device SBOM"
    );
    // Maker-declared components.
    assert_eq!(find("linux").unwrap()["type"], "operating-system");
    assert_eq!(find("brcmfmac43430-sdio").unwrap()["type"], "firmware");
    // The product depends on the binary and the declared components.
    let product = &bom["dependencies"][0];
    assert_eq!(product["ref"], bom["metadata"]["component"]["bom-ref"]);
    assert!(product["dependsOn"].as_array().unwrap().len() >= 5);

    let spdx: Value = serde_json::from_str(output("sbom/bom.spdx.json")).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        spdx["packages"].as_array().unwrap().len(),
        components.len() + 1
    );
}
