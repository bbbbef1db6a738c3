//! Integration tests of log forwarding against a real rsyslog receiving
//! RFC 5425 (TLS, octet counting) on loopback, with mutual authentication
//! through certificates from the manufacturer CA. Modules: `delivery`
//! (order, exactly-once on the happy path, collector outage, forwarder
//! restart), `format` (what rsyslog parsed), `deidentification`
//! (pseudonymize, strip), `trust` (untrusted or misnamed collector),
//! `integrity` (tampered and rolled-back logs are reported, not skipped).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use identity::ca::{DeviceSubject, ManufacturerCa};
use identity::tls::TlsIdentity;
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore, PublicKey};
use keys_soft::{KekProtection, SoftKeyStore};
use logsync::{Config, Deidentify, Error, Forwarder, PseudonymKey, Shutdown};
use rustls_pki_types::CertificateDer;
use store::Store;
use store::eventlog::{Event, EventLog, Outcome, Severity};

const WAIT: Duration = Duration::from_secs(20);

fn soft(path: &Path) -> Arc<SoftKeyStore> {
    Arc::new(SoftKeyStore::open(path, KekProtection::File).unwrap())
}

/// A manufacturer CA with both keys in a software keystore.
struct Pki {
    ca: ManufacturerCa,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let keys = soft(&dir.join("ca-keys"));
        for l in ["root", "issuing"] {
            keys.generate(&l.parse().unwrap(), Algorithm::EcdsaP256Sha256)
                .unwrap();
        }
        let ks: Arc<dyn KeyStore> = keys;
        let root = KeyRef::new(ks.clone(), "root".parse().unwrap()).unwrap();
        let issuing = KeyRef::new(ks, "issuing".parse().unwrap()).unwrap();
        let ca = ManufacturerCa::create(&dir.join("ca"), "Acme Devices", &root, issuing).unwrap();
        Self { ca }
    }

    fn anchors(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.root().clone()]
    }

    /// Writes the collector's PEM files (rsyslog reads its key from a
    /// file, so this key is made outside any keystore) for `dns_name`.
    fn collector_files(&self, dir: &Path, dns_name: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let spki = keys::encoding::p256_spki_from_point(pair.public_key().as_ref()).unwrap();
        let public = PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, spki);
        let cert = self
            .ca
            .issue_service("collector", &[dns_name], &public, 30)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), identity::x509::to_pem(self.ca.root())).unwrap();
        std::fs::write(
            dir.join("cert.pem"),
            identity::x509::to_pem(&cert) + &identity::x509::to_pem(self.ca.issuing()),
        )
        .unwrap();
        let b64 = data_encoding::BASE64.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        std::fs::write(dir.join("key.pem"), pem).unwrap();
    }
}

/// A device: keystore, store, event log and an IDevID certificate.
struct Device {
    dir: PathBuf,
    keys: Arc<SoftKeyStore>,
    identity: TlsIdentity,
    store: Arc<Store>,
    log: EventLog,
}

impl Device {
    fn new(dir: &Path, pki: &Pki) -> Self {
        let keys = soft(&dir.join("keys"));
        keys.generate(&"device".parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
        let ks: Arc<dyn KeyStore> = keys.clone();
        let key = KeyRef::new(ks, "device".parse().unwrap()).unwrap();
        let cert = pki
            .ca
            .issue_device(
                &DeviceSubject {
                    device_id: "6f1c1d7e-3f55-4c8e-9a57-2f0b6f2b7c11".into(),
                    serial: "SN0042".into(),
                    model: "Sensor-1".into(),
                },
                key.public_key(),
            )
            .unwrap();
        let identity = TlsIdentity {
            chain: vec![cert, pki.ca.issuing().clone()],
            key,
        };
        let (store, log) = open(dir, &keys);
        Self {
            dir: dir.to_path_buf(),
            keys,
            identity,
            store,
            log,
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Closes the log, drops the store and opens both again (a restart).
    fn restart(self) -> Self {
        self.restart_with(|| ())
    }

    /// A restart that runs `while_down` with the log and store closed.
    fn restart_with(self, while_down: impl FnOnce()) -> Self {
        let Self {
            dir,
            keys,
            identity,
            store,
            log,
        } = self;
        log.close().unwrap();
        drop(store);
        while_down();
        let (store, log) = open(&dir, &keys);
        Self {
            dir,
            keys,
            identity,
            store,
            log,
        }
    }

    fn forwarder(&self, config: Config, pki: &Pki) -> Result<Forwarder, Error> {
        Forwarder::new(
            config,
            self.store.clone(),
            &self.log_dir(),
            &self.identity,
            &pki.anchors(),
        )
    }

    /// `n` events alternating between a user and the system.
    fn append(&self, n: usize) {
        for i in 0..n {
            let event = if i % 2 == 0 {
                Event::by_user(
                    "alice-7f3e",
                    Some("192.0.2.77"),
                    Severity::Warning,
                    "login",
                    Outcome::Failure,
                    &format!("attempt {i}"),
                )
            } else {
                Event::system(
                    Severity::Notice,
                    "config.change",
                    Outcome::Success,
                    &format!("change {i}"),
                )
            };
            self.log.append(event).unwrap();
        }
    }
}

fn open(dir: &Path, keys: &Arc<SoftKeyStore>) -> (Arc<Store>, EventLog) {
    let store_dir = dir.join("store");
    let store = Arc::new(Store::open(&store_dir, keys.clone()).unwrap());
    let ks: Arc<dyn KeyStore> = keys.clone();
    let signer = KeyRef::new(ks, "device".parse().unwrap()).unwrap();
    let log = EventLog::open(&store_dir, store.clone(), signer).unwrap();
    (store, log)
}

/// A real rsyslogd receiving RFC 5425 with gtls (mutual X.509 auth) on a
/// loopback port, writing what it receives from `bulwark` to `raw.log`
/// (the message as received) and `parsed.log` (its RFC 5424 fields).
struct Rsyslog {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    /// Starts rsyslogd with the PEM files in `dir` (see
    /// [`Pki::collector_files`]).
    fn start(dir: &Path) -> Self {
        testkit::require_tool("rsyslogd", "rsyslog");
        assert!(
            Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()
                || Path::new("/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so").exists(),
            "this test needs rsyslog's GnuTLS driver: install the Debian package \
             `rsyslog-gnutls` (bash scripts/test.sh installs every test dependency)"
        );
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let d = dir.display();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let conf = format!(
            r#"global(
  workDirectory="{d}/work"
  maxMessageSize="8k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{d}/ca.pem"
  defaultNetstreamDriverCertFile="{d}/cert.pem"
  defaultNetstreamDriverKeyFile="{d}/key.pem"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="parsed" type="string"
         string="%pri%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
if $app-name == "bulwark" then {{
  action(type="omfile" file="{d}/raw.log" template="raw")
  action(type="omfile" file="{d}/parsed.log" template="parsed")
}} else {{
  action(type="omfile" file="{d}/other.log")
}}
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut r = Self {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let stderr = File::create(self.dir.join("stderr.txt")).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = ("127.0.0.1", self.port);
        let ready = testkit::wait_until(WAIT, || {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            exited || TcpStream::connect(addr).is_ok()
        });
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        assert!(
            ready && running,
            "rsyslogd did not start listening on {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default()
        );
    }

    /// Stops rsyslogd with SIGTERM (it flushes its queue) and waits.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let exited = testkit::wait_until(WAIT, || child.try_wait().ok().flatten().is_some());
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same files.
    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn collector(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// The `seq` of every message received, in file order.
    fn seqs(&self) -> Vec<u64> {
        self.read("raw.log")
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("seq=\"")? + 5..];
                rest[..rest.find('"')?].parse().ok()
            })
            .collect()
    }

    /// Waits (bounded) until `n` messages were received; returns their
    /// sequence numbers.
    fn wait_for(&self, n: usize) -> Vec<u64> {
        testkit::wait_until(WAIT, || self.seqs().len() >= n);
        self.seqs()
    }

    /// Waits (bounded) until `name` holds `n` lines: rsyslog writes each
    /// output file on its own schedule, so one file being complete says
    /// nothing about another.
    fn read_lines(&self, name: &str, n: usize) -> String {
        testkit::wait_until(WAIT, || self.read(name).lines().count() >= n);
        self.read(name)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA, a device and a collector trusting that CA.
struct Setup {
    _tmp: tempfile::TempDir,
    pki: Pki,
    device: Device,
    rsyslog: Rsyslog,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    pki.collector_files(&tmp.path().join("collector"), "localhost");
    let rsyslog = Rsyslog::start(&tmp.path().join("collector"));
    let device = Device::new(&tmp.path().join("device"), &pki);
    Setup {
        _tmp: tmp,
        pki,
        device,
        rsyslog,
    }
}

impl Setup {
    fn config(&self) -> Config {
        let mut c = Config::new(&self.rsyslog.collector(), "localhost", "unit-0042");
        c.io_timeout = Duration::from_secs(5);
        c.connect_timeout = Duration::from_secs(2);
        c
    }
}

fn range(n: u64) -> Vec<u64> {
    (0..n).collect()
}

// Delivery: in order, once, through an outage and a restart.
mod delivery {
    use super::*;

    #[test]
    fn every_event_arrives_once_and_in_order() {
        let s = setup();
        s.device.append(30);
        let mut config = s.config();
        config.batch_size = 8;
        let f = s.device.forwarder(config, &s.pki).unwrap();
        let report = f.forward_pending().unwrap();
        assert_eq!((report.sent, report.batches, report.next_seq), (30, 4, 30));
        assert!(!report.more_pending);
        assert_eq!(s.rsyslog.wait_for(30), range(30));

        // Nothing new: nothing sent. New events: only they are sent.
        assert_eq!(f.forward_pending().unwrap().sent, 0);
        s.device.append(5);
        assert_eq!(f.forward_pending().unwrap().sent, 5);
        assert_eq!(s.rsyslog.wait_for(35), range(35));
        assert_eq!(f.status().next_seq, 35);
    }

    #[test]
    fn a_collector_outage_delays_but_loses_nothing() {
        let mut s = setup();
        let mut config = s.config();
        config.poll_interval = Duration::from_millis(50);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(400);
        config.connect_timeout = Duration::from_millis(500);
        let f = s.device.forwarder(config, &s.pki).unwrap();
        let shutdown = Shutdown::new();
        let summary = std::thread::scope(|scope| {
            let runner = scope.spawn(|| f.run_until(&shutdown));
            s.device.append(10);
            assert_eq!(s.rsyslog.wait_for(10), range(10));

            s.rsyslog.stop();
            s.device.append(10);
            let failing = testkit::wait_until(WAIT, || f.status().consecutive_failures >= 3);
            assert!(failing, "the forwarder never noticed the outage");
            assert!(f.status().last_error.is_some());
            assert_eq!(f.status().next_seq, 10, "nothing confirmed while down");
            s.device.append(10);

            s.rsyslog.restart();
            assert_eq!(s.rsyslog.wait_for(30), range(30));
            shutdown.trigger();
            runner.join().unwrap()
        });
        assert_eq!(summary.sent, 30);
        assert!(summary.failures >= 3, "{summary:?}");
        assert_eq!(f.status().consecutive_failures, 0);
    }

    #[test]
    fn a_batch_the_collector_closed_on_unread_is_not_confirmed() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(&tmp.path().join("pki"));
        let device = Device::new(&tmp.path().join("device"), &pki);
        device.append(40);
        for _ in 0..20 {
            let (addr, server) = rude_collector(&pki, tmp.path());
            let mut config = Config::new(&addr, "localhost", "unit-0042");
            config.io_timeout = Duration::from_secs(5);
            let f = device.forwarder(config, &pki).unwrap();
            let err = f.forward_pending().unwrap_err();
            assert!(
                matches!(err, Error::Unconfirmed { .. } | Error::Io { .. }),
                "{err:?}"
            );
            assert_eq!(
                f.status().next_seq,
                0,
                "an unread batch counted as delivered"
            );
            server.join().unwrap();
            std::fs::remove_dir_all(tmp.path().join("collector-keys")).unwrap();
        }
    }

    #[test]
    fn a_forwarder_restart_resumes_from_the_durable_cursor() {
        let Setup {
            _tmp,
            pki,
            device,
            rsyslog,
        } = setup();
        device.append(50);
        let mut config = Config::new(&rsyslog.collector(), "localhost", "unit-0042");
        config.batch_size = 10;
        config.max_batches_per_call = 2;
        {
            let f = device.forwarder(config.clone(), &pki).unwrap();
            let report = f.forward_pending().unwrap();
            assert_eq!((report.sent, report.next_seq), (20, 20));
            assert!(report.more_pending);
        }
        // The whole device restarts: store, log and forwarder reopened.
        let device = device.restart();
        device.append(10);
        let f = device.forwarder(config, &pki).unwrap();
        assert_eq!(f.status().next_seq, 20, "cursor survived the restart");
        let mut passes = 0;
        while f.forward_pending().unwrap().more_pending {
            passes += 1;
            assert!(passes < 10, "forwarding never finished");
        }
        assert_eq!(rsyslog.wait_for(60), range(60));
    }
}

/// A TLS collector (rustls, not rsyslog: rsyslog cannot be told to
/// misbehave) that completes the handshake and then closes without
/// reading the batch. Returns its address.
fn rude_collector(pki: &Pki, dir: &Path) -> (String, std::thread::JoinHandle<()>) {
    let keys = soft(&dir.join("collector-keys"));
    keys.generate(&"collector".parse().unwrap(), Algorithm::EcdsaP256Sha256)
        .unwrap();
    let ks: Arc<dyn KeyStore> = keys;
    let key = KeyRef::new(ks, "collector".parse().unwrap()).unwrap();
    let cert = pki
        .ca
        .issue_service("collector", &["localhost"], key.public_key(), 30)
        .unwrap();
    let identity = TlsIdentity {
        chain: vec![cert, pki.ca.issuing().clone()],
        key,
    };
    let config = Arc::new(identity::tls::server_config(&identity, &pki.anchors()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        // Dropped here: closed with the batch unread.
    });
    (addr, server)
}

// Format: what rsyslog made of the messages.
mod format {
    use super::*;

    #[test]
    fn rsyslog_parses_header_and_escaped_structured_data() {
        let s = setup();
        s.device
            .log
            .append(Event::by_user(
                "alice-7f3e",
                Some("192.0.2.77"),
                Severity::Warning,
                "login",
                Outcome::Failure,
                "wrong password",
            ))
            .unwrap();
        s.device
            .log
            .append(Event::system(
                Severity::Alert,
                r#"odd"]\action"#,
                Outcome::Denied,
                "détail",
            ))
            .unwrap();
        let f = s.device.forwarder(s.config(), &s.pki).unwrap();
        assert_eq!(f.forward_pending().unwrap().sent, 2);
        s.rsyslog.wait_for(2);
        let parsed = s.rsyslog.read_lines("parsed.log", 2);
        let lines: Vec<&str> = parsed.lines().collect();
        assert_eq!(lines.len(), 2, "{parsed}");
        // authpriv (10) * 8 + warning (4) = 84; alert (1) gives 81.
        assert!(
            lines[0].starts_with("84|unit-0042|bulwark|-|login|[bulwark@32473 seq=\"0\""),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(r#"actor="alice-7f3e""#), "{}", lines[0]);
        assert!(lines[0].contains(r#"source="192.0.2.77""#), "{}", lines[0]);
        assert!(lines[0].ends_with("|wrong password"), "{}", lines[0]);
        assert!(
            lines[1].starts_with(r#"81|unit-0042|bulwark|-|odd"]\action|"#),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains(r#"action="odd\"\]\\action""#),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("détail"), "{}", lines[1]);
    }
}

// De-identification: the user's name never reaches the collector.
mod deidentification {
    use super::*;

    fn forward_with(deidentify: Deidentify) -> (Setup, String) {
        let s = setup();
        s.device.append(6);
        let mut config = s.config();
        config.deidentify = deidentify;
        let f = s.device.forwarder(config, &s.pki).unwrap();
        assert_eq!(f.forward_pending().unwrap().sent, 6);
        assert_eq!(s.rsyslog.wait_for(6), range(6));
        let raw = s.rsyslog.read("raw.log");
        assert!(!raw.contains("alice"), "{raw}");
        assert!(!raw.contains("192.0.2.77"), "{raw}");
        (s, raw)
    }

    #[test]
    fn pseudonyms_replace_the_user_and_stay_stable() {
        let key = PseudonymKey::generate().unwrap();
        let (_s, raw) = forward_with(Deidentify::Pseudonymize { key });
        let actors: Vec<&str> = raw
            .lines()
            .filter(|l| l.contains(r#"actor-type="user""#))
            .map(|l| {
                let rest = &l[l.find(" actor=\"").unwrap() + 8..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        assert_eq!(actors.len(), 3, "{raw}");
        assert!(actors[0].starts_with("user:"), "{}", actors[0]);
        assert!(actors.iter().all(|a| *a == actors[0]), "{actors:?}");
        assert!(raw.contains(r#"deidentified="pseudonymized""#));
        // System events keep their actor.
        assert_eq!(raw.matches(r#"actor="system""#).count(), 3, "{raw}");
    }

    #[test]
    fn strip_drops_the_user_and_keeps_system_actors() {
        let (_s, raw) = forward_with(Deidentify::Strip);
        for line in raw.lines().filter(|l| l.contains(r#"actor-type="user""#)) {
            assert!(
                !line.contains(" actor=") && !line.contains(" source="),
                "{line}"
            );
            assert!(line.contains(r#"deidentified="stripped""#), "{line}");
        }
        assert_eq!(raw.matches(r#"actor="system""#).count(), 3, "{raw}");
    }
}

// Trust: the forwarder talks only to the collector its anchors vouch for.
mod trust {
    use super::*;

    #[test]
    fn a_collector_from_another_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(&tmp.path().join("pki"));
        let rogue = Pki::new(&tmp.path().join("rogue-pki"));
        rogue.collector_files(&tmp.path().join("rogue"), "localhost");
        let rsyslog = Rsyslog::start(&tmp.path().join("rogue"));
        let device = Device::new(&tmp.path().join("device"), &pki);
        device.append(3);
        let config = Config::new(&rsyslog.collector(), "localhost", "unit-0042");
        let f = device.forwarder(config, &pki).unwrap();
        let err = f.forward_pending().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Tls {
                    source: rustls::Error::InvalidCertificate(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(f.status().next_seq, 0);
        assert_eq!(f.status().consecutive_failures, 1);
        assert!(rsyslog.seqs().is_empty());
    }

    #[test]
    fn a_collector_certificate_for_another_name_is_refused() {
        let s = setup();
        s.device.append(3);
        let mut config = s.config();
        config.server_name = "collector.example".into();
        let f = s.device.forwarder(config, &s.pki).unwrap();
        let err = f.forward_pending().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Tls {
                    source: rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    ),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(f.status().next_seq, 0);
    }
}

// Integrity: what the forwarder does with a damaged log.
mod integrity {
    use super::*;

    /// Byte offset of record `n`'s sealed common fields in events.log.
    fn common_fields_offset(log: &Path, n: usize) -> usize {
        let bytes = std::fs::read(log).unwrap();
        let mut at = 0;
        let mut records = 0;
        loop {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if bytes[at + 4] == 1 {
                if records == n {
                    // length, kind, seq, user tag, common length.
                    return at + 4 + 1 + 8 + 32 + 4;
                }
                records += 1;
            }
            at += 4 + len;
        }
    }

    #[test]
    fn a_tampered_record_is_forwarded_as_an_alert_in_its_place() {
        let s = setup();
        s.device.append(5);
        let path = s.device.log_dir().join("events.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[common_fields_offset(&path, 2) + 20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let f = s.device.forwarder(s.config(), &s.pki).unwrap();
        let report = f.forward_pending().unwrap();
        assert_eq!((report.sent, report.unreadable), (5, 1));
        assert_eq!(s.rsyslog.wait_for(5), range(5));
        let raw = s.rsyslog.read("raw.log");
        let third = raw.lines().nth(2).unwrap();
        assert!(third.starts_with("<81>1 "), "{third}");
        assert!(
            third.contains(" event-log.unreadable [bulwark@32473 seq=\"2\""),
            "{third}"
        );
    }

    #[test]
    fn a_log_replaced_by_an_older_copy_is_reported_and_followed() {
        let Setup {
            _tmp,
            pki,
            device,
            rsyslog,
        } = setup();
        let path = device.log_dir().join("events.log");
        device.append(3);
        let old = std::fs::read(&path).unwrap();
        device.append(3);
        let config = Config::new(&rsyslog.collector(), "localhost", "unit-0042");
        assert_eq!(
            device
                .forwarder(config.clone(), &pki)
                .unwrap()
                .forward_pending()
                .unwrap()
                .sent,
            6
        );
        let device = device.restart_with(|| std::fs::write(&path, old).unwrap());
        let f = device.forwarder(config, &pki).unwrap();
        let report = f.forward_pending().unwrap();
        assert!(report.rolled_back, "{report:?}");
        assert_eq!(report.next_seq, 3);
        device.append(2);
        assert_eq!(f.forward_pending().unwrap().sent, 2);
        assert_eq!(rsyslog.wait_for(8), vec![0, 1, 2, 3, 4, 5, 3, 4]);
        let raw = rsyslog.read("raw.log");
        let alert = raw.lines().nth(6).unwrap();
        assert!(
            alert.contains(
                "event-log.rolled-back [bulwark@32473 forwarded-up-to=\"6\" log-records=\"3\"]"
            ),
            "{alert}"
        );
    }
}
