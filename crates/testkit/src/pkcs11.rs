//! PKCS#11 test plumbing: running a test body in its own process, and a
//! tpm2-pkcs11 token on a private swtpm.
//!
//! PKCS#11 modules keep process-wide state that tests cannot reset:
//! `C_Initialize` works once per process, SoftHSM2 reads `SOFTHSM2_CONF`
//! and tpm2-pkcs11 reads `TPM2_PKCS11_STORE` / `TPM2_PKCS11_TCTI` then, and
//! neither sees tokens created afterwards. [`isolated`] therefore prepares
//! a fixture in the test process and runs the test body in a child process
//! of the same test binary (only that one test, `--exact`) with the
//! fixture's environment. The parent fails if the child fails or did not
//! run exactly one test, so a misnamed test cannot pass vacuously.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::swtpm::Swtpm;
use crate::{require_tool, wait_until};

/// Set in the child to the test it runs, and to the fixture it attaches.
const CHILD_TEST: &str = "BULWARK_TESTKIT_CHILD_TEST";
const CHILD_FIXTURE: &str = "BULWARK_TESTKIT_CHILD_FIXTURE";
const HANDOFF_FILE: &str = "testkit-fixture.txt";

/// A fixture that can be created in a test process and used from a child.
pub trait Isolated: Sized {
    /// Environment variables the child process must start with.
    fn child_env(&self) -> Vec<(String, OsString)>;
    /// A directory from which [`Isolated::attach`] rebuilds the fixture.
    fn handoff(&self) -> PathBuf;
    /// The fixture as seen from the child: same tokens, no ownership.
    fn attach(handoff: &Path) -> Self;
}

/// Runs `body` with the fixture `setup` creates, in a child process that
/// starts with the fixture's environment. Call it from a `#[test]`
/// function; in the parent it returns once the child passed (and panics
/// with the child's output otherwise), in the child it runs `body`.
pub fn isolated<F: Isolated>(setup: impl FnOnce() -> F, body: impl FnOnce(&F)) {
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|n| *n != "main")
        .expect("isolated() runs inside a #[test] (libtest names its thread after the test)")
        .to_owned();
    if let Some(child_test) = std::env::var_os(CHILD_TEST) {
        // Never spawn from a child: a mismatch would recurse.
        assert_eq!(
            child_test.to_str(),
            Some(test.as_str()),
            "child process started for another test"
        );
        let handoff = std::env::var_os(CHILD_FIXTURE).expect("the parent names the fixture");
        body(&F::attach(Path::new(&handoff)));
        return;
    }
    let fixture = setup();
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new(exe);
    child
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_TEST, &test)
        .env(CHILD_FIXTURE, fixture.handoff())
        .stdin(Stdio::null());
    for (name, value) in fixture.child_env() {
        child.env(name, value);
    }
    let out = child.output().expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("---- child process of {test}: stdout ----\n{stdout}\n---- stderr ----\n{stderr}");
    assert!(
        out.status.success(),
        "{test} failed in its child process ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child process did not run exactly the test {test}"
    );
    drop(fixture);
}

/// Writes `key=value` lines for [`read_handoff`].
pub(crate) fn write_handoff(dir: &Path, fields: &[(&str, &str)]) {
    let text: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(dir.join(HANDOFF_FILE), text).expect("write the fixture hand-off file");
}

/// Reads what [`write_handoff`] wrote; the returned function panics on a
/// missing field.
pub(crate) fn read_handoff(dir: &Path) -> impl Fn(&str) -> String {
    let text =
        std::fs::read_to_string(dir.join(HANDOFF_FILE)).expect("read the fixture hand-off file");
    move |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("fixture hand-off lacks {key}"))
            .to_owned()
    }
}

/// Where Debian's `libtpm2-pkcs11-1` installs the module.
pub const TPM2_PKCS11_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

/// Debian's `tpm2-abrmd` daemon and the TCTI library that reaches it.
const TABRMD: &str = "/usr/sbin/tpm2-abrmd";
const TABRMD_TCTI_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0";

/// The TCTI of a tpm2-abrmd on the session bus.
const TABRMD_TCTI: &str = "tabrmd:bus_type=session";

/// A private D-Bus session bus with a tpm2-abrmd resource manager on it,
/// in front of one swtpm. Both are killed on drop.
#[derive(Debug)]
struct Broker {
    abrmd: Child,
    dbus: Child,
    address: String,
}

impl Broker {
    fn start(tpm: &Swtpm, dir: &Path) -> Self {
        require_tool("dbus-daemon", "dbus-daemon");
        require_tool(TABRMD, "tpm2-abrmd");
        require_tool(TABRMD_TCTI_LIBRARY, "libtss2-tcti-tabrmd0");
        require_tool("tpm2_getcap", "tpm2-tools");
        let socket = dir.join("bus");
        let address = format!("unix:path={}", socket.display());
        let log = |name: &str| {
            std::fs::File::create(dir.join(name)).map_or_else(|_| Stdio::null(), Stdio::from)
        };
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .stdin(Stdio::null())
            .stdout(log("dbus.log"))
            .stderr(log("dbus.err"))
            .spawn()
            .expect("spawn dbus-daemon");
        let abrmd = if wait_until(Duration::from_secs(10), || socket.exists()) {
            Command::new(TABRMD)
                .args(["--session", "--allow-root"])
                .arg(format!("--tcti={}", tpm.tcti()))
                .env("DBUS_SESSION_BUS_ADDRESS", &address)
                .stdin(Stdio::null())
                .stdout(log("abrmd.log"))
                .stderr(log("abrmd.err"))
                .spawn()
        } else {
            Err(std::io::Error::other(format!(
                "dbus-daemon did not create {}",
                socket.display()
            )))
        };
        let abrmd = match abrmd {
            Ok(abrmd) => abrmd,
            Err(e) => {
                let _ = dbus.kill();
                let _ = dbus.wait();
                panic!("cannot start tpm2-abrmd: {e}");
            }
        };
        // From here on, dropping the broker stops both daemons.
        let broker = Self {
            abrmd,
            dbus,
            address,
        };
        // Ready once a TPM command goes through it.
        let up = wait_until(Duration::from_secs(10), || {
            Command::new("tpm2_getcap")
                .arg("properties-fixed")
                .env("TPM2TOOLS_TCTI", TABRMD_TCTI)
                .env("DBUS_SESSION_BUS_ADDRESS", &broker.address)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(
            up,
            "tpm2-abrmd did not come up: {}",
            std::fs::read_to_string(dir.join("abrmd.err")).unwrap_or_default()
        );
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for child in [&mut self.abrmd, &mut self.dbus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tpm2-pkcs11 token on a private swtpm: the swtpm, a tpm2-abrmd
/// resource manager on a private D-Bus, a store directory
/// (`TPM2_PKCS11_STORE`) and one token made with `tpm2_ptool`.
///
/// Why a resource manager: swtpm holds 3 transient objects, and without a
/// resource manager (as behind `/dev/tpmrm0` or tpm2-abrmd on a device)
/// nothing swaps them out. Measured with tpm2-pkcs11 1.9.0 straight on
/// swtpm: `tpm2_ptool addtoken` fails with `TPM_RC_OBJECT_MEMORY`, and a
/// logged-in session can generate one key, the second fails. Through
/// tpm2-abrmd both work, and the broker also lets several clients share
/// the swtpm, which serves one connection at a time.
#[derive(Debug)]
pub struct Tpm2Pkcs11 {
    // Field order is drop order: broker, then TPM, then directories.
    _broker: Option<Broker>,
    _tpm: Option<Swtpm>,
    _dir: Option<TempDir>,
    store: PathBuf,
    dbus_address: String,
    label: String,
    pin: String,
    so_pin: String,
}

impl Tpm2Pkcs11 {
    /// Starts a swtpm and its broker and creates a token labelled `label`
    /// in a fresh store. Panics (test failure) if a component is missing.
    pub fn new(label: &str) -> Self {
        require_tool(TPM2_PKCS11_MODULE, "libtpm2-pkcs11-1");
        require_tool("tpm2_ptool", "libtpm2-pkcs11-tools");
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().expect("temporary directory for tpm2-pkcs11");
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("tpm2-pkcs11 store directory");
        let broker = Broker::start(&tpm, dir.path());
        let fixture = Self {
            dbus_address: broker.address.clone(),
            _broker: Some(broker),
            _tpm: Some(tpm),
            _dir: Some(dir),
            store,
            label: label.to_owned(),
            pin: format!("tpm-user-pin-{}", std::process::id()),
            so_pin: "tpm-so-pin-1357".to_owned(),
        };
        let path = format!("--path={}", fixture.store.display());
        let init = fixture.ptool(&["init", &path]);
        let primary = init
            .lines()
            .find_map(|line| line.trim().strip_prefix("id:"))
            .map(|id| id.trim().to_owned())
            .unwrap_or_else(|| panic!("tpm2_ptool init printed no primary id: {init}"));
        fixture.ptool(&[
            "addtoken",
            &format!("--pid={primary}"),
            &format!("--label={label}"),
            &format!("--sopin={}", fixture.so_pin),
            &format!("--userpin={}", fixture.pin),
            &path,
        ]);
        write_handoff(
            &fixture.store,
            &[
                ("dbus", &fixture.dbus_address),
                ("label", &fixture.label),
                ("pin", &fixture.pin),
                ("so_pin", &fixture.so_pin),
            ],
        );
        fixture
    }

    fn ptool(&self, args: &[&str]) -> String {
        let out = Command::new("tpm2_ptool")
            .args(args)
            .envs(self.child_env())
            .env("TPM2TOOLS_TCTI", TABRMD_TCTI)
            .output()
            .expect("run tpm2_ptool");
        assert!(
            out.status.success(),
            "tpm2_ptool {} failed: {}{}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        Path::new(TPM2_PKCS11_MODULE)
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// The user PIN.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The security officer PIN.
    pub fn so_pin(&self) -> &str {
        &self.so_pin
    }

    /// The tpm2-pkcs11 store directory (`TPM2_PKCS11_STORE`).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// A token URI with the PIN inline.
    pub fn uri(&self) -> String {
        format!(
            "pkcs11:token={}?module-path={TPM2_PKCS11_MODULE}&pin-value={}",
            self.label, self.pin
        )
    }
}

impl Isolated for Tpm2Pkcs11 {
    fn child_env(&self) -> Vec<(String, OsString)> {
        vec![
            ("TPM2_PKCS11_STORE".into(), self.store.clone().into()),
            ("TPM2_PKCS11_TCTI".into(), TABRMD_TCTI.into()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                self.dbus_address.clone().into(),
            ),
        ]
    }

    fn handoff(&self) -> PathBuf {
        self.store.clone()
    }

    fn attach(store: &Path) -> Self {
        let fields = read_handoff(store);
        Self {
            _broker: None,
            _tpm: None,
            _dir: None,
            store: store.to_path_buf(),
            dbus_address: fields("dbus"),
            label: fields("label"),
            pin: fields("pin"),
            so_pin: fields("so_pin"),
        }
    }
}
