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

/// `tpm2_getcap handles-nv-index` against `tpm`.
fn nv_indices(tpm: &Swtpm) -> Vec<u32> {
    testkit::require_tool("tpm2_getcap", "tpm2-tools");
    let out = std::process::Command::new("tpm2_getcap")
        .arg("handles-nv-index")
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("run tpm2_getcap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- 0x"))
        .map(|hex| u32::from_str_radix(hex, 16).expect("hex index"))
        .collect()
}

/// Runs `bulwark agent --config <config>` until it says it serves, then
/// stops it.
fn run_agent_once(state: &std::path::Path, config: &std::path::Path) {
    crate::update::start_agent(state, config).stop();
}

#[test]
fn agent_backs_the_update_floor_and_measures_start_up_with_the_tpm() {
    testkit::require_tool("openssl", "openssl");
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
            "T-4",
            "--model",
            "M",
            "--keystore",
            &spec,
        ],
    );
    let key = dir.path().join("release.key");
    let pem = dir.path().join("release.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        vec!["pkey", "-in", key.to_str().unwrap(), "-pubout"],
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .arg("-out")
            .arg(if args[0] == "genpkey" { &key } else { &pem })
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}");
    }
    let base = format!(
        "state_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{}\"\n",
        state.to_str().unwrap(),
        testkit::free_port()
    );
    let without = dir.path().join("agent.toml");
    std::fs::write(&without, &base).unwrap();
    run_agent_once(&state, &without);
    assert!(
        nv_indices(&tpm).is_empty(),
        "without [update] the TPM's NV is left alone"
    );
    assert_eq!(
        pcr(&tpm, 13),
        [0; 32],
        "without [update] nothing is measured"
    );

    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let with = dir.path().join("agent-update.toml");
    std::fs::write(
        &with,
        format!(
            "{base}[update]\ncompatible = \"hw-1\"\nslot_a = {:?}\nslot_b = {:?}\n\
             boot = \"file:{}\"\ntrusted_keys = [{:?}]\nbooted_slot = \"a\"\n",
            p("slot-a"),
            p("slot-b"),
            p("boot.json"),
            p("release.pem"),
        ),
    )
    .unwrap();
    run_agent_once(&state, &with);
    let mut indices = nv_indices(&tpm);
    indices.sort_unstable();
    assert_eq!(
        indices,
        [0x0180_0B00, 0x0180_0B01],
        "the floor counter and its base are defined"
    );
    // No slot record: the start-up check fails on slot a, and that is
    // what the default PCR 13 now holds.
    let failed_a = sha256(&[STARTUP_DOMAIN, b"A", &[2], &[0; 32]].concat());
    let once = sha256(&[[0; 32], failed_a].concat());
    assert_eq!(
        pcr(&tpm, 13),
        once,
        "PCR 13 holds the failed check of slot a"
    );
    // A second start reuses them and measures again.
    run_agent_once(&state, &with);
    assert_eq!(nv_indices(&tpm).len(), 2);
    let twice = sha256(&[once, failed_a].concat());
    assert_eq!(pcr(&tpm, 13), twice, "each start extends once");
    // `measure_pcr` moves the measurement to another PCR.
    let elsewhere = dir.path().join("agent-pcr14.toml");
    let text = std::fs::read_to_string(&with).unwrap();
    std::fs::write(&elsewhere, format!("{text}measure_pcr = 14\n")).unwrap();
    run_agent_once(&state, &elsewhere);
    assert_eq!(pcr(&tpm, 14), once);
    assert_eq!(pcr(&tpm, 13), twice, "PCR 13 is left alone");
}

/// A release installed with `bulwark update install` and booted: the
/// start-up check verifies slot b against its signed manifest and extends
/// PCR 13 with that outcome, which a verifier recomputes from the
/// documented layout and the manifest's payload digest (after the failed
/// check of the blank slot a on the first start).
#[test]
fn a_verified_slot_is_measured_into_the_pcr() {
    use crate::update::{Unit, succeeds};
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let image: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let unit = Unit::new(
        dir.path(),
        &format!("tpm:{}", tpm.tcti()),
        &[("r1", "1.0.0", &image)],
    );
    let agent = unit.start();
    unit.claim();
    let agent = unit.install_and_boot(agent, "r1");
    let status = succeeds(&unit.run(&["update", "status", "--json"]), "status");
    agent.stop();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["fail_safe"], false, "{status}");
    assert_eq!(status["boot"]["booted"], "b", "{status}");
    assert_eq!(status["security_floor"], 1, "{status}");

    // The verifier's side: the manifest's payload digest from the
    // published target, and the two measurements in order.
    let wire = std::fs::read(p("www").join("targets").join("r1.manifest.json"))
        .or_else(|_| {
            // Consistent snapshots prefix target names with their hash.
            std::fs::read_dir(p("www").join("targets"))
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(".r1.manifest.json")
                })
                .map(|e| std::fs::read(e.path()))
                .expect("r1.manifest.json among the published targets")
        })
        .unwrap();
    let wire: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    let payload = data_encoding::BASE64
        .decode(wire["payload"].as_str().unwrap().as_bytes())
        .unwrap();
    let failed_a = sha256(&[STARTUP_DOMAIN, b"A", &[2], &[0; 32]].concat());
    let verified_b = sha256(&[STARTUP_DOMAIN, b"B", &[1], &sha256(&payload)].concat());
    let first = sha256(&[[0; 32], failed_a].concat());
    let expected = sha256(&[first, verified_b].concat());
    assert_eq!(
        pcr(&tpm, 13),
        expected,
        "PCR 13 = the failed blank slot a, then the verified slot b"
    );
}

/// The measurement's domain, as `update::integrity` documents it; the
/// expected values here are recomputed from that layout, not with the
/// update crate's code.
const STARTUP_DOMAIN: &[u8] = b"bulwark/startup-integrity/v1\0";

fn sha256(bytes: &[u8]) -> [u8; 32] {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

/// PCR `index` of the SHA-256 bank, read by `tpm2_pcrread`.
fn pcr(tpm: &Swtpm, index: u8) -> [u8; 32] {
    testkit::require_tool("tpm2_pcrread", "tpm2-tools");
    let out = std::process::Command::new("tpm2_pcrread")
        .arg(format!("sha256:{index}"))
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("run tpm2_pcrread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .lines()
        .find_map(|line| {
            // "8 : 0x…" or "13: 0x…" (the index is padded).
            let (pcr, value) = line.split_once(':')?;
            (pcr.trim() == index.to_string())
                .then(|| value.trim().strip_prefix("0x"))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no PCR {index} in tpm2_pcrread output:\n{text}"));
    (0..32)
        .map(|i| u8::from_str_radix(&value[2 * i..2 * i + 2], 16).expect("hex PCR value"))
        .collect::<Vec<_>>()
        .try_into()
        .expect("32 bytes")
}
