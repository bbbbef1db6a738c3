//! Integration tests of the PKCS#11 keystore against two real tokens:
//! SoftHSM2 and tpm2-pkcs11 on a private swtpm.
//!
//! A PKCS#11 module reads its configuration (`SOFTHSM2_CONF`,
//! `TPM2_PKCS11_STORE`, `TPM2_PKCS11_TCTI`) and its token list once per
//! process, so every test prepares its token in the test process and runs
//! its body in a child process of this binary (`testkit::pkcs11::isolated`).
//! Both modules therefore live in this one binary without meeting, and
//! tests still run in parallel. OpenSC's `pkcs11-tool`, which shares no
//! code with cryptoki, inspects the token from outside.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use keys::{Algorithm, CapabilityClass, Error, KeyAdmin, KeyLabel, KeyStore, SealedSecret};
use keys_pkcs11::{Pkcs11Config, Pkcs11KeyStore, SEAL_KEY_LABEL};
use testkit::pkcs11::{Tpm2Pkcs11, isolated};
use testkit::softhsm::SoftHsm;

fn label(s: &str) -> KeyLabel {
    s.parse().expect("valid test label")
}

fn open(uri: &str) -> Pkcs11KeyStore {
    Pkcs11KeyStore::open_uri(uri).unwrap_or_else(|e| panic!("open {uri}: {e}"))
}

/// The store's error for `uri`, which must not open.
fn open_error(uri: &str) -> Error {
    match Pkcs11KeyStore::open_uri(uri) {
        Ok(store) => panic!("{uri} opened {store:?}"),
        Err(e) => e,
    }
}

/// `pkcs11-tool --list-objects` as the user, from outside this process.
fn list_objects(module: &Path, token: &str, pin: &str, env: &[(&str, &Path)]) -> String {
    testkit::require_tool("pkcs11-tool", "opensc");
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(module)
        .args([
            "--token-label",
            token,
            "--login",
            "--pin",
            pin,
            "--list-objects",
        ])
        .envs(env.iter().copied())
        .output()
        .expect("run pkcs11-tool");
    assert!(
        out.status.success(),
        "pkcs11-tool --list-objects failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines pkcs11-tool prints for the object labelled `label` whose
/// header is exactly `kind` ("Private Key Object; EC", not "...; EC_EDWARDS").
fn object_block(listing: &str, kind: &str, label: &str) -> String {
    let mut objects: Vec<Vec<&str>> = Vec::new();
    for line in listing.lines() {
        match objects.last_mut() {
            Some(object) if line.starts_with(char::is_whitespace) => object.push(line),
            _ => objects.push(vec![line]),
        }
    }
    objects
        .into_iter()
        .find(|object| {
            let header = object.first().copied().unwrap_or_default();
            let exact_kind = header
                .strip_prefix(kind)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
            exact_kind
                && object
                    .iter()
                    .any(|l| l.trim() == format!("label:      {label}"))
        })
        .unwrap_or_else(|| panic!("no {kind} labelled {label} in:\n{listing}"))
        .join("\n")
}

/// SoftHSM2 2.6: the conformance suite, error mapping, and what ends up on
/// the token.
mod softhsm {
    use super::*;

    #[test]
    fn conformance() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let uri = hsm.uri();
                let algorithms = open(&uri).algorithms();
                // SoftHSM 2.6 has CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA:
                // if that ever changes, this test must say so, not shrink.
                assert_eq!(algorithms, [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519]);
                let open_admin = || -> Arc<dyn KeyAdmin> { Arc::new(open(&uri)) };
                keys_conformance::run_all(&keys_conformance::Suite {
                    open: &open_admin,
                    algorithms: &algorithms,
                    secrets: &[hsm.pin(), hsm.so_pin()],
                    label_prefix: "conf",
                });
            },
        );
    }

    #[test]
    fn info_says_software_token() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let store = open(&hsm.uri());
                let info = store.info();
                assert_eq!(info.backend, "pkcs11");
                assert!(!info.hardware_backed);
                assert_eq!(info.class, CapabilityClass::Basic);
                assert!(info.description.contains("software token"), "{info:?}");
                let debug = format!("{store:?}");
                assert!(
                    debug.contains("libsofthsm2.so") && debug.contains("bulwark"),
                    "{debug}"
                );
                assert!(!debug.contains(hsm.pin()), "{debug}");
                assert_eq!(store.token_label(), "bulwark");
                let token_uri = store.token_uri().to_string();
                assert!(
                    token_uri.starts_with("pkcs11:token=bulwark;manufacturer=SoftHSM%20project;"),
                    "{token_uri}"
                );
                // The URI it reports finds the same token again.
                let again = open(&format!(
                    "{token_uri}?module-path={}&pin-value={}",
                    hsm.module_path().display(),
                    hsm.pin()
                ));
                assert_eq!(again.token_label(), "bulwark");
            },
        );
    }

    #[test]
    fn wrong_pin_is_authentication_failure_without_the_pin() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let wrong = "wrong-pin-2468";
                let err = open_error(&format!(
                    "pkcs11:token=bulwark?module-path={}&pin-value={wrong}",
                    hsm.module_path().display()
                ));
                assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
                let text = format!("{err} {err:?}");
                assert!(text.contains("\"bulwark\""), "{text}");
                assert!(!text.contains(wrong) && !text.contains(hsm.pin()), "{text}");
                // The right PIN still works afterwards.
                open(&hsm.uri());
            },
        );
    }

    #[test]
    fn second_store_must_present_the_pin_that_logged_in() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let first = open(&hsm.uri());
                // The token is now logged in for this whole process; a
                // wrong PIN must still be refused.
                let wrong = "wrong-pin-1357";
                let err = open_error(&format!(
                    "pkcs11:token=bulwark?module-path={}&pin-value={wrong}",
                    hsm.module_path().display()
                ));
                assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
                assert!(!err.to_string().contains(wrong));
                let second = open(&hsm.uri());
                let l = label("shared");
                first
                    .generate(&l, Algorithm::EcdsaP256Sha256)
                    .expect("generate");
                assert_eq!(
                    second.public_key(&l).expect("second store sees the key"),
                    first.public_key(&l).expect("public key")
                );
            },
        );
    }

    #[test]
    fn missing_token_module_and_malformed_uri() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let module = hsm.module_path().display().to_string();
                let err = open_error(&format!(
                    "pkcs11:token=no-such-token?module-path={module}&pin-value=1234"
                ));
                match &err {
                    Error::Unavailable { detail, .. } => {
                        assert!(detail.contains("no token matching"), "{detail}");
                        assert!(detail.contains("no-such-token"), "{detail}");
                        assert!(
                            detail.contains("\"bulwark\""),
                            "lists present tokens: {detail}"
                        );
                    }
                    other => panic!("missing token gave {other:?}"),
                }
                assert!(!err.to_string().contains("1234"));

                let err = open_error(
                    "pkcs11:token=bulwark?module-path=/nonexistent/libnope.so&pin-value=1234",
                );
                match &err {
                    Error::Unavailable { detail, .. } => {
                        assert!(detail.contains("/nonexistent/libnope.so"), "{detail}");
                    }
                    other => panic!("missing module gave {other:?}"),
                }

                // A file that is not a PKCS#11 module at all.
                let err = open_error("pkcs11:token=bulwark?module-path=/etc/hostname");
                assert!(
                    matches!(&err, Error::Unavailable { detail, .. } if detail.contains("/etc/hostname")),
                    "{err:?}"
                );

                for bad in [
                    format!("pkcs11:tokne=bulwark?module-path={module}&pin-value=1234"),
                    format!("pkcs11:token=bulwark?module-path={module}&pin-value=12%3"),
                    format!("pkcs11:token=bulwark;token=x?module-path={module}"),
                    "pkcs11:token=bulwark?module-path=relative.so".to_owned(),
                    "https://example.invalid/".to_owned(),
                ] {
                    let err = open_error(&bad);
                    assert!(
                        matches!(
                            err,
                            Error::InvalidInput {
                                what: "PKCS#11 URI",
                                ..
                            }
                        ),
                        "{bad}: {err:?}"
                    );
                    assert!(!err.to_string().contains("1234"), "{err}");
                }
            },
        );
    }

    #[test]
    fn token_selection_and_pin_sources() {
        isolated(
            || {
                let hsm = SoftHsm::new("bulwark");
                hsm.add_token("other", "other-pin-9999");
                hsm
            },
            |hsm| {
                let module = hsm.module_path().display().to_string();
                let err = open_error(&format!("pkcs11:?module-path={module}&pin-value=1234"));
                assert!(
                    matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("matches 2 tokens")),
                    "{err:?}"
                );
                let other = open(&format!(
                    "pkcs11:token=other;manufacturer=SoftHSM%20project;model=SoftHSM%20v2?module-path={module}&pin-value=other-pin-9999"
                ));
                assert_eq!(other.token_label(), "other");
                let err = open_error(&format!(
                    "pkcs11:token=other;model=HSM%209000?module-path={module}&pin-value=other-pin-9999"
                ));
                assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
                let err = open_error(&format!(
                    "pkcs11:token=other;library-manufacturer=Nobody?module-path={module}"
                ));
                assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

                // PIN from a file, by URI and by config.
                let dir = tempfile::tempdir().expect("temporary directory");
                let pin_file = dir.path().join("pin");
                std::fs::write(&pin_file, format!("{}\n", hsm.pin())).expect("write PIN file");
                let by_uri = open(&format!(
                    "pkcs11:token=bulwark?module-name=softhsm2&pin-source=file:{}",
                    pin_file.display()
                ));
                assert_eq!(by_uri.token_label(), "bulwark");
                let by_config = Pkcs11KeyStore::open(
                    Pkcs11Config::new(hsm.module_path(), "bulwark").with_pin_file(&pin_file),
                )
                .expect("open with a PIN file");
                assert_eq!(by_config.token_label(), "bulwark");

                // No PIN for a token that needs one.
                let err = Pkcs11KeyStore::open(Pkcs11Config::new(hsm.module_path(), "other"))
                    .expect_err("no PIN");
                assert!(
                    matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("requires a PIN")),
                    "{err:?}"
                );

                // A secret sealed on one token does not unseal on another.
                let sealed = by_config.seal(b"token-bound").expect("seal");
                let err = other
                    .unseal(&sealed)
                    .expect_err("unseal on the other token");
                assert!(matches!(err, Error::UnsealFailed { .. }), "{err:?}");
            },
        );
    }

    #[test]
    fn keys_on_the_token_are_sensitive_and_never_extractable() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let store = open(&hsm.uri());
                let l = label("device-identity");
                store
                    .generate(&l, Algorithm::EcdsaP256Sha256)
                    .expect("generate ECDSA");
                let e = label("device-ed25519");
                store
                    .generate(&e, Algorithm::Ed25519)
                    .expect("generate Ed25519");
                store.seal(b"x").expect("seal creates the sealing key");
                let conf = hsm.conf_path();
                let listing = list_objects(
                    hsm.module_path(),
                    hsm.token_label(),
                    hsm.pin(),
                    &[("SOFTHSM2_CONF", &conf)],
                );
                for (kind, name) in [
                    ("Private Key Object; EC", l.as_str()),
                    ("Private Key Object; EC_EDWARDS", e.as_str()),
                    ("Private Key Object; RSA", SEAL_KEY_LABEL),
                ] {
                    let block = object_block(&listing, kind, name);
                    let access = block
                        .lines()
                        .find(|line| line.trim_start().starts_with("Access:"))
                        .unwrap_or_else(|| panic!("no Access line for {name}:\n{block}"));
                    for flag in ["sensitive", "never extractable", "local"] {
                        assert!(access.contains(flag), "{name} is not {flag}: {access}");
                    }
                    assert!(
                        !access.contains(" extractable,") || access.contains("never extractable")
                    );
                    assert!(block.contains("Usage:"), "{block}");
                    let usage = block
                        .lines()
                        .find(|line| line.trim_start().starts_with("Usage:"))
                        .unwrap_or_default();
                    // Nothing but the one use each key is for.
                    let usage = usage
                        .split_once(':')
                        .map(|(_, u)| u.trim())
                        .unwrap_or_default();
                    let expected = if name == SEAL_KEY_LABEL {
                        "decrypt"
                    } else {
                        "sign"
                    };
                    assert_eq!(usage, expected, "usage of {name}");
                }
                // Both halves of a pair share the CKA_ID.
                let private = object_block(&listing, "Private Key Object; EC", l.as_str());
                let public = object_block(&listing, "Public Key Object; EC", l.as_str());
                assert!(public.contains("Usage:      verify"), "{public}");
                let id = |block: &str| {
                    block
                        .lines()
                        .find(|line| line.trim_start().starts_with("ID:"))
                        .map(|line| line.trim().to_owned())
                        .expect("ID line")
                };
                assert_eq!(id(&private), id(&public));
                assert_eq!(id(&private).len(), "ID:         ".len() + 32, "16-byte id");
                // The sealing key is not one of our signing keys.
                let listed: Vec<String> = store
                    .list()
                    .expect("list")
                    .into_iter()
                    .map(|k| k.label.to_string())
                    .collect();
                assert_eq!(listed, ["device-ed25519", "device-identity"]);
                assert!(matches!(
                    store.delete(&label(SEAL_KEY_LABEL)),
                    Err(Error::KeyNotFound { .. })
                ));
                assert!(matches!(
                    store.generate(&label(SEAL_KEY_LABEL), Algorithm::EcdsaP256Sha256),
                    Err(Error::KeyExists { .. })
                ));
            },
        );
    }

    #[test]
    fn shared_between_threads_and_recovers_from_logout() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let store = Arc::new(open(&hsm.uri()));
                let l = label("threads");
                let public = store
                    .generate(&l, Algorithm::EcdsaP256Sha256)
                    .expect("generate");
                let threads: Vec<_> = (0..8)
                    .map(|i| {
                        let store = Arc::clone(&store);
                        let l = l.clone();
                        std::thread::spawn(move || {
                            let message = format!("message {i}");
                            (
                                message.clone(),
                                store.sign(&l, message.as_bytes()).expect("sign"),
                            )
                        })
                    })
                    .collect();
                for t in threads {
                    let (message, signature) = t.join().expect("thread");
                    assert!(keys_conformance::verify(
                        &public,
                        message.as_bytes(),
                        &signature
                    ));
                }

                // Log the whole process out of the token behind the
                // store's back (C_Logout applies to every session of the
                // application): the store must log in again.
                let ctx = cryptoki::context::Pkcs11::new(hsm.module_path()).expect("load module");
                let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
                    cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
                ));
                let slot = ctx
                    .get_slots_with_initialized_token()
                    .expect("slots")
                    .into_iter()
                    .find(|s| {
                        ctx.get_token_info(*s)
                            .map(|t| t.label() == "bulwark")
                            .unwrap_or(false)
                    })
                    .expect("the token's slot");
                let session = ctx.open_ro_session(slot).expect("session");
                session.logout().expect("log out");
                let signature = store.sign(&l, b"after logout").expect("sign after logout");
                assert!(keys_conformance::verify(
                    &public,
                    b"after logout",
                    &signature
                ));
            },
        );
    }

    #[test]
    fn seal_limits() {
        isolated(
            || SoftHsm::new("bulwark"),
            |hsm| {
                let store = open(&hsm.uri());
                let err = store
                    .seal(&[0u8; SealedSecret::MAX_PLAINTEXT + 1])
                    .expect_err("too long");
                assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
                let empty = store.seal(b"").expect("seal nothing");
                assert!(store.unseal(&empty).expect("unseal nothing").is_empty());
                // Every single-bit flip anywhere in the blob is caught.
                let sealed = store.seal(b"0123456789abcdef").expect("seal");
                for i in 0..sealed.0.len() {
                    let mut bad = sealed.clone();
                    bad.0[i] ^= 0x40;
                    assert!(
                        store.unseal(&bad).is_err(),
                        "flip at byte {i} went unnoticed"
                    );
                }
                // Two seals of one secret differ (fresh data key and nonce).
                assert_ne!(
                    store.seal(b"same").expect("seal"),
                    store.seal(b"same").expect("seal")
                );
            },
        );
    }
}

/// tpm2-pkcs11 1.9 on swtpm: ECDSA P-256 only; sealing through RSA-OAEP.
mod tpm2_pkcs11 {
    use super::*;

    #[test]
    fn conformance() {
        isolated(
            || Tpm2Pkcs11::new("bulwark-tpm"),
            |tpm| {
                let uri = tpm.uri();
                let algorithms = open(&uri).algorithms();
                assert_eq!(algorithms, [Algorithm::EcdsaP256Sha256]);
                let open_admin = || -> Arc<dyn KeyAdmin> { Arc::new(open(&uri)) };
                keys_conformance::run_all(&keys_conformance::Suite {
                    open: &open_admin,
                    algorithms: &algorithms,
                    secrets: &[tpm.pin(), tpm.so_pin()],
                    label_prefix: "conf",
                });
            },
        );
    }

    #[test]
    fn errors_info_and_attributes() {
        isolated(
            || Tpm2Pkcs11::new("bulwark-tpm"),
            |tpm| {
                let wrong = "wrong-tpm-pin-8642";
                let err = open_error(&format!(
                    "pkcs11:token=bulwark-tpm?module-path={}&pin-value={wrong}",
                    tpm.module_path().display()
                ));
                assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
                let text = format!("{err} {err:?}");
                assert!(text.contains("\"bulwark-tpm\""), "{text}");
                assert!(!text.contains(wrong) && !text.contains(tpm.pin()), "{text}");

                let err = open_error(&format!(
                    "pkcs11:token=absent?module-path={}&pin-value={}",
                    tpm.module_path().display(),
                    tpm.pin()
                ));
                assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

                let store = open(&tpm.uri());
                let info = store.info();
                // swtpm is IBM's software TPM: not hardware, whatever the
                // module in front of it.
                assert!(!info.hardware_backed, "{info:?}");
                assert_eq!(info.class, CapabilityClass::Basic);
                assert!(info.description.contains("IBM SW TPM"), "{info:?}");

                let l = label("tpm-identity");
                let public = store
                    .generate(&l, Algorithm::EcdsaP256Sha256)
                    .expect("generate");
                let signature = store.sign(&l, b"hello").expect("sign");
                assert!(keys_conformance::verify(&public, b"hello", &signature));
                let sealed = store.seal(b"tpm secret").expect("seal");
                assert_eq!(&store.unseal(&sealed).expect("unseal")[..], b"tpm secret");

                // The token's own view of the private key, through a second
                // context on the module (pkcs11-tool cannot look from
                // outside: the module holds swtpm's only connection).
                let ctx = cryptoki::context::Pkcs11::new(tpm.module_path()).expect("load module");
                let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
                    cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
                ));
                let slot = ctx.get_slots_with_initialized_token().expect("slots")[0];
                let session = ctx.open_ro_session(slot).expect("session");
                use cryptoki::object::{Attribute, AttributeType, ObjectClass};
                let private = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Label(l.as_str().as_bytes().to_vec()),
                    ])
                    .expect("find the private key");
                assert_eq!(private.len(), 1);
                let attributes = session
                    .get_attributes(
                        private[0],
                        &[
                            AttributeType::Token,
                            AttributeType::Private,
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::Sign,
                            AttributeType::Derive,
                        ],
                    )
                    .expect("attributes");
                for expected in [
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    // tpm2-pkcs11 insists on CKA_DECRYPT for EC keys (inert:
                    // PKCS#11 has no EC decryption) but lets us rule out ECDH.
                    Attribute::Derive(false),
                ] {
                    assert!(
                        attributes.contains(&expected),
                        "{expected:?} not in {attributes:?}"
                    );
                }
            },
        );
    }
}
