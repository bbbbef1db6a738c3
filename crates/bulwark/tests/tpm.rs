//! Provisioning against a real TPM 2.0 (swtpm): device keys inside the
//! TPM, and a software keystore whose KEK the TPM seals.

use testkit::swtpm::Swtpm;

use crate::common::*;

fn ca(dir: &std::path::Path) -> String {
    let ca = dir.join("ca");
    let ca_str = ca.to_str().unwrap().to_owned();
    ok(
        dir,
        &["ca", "init", "--dir", &ca_str, "--organization", "Acme"],
    );
    ca_str
}

#[test]
fn device_key_in_swtpm_provisions_and_verifies() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let state = dir.path().join("unit");
    let spec = format!("tpm:{}", tpm.tcti());
    ok(
        &state,
        &[
            "provision",
            "--ca",
            &ca,
            "--serial",
            "T-1",
            "--model",
            "M",
            "--keystore",
            &spec,
        ],
    );
    openssl_verify(&dir.path().join("ca"), &state.join("identity/device.pem"));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&state, &["identity", "show", "--json"])).unwrap();
    assert_eq!(shown["keystore"]["backend"], "tpm2");
    assert_eq!(shown["keystore"]["class"], "Enhanced");
    assert_eq!(shown["key_matches_certificate"], true);
    // No key file exists outside the TPM.
    assert!(!state.join("keystore/software").exists());
}

#[test]
fn software_keystore_kek_sealed_by_swtpm() {
    let mut tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let state = dir.path().join("unit");
    let spec = format!("software+tpm:{}", tpm.tcti());
    ok(
        &state,
        &[
            "provision",
            "--ca",
            &ca,
            "--serial",
            "T-2",
            "--model",
            "M",
            "--keystore",
            &spec,
        ],
    );
    let soft = state.join("keystore/software");
    assert!(soft.join("kek.sealed").exists());
    assert!(
        !soft.join("kek").exists(),
        "plain KEK written despite the TPM"
    );
    let shown = ok(&state, &["identity", "show"]);
    assert!(shown.contains("TPM-sealed"), "{shown}");
    assert!(shown.contains("class 2"), "{shown}");
    // Without the TPM the keys are unusable, and the error names the TPM.
    tpm.stop();
    let err = fails(&state, &["identity", "show"]);
    assert!(err.contains(&tpm.tcti()), "{err}");
}

#[test]
fn unreachable_tpm_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let state = dir.path().join("unit");
    let port = testkit::free_port_pair();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let spec = format!("tpm:{tcti}");
    let started = std::time::Instant::now();
    let err = fails(
        &state,
        &[
            "provision",
            "--ca",
            &ca,
            "--serial",
            "T-3",
            "--model",
            "M",
            "--keystore",
            &spec,
        ],
    );
    assert!(err.contains(&tcti), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!state.join("identity").exists());
    let registry = std::fs::read_to_string(dir.path().join("ca/issued.jsonl")).unwrap_or_default();
    assert!(registry.is_empty(), "a failed provisioning was registered");
}
