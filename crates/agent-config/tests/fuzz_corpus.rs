//! Replays every seed in `fuzz/corpus/<target>/` through the fuzz targets'
//! own code (`fuzz/src/config.rs`, compiled in here), so CI checks on stable
//! Rust that no seed panics, and that the seeds still reach the outcomes
//! they were written for.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/config.rs"]
mod harness;

use std::path::{Path, PathBuf};

use agent_config::{Bundle, DeviceSettings, DeviceTarget, Error, TrustedSigners};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    // An empty corpus would make this test pass vacuously.
    assert!(files.len() >= 3, "{} has too few seeds", dir.display());
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).expect("seed is readable");
        // A panic names the seed through this message's context.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
}

#[test]
fn agent_file_corpus_does_not_panic() {
    replay("agent_file", harness::agent_file);
}

#[test]
fn device_settings_corpus_does_not_panic() {
    replay("device_settings", harness::device_settings);
}

#[test]
fn bundle_corpus_does_not_panic() {
    replay("bundle", harness::bundle);
}

/// The seeds are only useful if they reach the checks they were made for:
/// valid ones must pass, the rest must fail for their stated reason.
#[test]
fn seeds_reach_their_intended_outcome() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let read = |p: &str| std::fs::read(base.join(p)).unwrap();

    let text = |p: &str| String::from_utf8(read(p)).unwrap();
    agent_config::AgentFile::from_toml(&text("agent_file/full.toml")).unwrap();
    assert!(matches!(
        agent_config::AgentFile::from_toml(&text("agent_file/unknown-field.toml")),
        Err(Error::UnknownField { .. })
    ));

    let settings = |p: &str| DeviceSettings::from_json(&read(p)).and_then(|s| s.validate());
    assert!(settings("device_settings/full.json").is_ok());
    assert_eq!(
        settings("device_settings/weakened-acknowledged.json")
            .unwrap()
            .weakenings()
            .len(),
        3
    );
    assert!(matches!(
        settings("device_settings/below-floor.json"),
        Err(Error::BelowSecurityFloor { .. })
    ));

    let key = agent_config::public_key_from_pem("fuzz", harness::FUZZ_SIGNER_PEM).unwrap();
    let signers = TrustedSigners::new(vec![("fuzz".to_owned(), key)]).unwrap();
    let device = DeviceTarget {
        serial: "SN-FUZZ".to_owned(),
        model: "BW-FUZZ".to_owned(),
    };
    let verify = |p: &str| Bundle::verify(&read(p), &signers, &device, 0, harness::FUZZ_NOW_UNIX);
    assert!(verify("bundle/valid-defaults.json").is_ok());
    assert!(verify("bundle/valid-weakened-model.json").is_ok());
    for (seed, ok) in [
        (
            "bundle/bad-signature.json",
            matches!(
                verify("bundle/bad-signature.json"),
                Err(Error::BadSignature { .. })
            ),
        ),
        (
            "bundle/unknown-signer.json",
            matches!(
                verify("bundle/unknown-signer.json"),
                Err(Error::UnknownSigner { .. })
            ),
        ),
        (
            "bundle/signed-expired.json",
            matches!(
                verify("bundle/signed-expired.json"),
                Err(Error::Expired { .. })
            ),
        ),
        (
            "bundle/signed-wrong-target.json",
            matches!(
                verify("bundle/signed-wrong-target.json"),
                Err(Error::WrongTarget { .. })
            ),
        ),
        (
            "bundle/signed-below-floor.json",
            matches!(
                verify("bundle/signed-below-floor.json"),
                Err(Error::BelowSecurityFloor { .. })
            ),
        ),
        (
            "bundle/signed-unknown-field.json",
            matches!(
                verify("bundle/signed-unknown-field.json"),
                Err(Error::UnknownField { .. })
            ),
        ),
        (
            "bundle/signed-not-json.json",
            matches!(
                verify("bundle/signed-not-json.json"),
                Err(Error::Malformed { .. })
            ),
        ),
    ] {
        assert!(ok, "{seed}");
    }
}
