//! Integration tests of the manufacturer CA, provisioning and TLS, on the
//! software keystore (the TPM and PKCS#11 cases run from the `bulwark`
//! crate, which links every backend).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use identity::ca::ManufacturerCa;
use identity::provision::{self, ProvisionRequest};
use identity::secret::SetupSecret;
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};

struct Factory {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    ca: ManufacturerCa,
    ca_keys: Arc<SoftKeyStore>,
}

fn soft(path: &Path) -> Arc<SoftKeyStore> {
    Arc::new(SoftKeyStore::open(path, KekProtection::File).unwrap())
}

fn factory() -> Factory {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let ca_keys = soft(&root.join("ca-keys"));
    for l in ["root", "issuing"] {
        ca_keys
            .generate(&l.parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
    }
    let store: Arc<dyn KeyStore> = ca_keys.clone();
    let root_key = KeyRef::new(store.clone(), "root".parse().unwrap()).unwrap();
    let issuing_key = KeyRef::new(store, "issuing".parse().unwrap()).unwrap();
    let ca =
        ManufacturerCa::create(&root.join("ca"), "Acme Devices", &root_key, issuing_key).unwrap();
    Factory {
        _dir: dir,
        root,
        ca,
        ca_keys,
    }
}

fn request(serial: &str) -> ProvisionRequest {
    ProvisionRequest {
        serial: serial.into(),
        model: "Sensor-1".into(),
        algorithm: Algorithm::EcdsaP256Sha256,
        development: false,
        force: false,
    }
}

fn openssl_verify(ca_dir: &Path, cert_pem: &Path) -> std::process::Output {
    testkit::require_tool("openssl", "openssl");
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca_dir.join("root.pem"))
        .arg("-untrusted")
        .arg(ca_dir.join("issuing.pem"))
        .arg(cert_pem)
        .output()
        .unwrap()
}

// Provisioning: uniqueness, all-or-nothing, refusal to re-provision.
mod provisioning {
    use super::*;

    #[test]
    fn two_units_share_nothing_and_verify_with_openssl() {
        let f = factory();
        let mut seen = Vec::new();
        for (n, serial) in ["SN-0001", "SN-0002"].iter().enumerate() {
            let state = f.root.join(format!("unit{n}"));
            let keys = soft(&state.join("keystore"));
            let unit =
                provision::provision(&f.ca, keys.as_ref(), &state, &request(serial)).unwrap();
            let out = openssl_verify(&f.root.join("ca"), &state.join("identity/device.pem"));
            assert!(
                out.status.success(),
                "openssl verify: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let summary = identity::x509::summarize(&unit.certificate).unwrap();
            assert_eq!(summary.unit_serial.as_deref(), Some(*serial));
            assert!(
                summary
                    .uris
                    .contains(&format!("urn:uuid:{}", unit.record.device_id))
            );
            assert!(
                summary.not_after.starts_with("9999-12-31"),
                "{}",
                summary.not_after
            );
            // The setup secret is not stored, only its hash.
            let record = std::fs::read_to_string(state.join("identity/device.json")).unwrap();
            assert!(!record.contains(unit.setup_secret.expose()));
            assert!(
                SetupSecret::parse(unit.setup_secret.expose())
                    .unwrap()
                    .matches(&unit.record.setup_secret_hash)
            );
            seen.push((
                unit.record.device_id.clone(),
                unit.record.serial.clone(),
                unit.record.public_key_sha256.clone(),
                unit.setup_secret.expose().to_owned(),
                summary.certificate_serial,
            ));
        }
        let (a, b) = (&seen[0], &seen[1]);
        assert_ne!(a.0, b.0, "device identifiers collide");
        assert_ne!(a.1, b.1);
        assert_ne!(a.2, b.2, "device keys collide");
        assert_ne!(a.3, b.3, "setup secrets collide");
        assert_ne!(a.4, b.4, "certificate serials collide");
        let registry = f.ca.registry().lock().unwrap();
        assert_eq!(registry.units().len(), 2);
    }

    #[test]
    fn reprovisioning_is_refused_unless_forced() {
        let f = factory();
        let state = f.root.join("unit");
        let keys = soft(&state.join("keystore"));
        let first = provision::provision(&f.ca, keys.as_ref(), &state, &request("SN-1")).unwrap();
        let err = provision::provision(&f.ca, keys.as_ref(), &state, &request("SN-1")).unwrap_err();
        assert!(
            matches!(err, identity::Error::AlreadyProvisioned { .. }),
            "{err}"
        );
        assert_eq!(
            keys.list().unwrap().len(),
            1,
            "a refused provisioning left a key"
        );
        let mut forced = request("SN-1");
        forced.force = true;
        let second = provision::provision(&f.ca, keys.as_ref(), &state, &forced).unwrap();
        assert_ne!(first.record.device_id, second.record.device_id);
        let left: Vec<_> = keys.list().unwrap().into_iter().map(|k| k.label).collect();
        assert_eq!(
            left,
            vec![second.record.key_label.clone()],
            "old key not deleted"
        );
        assert_eq!(provision::load(&state).unwrap().record, second.record);
    }

    #[test]
    fn a_serial_is_issued_once() {
        let f = factory();
        let a = f.root.join("a");
        let b = f.root.join("b");
        let keys_b = soft(&b.join("keystore"));
        provision::provision(
            &f.ca,
            soft(&a.join("keystore")).as_ref(),
            &a,
            &request("SN-9"),
        )
        .unwrap();
        let err = provision::provision(&f.ca, keys_b.as_ref(), &b, &request("SN-9")).unwrap_err();
        assert!(
            matches!(err, identity::Error::DuplicateSerial { .. }),
            "{err}"
        );
        assert!(
            keys_b.list().unwrap().is_empty(),
            "failed provisioning left a key"
        );
        assert!(!b.join("identity").exists());
    }

    #[test]
    fn bad_serial_is_refused_before_anything_is_made() {
        let f = factory();
        let state = f.root.join("unit");
        let keys = soft(&state.join("keystore"));
        for bad in ["", "SN\n1", "SN;rm -rf", &"X".repeat(65)] {
            let err =
                provision::provision(&f.ca, keys.as_ref(), &state, &request(bad)).unwrap_err();
            assert!(err.to_string().contains("serial number"), "{err}");
        }
        assert!(keys.list().unwrap().is_empty());
        assert!(!state.join("identity").exists());
    }

    #[test]
    fn failure_after_key_generation_removes_the_key() {
        let f = factory();
        let state = f.root.join("unit");
        let keys = soft(&state.join("keystore"));
        // The issuing key vanishing makes certificate signing fail after
        // the device key exists.
        f.ca_keys.delete(&"issuing".parse().unwrap()).unwrap();
        let err = provision::provision(&f.ca, keys.as_ref(), &state, &request("SN-5"));
        assert!(err.is_err());
        assert!(
            keys.list().unwrap().is_empty(),
            "half-provisioned key left behind"
        );
        assert!(!state.join("identity").exists());
        assert!(f.ca.registry().lock().unwrap().units().is_empty());
    }

    #[test]
    fn a_crash_mid_provisioning_leaves_no_orphan_key() {
        let f = factory();
        let state = f.root.join("unit");
        let keys = soft(&state.join("keystore"));
        // What a power cut right after key generation leaves behind.
        let orphan: keys::KeyLabel = "idevid-deadbeef".parse().unwrap();
        keys.generate(&orphan, Algorithm::EcdsaP256Sha256).unwrap();
        std::fs::create_dir_all(state.join("identity.staging")).unwrap();
        std::fs::write(
            state.join("identity.staging/pending-key-label"),
            orphan.as_str(),
        )
        .unwrap();
        let unit = provision::provision(&f.ca, keys.as_ref(), &state, &request("SN-6")).unwrap();
        let left: Vec<_> = keys.list().unwrap().into_iter().map(|k| k.label).collect();
        assert_eq!(
            left,
            vec![unit.record.key_label.clone()],
            "orphan key survived"
        );
        assert!(!state.join("identity.staging").exists());
        assert!(!state.join("identity/pending-key-label").exists());
    }

    #[test]
    fn label_file_is_private_and_complete() {
        let f = factory();
        let state = f.root.join("unit");
        let keys = soft(&state.join("keystore"));
        let unit = provision::provision(&f.ca, keys.as_ref(), &state, &request("SN-7")).unwrap();
        let label = f.root.join("label.txt");
        provision::write_label(&label, &unit).unwrap();
        let text = std::fs::read_to_string(&label).unwrap();
        for field in [
            unit.record.device_id.as_str(),
            &unit.record.certificate_sha256,
            unit.setup_secret.expose(),
        ] {
            assert!(text.contains(field), "label lacks {field}");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&label).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!format!("{unit:?}").contains(unit.setup_secret.expose()));
    }

    #[test]
    fn tampered_certificate_is_detected_on_load() {
        let f = factory();
        let state = f.root.join("unit");
        let keys = soft(&state.join("keystore"));
        provision::provision(&f.ca, keys.as_ref(), &state, &request("SN-8")).unwrap();
        std::fs::copy(
            f.root.join("ca/issuing.pem"),
            state.join("identity/device.pem"),
        )
        .unwrap();
        let err = provision::load(&state).unwrap_err();
        assert!(err.to_string().contains("device.pem"), "{err}");
    }
}

// The CA: loading checks the key, and refuses to overwrite.
mod ca {
    use super::*;

    #[test]
    fn load_refuses_a_key_that_is_not_the_issuing_key() {
        let f = factory();
        let other = soft(&f.root.join("other"));
        other
            .generate(&"x".parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
        let store: Arc<dyn KeyStore> = other;
        let key = KeyRef::new(store, "x".parse().unwrap()).unwrap();
        let err = ManufacturerCa::load(&f.root.join("ca"), key.clone()).unwrap_err();
        assert!(err.to_string().contains("not the key certified"), "{err}");
        let again =
            ManufacturerCa::create(&f.root.join("ca"), "Acme", &key, key.clone()).unwrap_err();
        assert!(
            again.to_string().contains("refusing to overwrite"),
            "{again}"
        );
    }
}
