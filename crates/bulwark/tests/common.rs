//! Helpers to run the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn bulwark(state: &Path, args: &[&str]) -> Output {
    bulwark_env(state, args, &[])
}

/// Runs the binary with extra environment (e.g. `SOFTHSM2_CONF`).
pub(crate) fn bulwark_env(state: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("BULWARK_STATE_DIR", state)
        .env("BULWARK_LOG", "debug")
        // libtss2 prints expected failures (a missing handle) on stderr.
        .env("TSS2_LOG", "all+none")
        .output()
        .expect("run bulwark")
}

pub(crate) fn ok(state: &Path, args: &[&str]) -> String {
    let out = bulwark(state, args);
    assert!(
        out.status.success(),
        "bulwark {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn fails(state: &Path, args: &[&str]) -> String {
    let out = bulwark(state, args);
    assert!(!out.status.success(), "bulwark {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value after `name:` on a line of output.
pub(crate) fn field(output: &str, name: &str) -> String {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name:?} in output:\n{output}"))
        .trim()
        .to_owned()
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn openssl_verify(ca: &Path, cert: &Path) {
    testkit::require_tool("openssl", "openssl");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.join("root.pem"))
        .arg("-untrusted")
        .arg(ca.join("issuing.pem"))
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl verify {}: {}{}",
        cert.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
