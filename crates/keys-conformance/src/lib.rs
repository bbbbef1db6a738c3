//! The keystore conformance suite: one set of checks that the software,
//! TPM 2.0 and PKCS#11 backends all pass without change.
//!
//! A backend's integration test calls [`run_all`] with a function that
//! opens (or re-opens) the keystore under test. Each check panics with its
//! name on failure, so the test output says which property broke.
//! Signatures are verified with RustCrypto, never with the backend itself.
//!
//! ```no_run
//! # fn open() -> std::sync::Arc<dyn keys::KeyAdmin> { unimplemented!() }
//! keys_conformance::run_all(&keys_conformance::Suite {
//!     open: &open,
//!     algorithms: &[keys::Algorithm::EcdsaP256Sha256],
//!     secrets: &["1234"],
//!     label_prefix: "conf",
//! });
//! ```

use std::sync::Arc;

use keys::{Algorithm, Error, KeyAdmin, KeyLabel, PublicKey, SealedSecret, Signature};

/// What the suite needs to know about the backend under test.
pub struct Suite<'a> {
    /// Opens the keystore; called again to check that keys persist.
    pub open: &'a dyn Fn() -> Arc<dyn KeyAdmin>,
    /// The algorithms the backend claims to support.
    pub algorithms: &'a [Algorithm],
    /// Secrets the backend was configured with (PINs, passphrases) that
    /// must never show in `Debug` output or error messages.
    pub secrets: &'a [&'a str],
    /// Prefix for the labels the suite creates, so runs do not collide.
    pub label_prefix: &'a str,
}

type Check = fn(&Suite<'_>);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    (
        "generate_then_read_public_key",
        generate_then_read_public_key,
    ),
    (
        "signatures_verify_independently",
        signatures_verify_independently,
    ),
    ("every_key_is_unique", every_key_is_unique),
    (
        "existing_label_is_never_overwritten",
        existing_label_is_never_overwritten,
    ),
    ("missing_key_is_named", missing_key_is_named),
    ("keys_persist_across_reopen", keys_persist_across_reopen),
    ("delete_removes_the_key", delete_removes_the_key),
    (
        "seal_round_trips_and_detects_tampering",
        seal_round_trips_and_detects_tampering,
    ),
    (
        "unsupported_algorithm_is_refused_cleanly",
        unsupported_algorithm_is_refused_cleanly,
    ),
    ("no_secret_in_debug_or_errors", no_secret_in_debug_or_errors),
];

/// Runs every check in [`CHECKS`] in order, printing each name.
pub fn run_all(suite: &Suite<'_>) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name} ...");
        check(suite);
        eprintln!("conformance: {name} ok");
    }
}

fn label(suite: &Suite<'_>, name: &str) -> KeyLabel {
    format!("{}-{name}", suite.label_prefix)
        .parse()
        .expect("suite labels are valid")
}

/// Generates a fresh key, deleting any leftover from an earlier run.
fn fresh(store: &dyn KeyAdmin, label: &KeyLabel, algorithm: Algorithm) -> PublicKey {
    let _ = store.delete(label);
    store
        .generate(label, algorithm)
        .unwrap_or_else(|e| panic!("generate {label} ({algorithm}): {e}"))
}

/// Verifies with RustCrypto; returns whether the signature is valid.
pub fn verify(public: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    match public.algorithm() {
        Algorithm::EcdsaP256Sha256 => {
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(public.spki_der()) else {
                return false;
            };
            let Ok(sig) = p256::ecdsa::Signature::from_der(signature.as_ref()) else {
                return false;
            };
            key.verify(message, &sig).is_ok()
        }
        Algorithm::Ed25519 => {
            let Ok(raw) = <[u8; 32]>::try_from(public.raw()) else {
                return false;
            };
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&raw) else {
                return false;
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(signature.as_ref()) else {
                return false;
            };
            key.verify_strict(message, &sig).is_ok()
        }
        _ => false,
    }
}

fn generate_then_read_public_key(suite: &Suite<'_>) {
    let store = (suite.open)();
    for &alg in suite.algorithms {
        let l = label(suite, &format!("read-{alg}"));
        let generated = fresh(store.as_ref(), &l, alg);
        assert_eq!(generated.algorithm(), alg);
        let read = store.public_key(&l).expect("public_key after generate");
        assert_eq!(generated, read, "public key read back differs for {alg}");
        let listed = store.list().expect("list");
        assert!(
            listed.iter().any(|k| k.label == l && k.public_key == read),
            "list() does not show {l}"
        );
        store.delete(&l).expect("delete");
    }
}

fn signatures_verify_independently(suite: &Suite<'_>) {
    let store = (suite.open)();
    for &alg in suite.algorithms {
        let l = label(suite, &format!("sign-{alg}"));
        let public = fresh(store.as_ref(), &l, alg);
        for message in [&b""[..], b"bulwark", &[0xa5; 10_000]] {
            let sig = store.sign(&l, message).expect("sign");
            assert!(
                verify(&public, message, &sig),
                "{alg} signature over {} bytes does not verify",
                message.len()
            );
            let mut other = message.to_vec();
            other.push(1);
            assert!(
                !verify(&public, &other, &sig),
                "{alg} signature verifies over a different message"
            );
        }
        store.delete(&l).expect("delete");
    }
}

fn every_key_is_unique(suite: &Suite<'_>) {
    let store = (suite.open)();
    for &alg in suite.algorithms {
        let a = label(suite, &format!("uniq-a-{alg}"));
        let b = label(suite, &format!("uniq-b-{alg}"));
        let pa = fresh(store.as_ref(), &a, alg);
        let pb = fresh(store.as_ref(), &b, alg);
        assert_ne!(pa, pb, "two generated {alg} keys are equal");
        let sig = store.sign(&a, b"x").expect("sign");
        assert!(!verify(&pb, b"x", &sig), "key b verifies key a's signature");
        store.delete(&a).expect("delete");
        store.delete(&b).expect("delete");
    }
}

fn existing_label_is_never_overwritten(suite: &Suite<'_>) {
    let store = (suite.open)();
    let alg = suite.algorithms[0];
    let l = label(suite, "exists");
    let first = fresh(store.as_ref(), &l, alg);
    let err = store
        .generate(&l, alg)
        .expect_err("second generate must fail");
    assert!(matches!(err, Error::KeyExists { .. }), "got {err:?}");
    assert_eq!(store.public_key(&l).expect("public_key"), first);
    store.delete(&l).expect("delete");
}

fn missing_key_is_named(suite: &Suite<'_>) {
    let store = (suite.open)();
    let l = label(suite, "never-created");
    let _ = store.delete(&l);
    for err in [
        store.public_key(&l).expect_err("public_key of missing key"),
        store.sign(&l, b"x").expect_err("sign with missing key"),
    ] {
        assert!(matches!(err, Error::KeyNotFound { .. }), "got {err:?}");
        assert!(
            err.to_string().contains(l.as_str()),
            "{err} does not name {l}"
        );
    }
}

fn keys_persist_across_reopen(suite: &Suite<'_>) {
    let l = label(suite, "persist");
    let alg = suite.algorithms[0];
    let public = {
        let store = (suite.open)();
        fresh(store.as_ref(), &l, alg)
    };
    let store = (suite.open)();
    assert_eq!(
        store.public_key(&l).expect("public_key after reopen"),
        public
    );
    let sig = store.sign(&l, b"after reopen").expect("sign after reopen");
    assert!(verify(&public, b"after reopen", &sig));
    store.delete(&l).expect("delete");
}

fn delete_removes_the_key(suite: &Suite<'_>) {
    let store = (suite.open)();
    let l = label(suite, "delete");
    fresh(store.as_ref(), &l, suite.algorithms[0]);
    store.delete(&l).expect("delete");
    assert!(matches!(
        store.sign(&l, b"x"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(!store.list().expect("list").iter().any(|k| k.label == l));
    let reopened = (suite.open)();
    assert!(matches!(
        reopened.public_key(&l),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(store.delete(&l), Err(Error::KeyNotFound { .. })));
}

fn seal_round_trips_and_detects_tampering(suite: &Suite<'_>) {
    let store = (suite.open)();
    let secret = b"0123456789abcdef0123456789abcdef";
    let sealed = store.seal(secret).expect("seal");
    assert!(
        !sealed.0.windows(secret.len()).any(|w| w == secret),
        "sealed blob contains the secret in clear"
    );
    assert_eq!(&store.unseal(&sealed).expect("unseal")[..], secret);
    let reopened = (suite.open)();
    assert_eq!(
        &reopened.unseal(&sealed).expect("unseal after reopen")[..],
        secret
    );
    let max = vec![7u8; SealedSecret::MAX_PLAINTEXT];
    assert_eq!(
        &store
            .unseal(&store.seal(&max).expect("seal max"))
            .expect("unseal max")[..],
        &max[..]
    );
    let too_big = vec![7u8; SealedSecret::MAX_PLAINTEXT + 1];
    assert!(store.seal(&too_big).is_err(), "oversized secret was sealed");
    for position in [0, sealed.0.len() / 2, sealed.0.len() - 1] {
        let mut tampered = sealed.clone();
        tampered.0[position] ^= 0x01;
        assert!(
            store.unseal(&tampered).is_err(),
            "tampered byte {position} of {} went unnoticed",
            sealed.0.len()
        );
    }
    let mut truncated = sealed.clone();
    truncated.0.truncate(sealed.0.len() / 2);
    assert!(store.unseal(&truncated).is_err(), "truncated blob unsealed");
    assert!(store.unseal(&SealedSecret(Vec::new())).is_err());
}

fn unsupported_algorithm_is_refused_cleanly(suite: &Suite<'_>) {
    let store = (suite.open)();
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        if suite.algorithms.contains(&alg) {
            continue;
        }
        let l = label(suite, "unsupported");
        let err = store.generate(&l, alg).expect_err("unsupported algorithm");
        assert!(
            matches!(err, Error::UnsupportedAlgorithm { .. }),
            "got {err:?}"
        );
        assert!(matches!(
            store.public_key(&l),
            Err(Error::KeyNotFound { .. })
        ));
    }
}

fn no_secret_in_debug_or_errors(suite: &Suite<'_>) {
    let store = (suite.open)();
    let mut texts = vec![format!("{store:?}"), format!("{:?}", store.info())];
    let l = label(suite, "absent");
    if let Err(e) = store.sign(&l, b"x") {
        texts.push(format!("{e} {e:?}"));
    }
    if let Err(e) = store.unseal(&SealedSecret(vec![1, 2, 3])) {
        texts.push(format!("{e} {e:?}"));
    }
    for text in &texts {
        for secret in suite.secrets {
            assert!(
                !text.contains(secret),
                "a configured secret appears in: {text}"
            );
        }
    }
}
