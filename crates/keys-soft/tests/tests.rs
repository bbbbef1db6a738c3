//! Integration tests of the software keystore: the shared conformance
//! suite, then the properties specific to keys kept in files.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use keys::{Algorithm, Error, KeyAdmin, KeyLabel, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};

fn label(s: &str) -> KeyLabel {
    s.parse().unwrap()
}

// The shared suite, with the KEK in a file and sealed by another store.
mod conformance {
    use super::*;

    #[test]
    fn passes_with_kek_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        let open = || -> Arc<dyn KeyAdmin> {
            Arc::new(SoftKeyStore::open(&path, KekProtection::File).unwrap())
        };
        keys_conformance::run_all(&keys_conformance::Suite {
            open: &open,
            algorithms: &[Algorithm::EcdsaP256Sha256, Algorithm::Ed25519],
            secrets: &[],
            label_prefix: "soft",
        });
    }

    #[test]
    fn passes_with_a_sealed_kek() {
        let dir = tempfile::tempdir().unwrap();
        let sealer: Arc<dyn KeyStore> =
            Arc::new(SoftKeyStore::open(&dir.path().join("sealer"), KekProtection::File).unwrap());
        let path = dir.path().join("ks");
        let open = || -> Arc<dyn KeyAdmin> {
            Arc::new(SoftKeyStore::open(&path, KekProtection::SealedBy(sealer.clone())).unwrap())
        };
        keys_conformance::run_all(&keys_conformance::Suite {
            open: &open,
            algorithms: &[Algorithm::EcdsaP256Sha256, Algorithm::Ed25519],
            secrets: &[],
            label_prefix: "sealed",
        });
        assert!(path.join("kek.sealed").exists());
        assert!(
            !path.join("kek").exists(),
            "a sealed store wrote a plain KEK"
        );
    }
}

// What a file-based store must get right on disk.
mod at_rest {
    use super::*;

    #[test]
    fn files_are_private_and_hold_no_plain_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        store.generate(&label("dev"), Algorithm::Ed25519).unwrap();
        let key_file = path.join("keys/dev.key");
        for p in [&path, &path.join("keys"), &path.join("kek"), &key_file] {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
        }
        let blob = fs::read(&key_file).unwrap();
        // PKCS#8 for Ed25519 starts with this fixed prefix; it must not show.
        let pkcs8_prefix = [0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05];
        assert!(!blob.windows(7).any(|w| w == pkcs8_prefix));
        assert_eq!(store.info().class, keys::CapabilityClass::Basic);
        assert!(store.info().description.contains("class 1 only"));
    }

    #[test]
    fn swapped_key_files_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        store
            .generate(&label("a"), Algorithm::EcdsaP256Sha256)
            .unwrap();
        store
            .generate(&label("b"), Algorithm::EcdsaP256Sha256)
            .unwrap();
        drop(store);
        fs::copy(path.join("keys/a.key"), path.join("keys/b.key")).unwrap();
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        let err = store.sign(&label("b"), b"x").unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("b.key"), "{err}");
    }

    #[test]
    fn corrupt_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        store
            .generate(&label("k"), Algorithm::EcdsaP256Sha256)
            .unwrap();
        drop(store);
        let file = path.join("keys/k.key");
        let mut blob = fs::read(&file).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 0xff;
        fs::write(&file, &blob).unwrap();
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        let err = store.public_key(&label("k")).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("k.key"), "{err}");
        fs::write(&file, b"short").unwrap();
        assert!(matches!(
            store.sign(&label("k"), b""),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn another_kek_cannot_read_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        store
            .generate(&label("k"), Algorithm::EcdsaP256Sha256)
            .unwrap();
        drop(store);
        fs::remove_file(path.join("kek")).unwrap();
        let store = SoftKeyStore::open(&path, KekProtection::File).unwrap();
        assert!(matches!(
            store.sign(&label("k"), b""),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn open_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks");
        drop(SoftKeyStore::open(&path, KekProtection::File).unwrap());
        fs::set_permissions(path.join("kek"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = SoftKeyStore::open(&path, KekProtection::File).unwrap_err();
        assert!(err.to_string().contains("kek"), "{err}");
        assert!(err.to_string().contains("0644"), "{err}");
    }

    #[test]
    fn sealed_store_is_not_downgraded_to_a_file_kek() {
        let dir = tempfile::tempdir().unwrap();
        let sealer: Arc<dyn KeyStore> =
            Arc::new(SoftKeyStore::open(&dir.path().join("sealer"), KekProtection::File).unwrap());
        let path = dir.path().join("ks");
        drop(SoftKeyStore::open(&path, KekProtection::SealedBy(sealer)).unwrap());
        let err = SoftKeyStore::open(&path, KekProtection::File).unwrap_err();
        assert!(err.to_string().contains("sealed by a TPM"), "{err}");
        assert!(!path.join("kek").exists());
    }

    #[test]
    fn sealed_kek_needs_the_sealer() {
        let dir = tempfile::tempdir().unwrap();
        let sealer: Arc<dyn KeyStore> =
            Arc::new(SoftKeyStore::open(&dir.path().join("s1"), KekProtection::File).unwrap());
        let other: Arc<dyn KeyStore> =
            Arc::new(SoftKeyStore::open(&dir.path().join("s2"), KekProtection::File).unwrap());
        let path = dir.path().join("ks");
        drop(SoftKeyStore::open(&path, KekProtection::SealedBy(sealer)).unwrap());
        let err = SoftKeyStore::open(&path, KekProtection::SealedBy(other)).unwrap_err();
        assert!(matches!(err, Error::UnsealFailed { .. }), "{err:?}");
    }
}
