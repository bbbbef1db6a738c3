//! SoftHSM2 tokens for tests.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, in `C_Initialize`, and a process
//! initialises a PKCS#11 module once. Measured with SoftHSM 2.6.1: a token
//! that `softhsm2-util` initialises after the library was initialised is
//! *not* seen by that process (its slot list is fixed until
//! `C_Finalize` + `C_Initialize`, which would end every other session).
//! Setting the variable from a test would need `unsafe` (`set_var` in a
//! threaded test binary). So a [`SoftHsm`] is meant to be used with
//! [`crate::pkcs11::isolated`]: the test process creates the token
//! directory and tokens, and the test body runs in a child process of the
//! test binary started with `SOFTHSM2_CONF` pointing at them. Each test
//! gets its own tokens and its own library state, and tests still run in
//! parallel.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::pkcs11::{Isolated, read_handoff, write_handoff};
use crate::require_tool;

/// Where Debian's `softhsm2` package installs the PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Security-officer PIN of every fixture token.
const SO_PIN: &str = "so-pin-87654321";

/// A SoftHSM2 token directory with one initialised token (more with
/// [`SoftHsm::add_token`]); deleted on drop by the process that created it.
#[derive(Debug)]
pub struct SoftHsm {
    /// Owned by the creating process only; a child attaches without it.
    _dir: Option<TempDir>,
    root: PathBuf,
    label: String,
    pin: String,
}

impl SoftHsm {
    /// A fresh token directory and `softhsm2.conf`, and a token labelled
    /// `label` with a user PIN unlikely to occur in any other text.
    /// Panics (test failure) if `softhsm2-util` or the module is missing.
    pub fn new(label: &str) -> Self {
        require_tool("softhsm2-util", "softhsm2");
        require_tool(MODULE, "softhsm2");
        let dir = tempfile::tempdir().expect("temporary directory for SoftHSM2");
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join("tokens")).expect("SoftHSM2 token directory");
        std::fs::write(
            root.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                root.join("tokens").display()
            ),
        )
        .expect("write softhsm2.conf");
        let pin = format!("user-pin-{}", std::process::id());
        let hsm = Self {
            _dir: Some(dir),
            root,
            label: label.to_owned(),
            pin,
        };
        hsm.add_token(label, &hsm.pin);
        write_handoff(&hsm.root, &[("label", &hsm.label), ("pin", &hsm.pin)]);
        hsm
    }

    /// Initialises another token in the same directory. A process that
    /// has already loaded SoftHSM2 does not see it: add tokens before the
    /// test body runs.
    pub fn add_token(&self, label: &str, pin: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.conf_path())
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", pin])
            .output()
            .expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token --label {label} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        Path::new(MODULE)
    }

    /// The first token's label.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// The first token's user PIN.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The security officer PIN of every token.
    pub fn so_pin(&self) -> &str {
        SO_PIN
    }

    /// The `softhsm2.conf` that `SOFTHSM2_CONF` must name.
    pub fn conf_path(&self) -> PathBuf {
        self.root.join("softhsm2.conf")
    }

    /// The directory holding the tokens.
    pub fn token_dir(&self) -> PathBuf {
        self.root.join("tokens")
    }

    /// A token URI with the PIN inline:
    /// `pkcs11:token=LABEL?module-path=MODULE&pin-value=PIN`.
    pub fn uri(&self) -> String {
        format!(
            "pkcs11:token={}?module-path={MODULE}&pin-value={}",
            self.label, self.pin
        )
    }
}

impl Isolated for SoftHsm {
    fn child_env(&self) -> Vec<(String, OsString)> {
        vec![("SOFTHSM2_CONF".into(), self.conf_path().into())]
    }

    fn handoff(&self) -> PathBuf {
        self.root.clone()
    }

    fn attach(root: &Path) -> Self {
        let fields = read_handoff(root);
        Self {
            _dir: None,
            root: root.to_path_buf(),
            label: fields("label"),
            pin: fields("pin"),
        }
    }
}
