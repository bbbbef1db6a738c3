//! Regenerates the signed seeds in `corpus/bundle/` with the fixed fuzz
//! key (Ed25519, seed `[0x42; 32]`; public half in `FUZZ_SIGNER_PEM`):
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example bundle_seeds -- fuzz/corpus/bundle
//! ```
//!
//! Run it when the bundle payload format changes; the stable test
//! `crates/agent-config/tests/fuzz_corpus.rs` says when that is needed.

use agent_config::*;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use data_encoding::BASE64;

fn main() {
    let out = std::path::Path::new(&std::env::args().nth(1).unwrap()).to_path_buf();
    let kp = Ed25519KeyPair::from_seed_unchecked(&[0x42; 32]).unwrap();
    let spki = keys::encoding::ed25519_spki_from_raw(kp.public_key().as_ref()).unwrap();
    assert_eq!(
        public_key_from_pem("fuzz", bulwark_fuzz::FUZZ_SIGNER_PEM)
            .unwrap()
            .spki_der(),
        spki.as_slice(),
        "FUZZ_SIGNER_PEM is the fixed key"
    );
    let kid = key_id(&spki);
    let sign = |payload: &[u8]| -> Vec<u8> {
        let sig = kp.sign(payload);
        serde_json::to_vec_pretty(&serde_json::json!({
            "payload": BASE64.encode(payload),
            "signatures": [{"key_id": kid, "signature": BASE64.encode(sig.as_ref())}],
        }))
        .unwrap()
    };
    let mut p = BundlePayload {
        issuer: "fleet-manager".into(),
        target: Target {
            serial: Some("SN-FUZZ".into()),
            model: None,
        },
        sequence: 1,
        not_after_unix: Some(4_000_000_000),
        settings: DeviceSettings::default(),
    };
    let w = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    w(
        "valid-defaults.json",
        &sign(&serde_json::to_vec(&p).unwrap()),
    );
    p.target = Target {
        serial: None,
        model: Some("BW-FUZZ".into()),
    };
    p.settings.tls.min_version = TlsVersion::V1_2;
    p.settings.danger_acknowledged = vec!["tls.min_version".into()];
    p.settings.time.ntp_servers = vec!["pool.ntp.org".into()];
    w(
        "valid-weakened-model.json",
        &sign(&serde_json::to_vec(&p).unwrap()),
    );
    p.settings.auth.min_password_length = 8;
    w(
        "signed-below-floor.json",
        &sign(&serde_json::to_vec(&p).unwrap()),
    );
    p.settings = DeviceSettings::default();
    p.target = Target {
        serial: Some("OTHER".into()),
        model: None,
    };
    w(
        "signed-wrong-target.json",
        &sign(&serde_json::to_vec(&p).unwrap()),
    );
    p.target = Target {
        serial: Some("SN-FUZZ".into()),
        model: None,
    };
    p.not_after_unix = Some(1);
    w(
        "signed-expired.json",
        &sign(&serde_json::to_vec(&p).unwrap()),
    );
    let mut v = serde_json::to_value(&p).unwrap();
    v["extra"] = serde_json::json!(1);
    w(
        "signed-unknown-field.json",
        &sign(&serde_json::to_vec(&v).unwrap()),
    );
    w("signed-not-json.json", &sign(b"not json"));
    let good = sign(
        &serde_json::to_vec(&BundlePayload {
            not_after_unix: None,
            ..p.clone()
        })
        .unwrap(),
    );
    let mut bad: serde_json::Value = serde_json::from_slice(&good).unwrap();
    bad["signatures"][0]["signature"] = serde_json::json!(BASE64.encode(&[0u8; 64]));
    w(
        "bad-signature.json",
        &serde_json::to_vec_pretty(&bad).unwrap(),
    );
    bad["signatures"][0]["key_id"] = serde_json::json!("00".repeat(32));
    w(
        "unknown-signer.json",
        &serde_json::to_vec_pretty(&bad).unwrap(),
    );
    w("empty-object.json", b"{}");
    w(
        "no-signatures.json",
        br#"{"payload": "e30=", "signatures": []}"#,
    );
}
