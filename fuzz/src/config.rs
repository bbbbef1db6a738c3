//! Fuzz harness for the configuration inputs the device agent takes from
//! outside: the boot file, settings documents and signed bundles.
//!
//! Each function here is one cargo-fuzz target's body. This file is
//! compiled into `crates/agent-config/tests/fuzz_corpus.rs`, which replays
//! every seed under `fuzz/corpus/<target>/` on stable Rust, so CI checks
//! the corpus without nightly.
//!
//! A function returns normally for any input; a panic is a finding:
//! either the crate panicked on untrusted input, or a property asserted
//! here (round trips, digest stability) does not hold.

use std::sync::OnceLock;

use agent_config::{
    AgentFile, Bundle, DeviceSettings, DeviceTarget, TrustedSigners, public_key_from_pem,
};

/// The public half of the fixed Ed25519 key (seed `[0x42; 32]`) that
/// signed the bundle seeds. Fuzzing cannot forge its signatures, so
/// mutated bundles mostly exercise the envelope; the signed seeds reach
/// the payload checks.
pub const FUZZ_SIGNER_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAIVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI=
-----END PUBLIC KEY-----
";

/// The time bundles are checked at: 2026-11-01, before the valid seeds expire.
pub const FUZZ_NOW_UNIX: i64 = 1_793_491_200;

/// Boot file: any bytes, as UTF-8 text, through `AgentFile::from_toml`.
pub fn agent_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AgentFile::from_toml(text);
    }
}

/// Settings document: decode, validate, and check that valid settings
/// survive a JSON round trip with the same digest.
pub fn device_settings(data: &[u8]) {
    let Ok(settings) = DeviceSettings::from_json(data) else {
        return;
    };
    let Ok(validated) = settings.validate() else {
        return;
    };
    let json = serde_json::to_vec(validated.settings()).expect("settings serialise");
    let again = DeviceSettings::from_json(&json).expect("serialised settings decode again");
    assert_eq!(&again, validated.settings());
    assert_eq!(again.digest(), settings.digest());
    let revalidated = again.validate().expect("valid settings stay valid");
    assert_eq!(revalidated.weakenings(), validated.weakenings());
}

/// Signed bundle: verify against the fixed signer and device.
pub fn bundle(data: &[u8]) {
    static SIGNERS: OnceLock<TrustedSigners> = OnceLock::new();
    let signers = SIGNERS.get_or_init(|| {
        let key = public_key_from_pem("fuzz", FUZZ_SIGNER_PEM).expect("fixed key parses");
        TrustedSigners::new(vec![("fuzz".to_owned(), key)]).expect("fixed key is usable")
    });
    let device = DeviceTarget {
        serial: "SN-FUZZ".to_owned(),
        model: "BW-FUZZ".to_owned(),
    };
    if let Ok(verified) = Bundle::verify(data, signers, &device, 0, FUZZ_NOW_UNIX) {
        assert_eq!(verified.signer(), "fuzz");
        assert!(verified.sequence() > 0);
    }
}
