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
/// stops it; returns what it printed.
fn run_agent_once(state: &std::path::Path, config: &std::path::Path) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["agent", "--config", config.to_str().unwrap()])
        .env("BULWARK_STATE_DIR", state)
        .env("TSS2_LOG", "all+none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulwark agent");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("stop with Ctrl-C") {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait for bulwark agent");
    assert!(
        ready,
        "the agent did not come up:\n{seen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    seen
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
