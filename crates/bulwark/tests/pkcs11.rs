//! The command line with keys in a PKCS#11 token (SoftHSM2): the CA's keys
//! in the token, a device key in the token, and the failures a user meets.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use testkit::softhsm::SoftHsm;

use crate::common::*;

fn pin_file(dir: &Path, pin: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pin");
    std::fs::write(&path, pin).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn uri(hsm: &SoftHsm, pin: &Path) -> String {
    format!(
        "pkcs11:token={}?module-path={}&pin-source=file:{}",
        hsm.token_label(),
        hsm.module_path().display(),
        pin.display()
    )
}

fn run(hsm: &SoftHsm, state: &Path, args: &[&str]) -> Output {
    let conf = hsm.conf_path();
    bulwark_env(
        state,
        args,
        &[("SOFTHSM2_CONF", conf.as_os_str() as &OsStr)],
    )
}

fn ok_hsm(hsm: &SoftHsm, state: &Path, args: &[&str]) -> String {
    let out = run(hsm, state, args);
    assert!(
        out.status.success(),
        "bulwark {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err_hsm(hsm: &SoftHsm, state: &Path, args: &[&str]) -> String {
    let out = run(hsm, state, args);
    assert!(!out.status.success(), "bulwark {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ca_keys_in_a_token_issue_verifiable_units() {
    let hsm = SoftHsm::new("acme-ca");
    let dir = tempfile::tempdir().unwrap();
    let spec = uri(&hsm, &pin_file(dir.path(), hsm.pin()));
    let ca = dir.path().join("ca");
    let ca_str = ca.to_str().unwrap();
    ok_hsm(
        &hsm,
        dir.path(),
        &[
            "ca",
            "init",
            "--dir",
            ca_str,
            "--organization",
            "Acme",
            "--keystore",
            &spec,
        ],
    );
    assert!(
        !ca.join("keystore/software").exists(),
        "CA keys left the token"
    );
    let state = dir.path().join("unit");
    ok_hsm(
        &hsm,
        &state,
        &[
            "provision",
            "--ca",
            ca_str,
            "--serial",
            "P-1",
            "--model",
            "M",
        ],
    );
    openssl_verify(&ca, &state.join("identity/device.pem"));
    let listed = ok_hsm(&hsm, dir.path(), &["keys", "list", "--keystore", &spec]);
    assert!(
        listed.contains("ca-root") && listed.contains("ca-issuing"),
        "{listed}"
    );
}

#[test]
fn device_key_in_a_token() {
    let hsm = SoftHsm::new("device-tok");
    let dir = tempfile::tempdir().unwrap();
    let spec = uri(&hsm, &pin_file(dir.path(), hsm.pin()));
    let ca = dir.path().join("ca");
    let ca_str = ca.to_str().unwrap();
    ok(
        dir.path(),
        &["ca", "init", "--dir", ca_str, "--organization", "Acme"],
    );
    let state = dir.path().join("unit");
    ok_hsm(
        &hsm,
        &state,
        &[
            "provision",
            "--ca",
            ca_str,
            "--serial",
            "P-2",
            "--model",
            "M",
            "--keystore",
            &spec,
        ],
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok_hsm(&hsm, &state, &["identity", "show", "--json"])).unwrap();
    assert_eq!(shown["keystore"]["backend"], "pkcs11");
    assert_eq!(shown["key_matches_certificate"], true);
    // SoftHSM2 is a software token: it must not claim class 2.
    assert_eq!(shown["keystore"]["class"], "Basic");
    let out = ok_hsm(&hsm, &state, &["log", "verify"]);
    assert!(out.contains("event log intact"), "{out}");
}

#[test]
fn wrong_pin_missing_token_and_bad_uri_are_named() {
    let hsm = SoftHsm::new("errs");
    let dir = tempfile::tempdir().unwrap();
    let wrong = pin_file(dir.path(), "99999999");
    let spec = uri(&hsm, &wrong);
    let err = err_hsm(&hsm, dir.path(), &["keys", "list", "--keystore", &spec]);
    assert!(
        err.contains("authentication failed") && err.contains("errs"),
        "{err}"
    );
    assert!(!err.contains("99999999"), "PIN echoed: {err}");

    let missing = spec.replace("token=errs", "token=nope");
    let err = err_hsm(&hsm, dir.path(), &["keys", "list", "--keystore", &missing]);
    assert!(err.contains("nope") || err.contains("no token"), "{err}");

    let err = err_hsm(
        &hsm,
        dir.path(),
        &[
            "keys",
            "list",
            "--keystore",
            "pkcs11:tokn=x?pin-value=424242",
        ],
    );
    assert!(err.contains("tokn") && !err.contains("424242"), "{err}");

    let no_module = "pkcs11:token=errs?module-path=/nonexistent/libp11.so&pin-value=1";
    let err = err_hsm(&hsm, dir.path(), &["keys", "list", "--keystore", no_module]);
    assert!(err.contains("/nonexistent/libp11.so"), "{err}");
}
