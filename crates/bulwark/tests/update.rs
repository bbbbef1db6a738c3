//! `bulwark update status|install|policy` on the device, end to end: a
//! real `bulwark agent` process with a TUF repository made by `bulwark
//! update repo`, driven through the command line as an owner would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::common::*;

pub(crate) const PASSWORD: &str = "correct horse battery staple 42";

/// The agent as a child process, killed when dropped.
pub(crate) struct Agent(Child);

impl Agent {
    /// Stops it as systemd would (SIGTERM) and waits.
    pub(crate) fn stop(mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "agent exit status {status}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bulwark agent --config <config>` and waits until it serves.
pub(crate) fn start_agent(state: &Path, config: &Path) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["agent", "--config", config.to_str().unwrap()])
        .env("BULWARK_STATE_DIR", state)
        // libtss2 prints expected failures (a missing handle) on stderr.
        .env("TSS2_LOG", "all+none")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bulwark agent");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("stop with Ctrl-C") => return Agent(child),
            Ok(_) => {}
            Err(_) => panic!("the agent did not come up"),
        }
    }
}

/// Claims the unit as `owner` over HTTPS (the one step the command line
/// does not do: a new owner sets the password with the label's secret).
pub(crate) fn claim(state: &Path, port: u16, secret: &str) {
    let unit = identity::provision::load(state).unwrap();
    let root = unit.chain.last().unwrap().clone();
    let config =
        identity::tls::device_client_config(&[root], Some(&unit.record.device_id), None).unwrap();
    let body = serde_json::to_vec(&json!({
        "setup_secret": secret, "account": "owner", "password": PASSWORD,
    }))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("device").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post("/api/v1/setup/claim")
            .header("host", "device")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await;
        status
    });
    assert_eq!(status, hyper::StatusCode::CREATED, "claim");
}

pub(crate) fn run(
    state: &Path,
    password_file: &Path,
    port: u16,
    args: &[&str],
) -> std::process::Output {
    let url = format!("https://127.0.0.1:{port}");
    bulwark_env(
        state,
        args,
        &[
            ("BULWARK_URL", url.as_ref()),
            ("BULWARK_PASSWORD_FILE", password_file.as_os_str()),
        ],
    )
}

pub(crate) fn succeeds(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A provisioned unit (its keys in `keystore`) whose boot file points
/// `[update]` at a published repository of `releases` (name, version,
/// image; the n-th has version code and security version n), with the
/// simulated boot loader and slot files under `dir`.
pub(crate) struct Unit {
    pub(crate) state: PathBuf,
    pub(crate) port: u16,
    pub(crate) password: PathBuf,
    config: PathBuf,
    secret: String,
    boot_file: PathBuf,
}

impl Unit {
    pub(crate) fn new(dir: &Path, keystore: &str, releases: &[(&str, &str, &[u8])]) -> Self {
        let p = |name: &str| dir.join(name);
        let s = |name: &str| p(name).to_str().unwrap().to_owned();
        let maker = p("maker");
        ok(&maker, &["update", "repo", "init", &s("repo")]);
        for (n, (release, version, image)) in releases.iter().enumerate() {
            let image_file = s(&format!("{release}.img"));
            std::fs::write(&image_file, image).unwrap();
            let code = (n + 1).to_string();
            #[rustfmt::skip]
            let add = [
                "update", "repo", "add", &s("repo"), "--release", release, "--image", &image_file,
                "--compatible", "hw-1", "--version", version, "--version-code", &code,
                "--security-version", &code, "--chunk-size", "65536",
            ];
            ok(&maker, &add);
        }
        ok(
            &maker,
            &["update", "repo", "publish", &s("repo"), "--out", &s("www")],
        );
        ok(
            dir,
            &["ca", "init", "--dir", &s("ca"), "--organization", "Acme"],
        );
        let state = p("unit");
        #[rustfmt::skip]
        let provision = [
            "provision", "--ca", &s("ca"), "--serial", "U-1", "--model", "M",
            "--keystore", keystore,
        ];
        let provisioned = ok(&state, &provision);
        let port = testkit::free_port();
        let config = p("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
                 [update]\ncompatible = \"hw-1\"\nslot_a = {:?}\nslot_b = {:?}\n\
                 boot = \"file:{}\"\ntrusted_keys = [{:?}]\nbooted_slot = \"a\"\n\
                 [update.repository]\nmetadata_url = \"file://{}/\"\n\
                 targets_url = \"file://{}/\"\nroot_file = {:?}\n",
                state.to_str().unwrap(),
                s("slot-a"),
                s("slot-b"),
                s("boot.json"),
                p("repo").join("release-signing.pem").to_str().unwrap(),
                p("www").join("metadata").display(),
                p("www").join("targets").display(),
                p("repo").join("tuf/root/1.root.json").to_str().unwrap(),
            ),
        )
        .unwrap();
        let password = p("password");
        std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        Self {
            state,
            port,
            password,
            config,
            secret: field(&provisioned, "setup secret"),
            boot_file: p("boot.json"),
        }
    }

    /// Runs `bulwark <args>` against this unit's agent as its owner.
    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        run(&self.state, &self.password, self.port, args)
    }

    /// Starts the agent.
    pub(crate) fn start(&self) -> Agent {
        start_agent(&self.state, &self.config)
    }

    /// Claims the unit as `owner` with [`PASSWORD`].
    pub(crate) fn claim(&self) {
        claim(&self.state, self.port, &self.secret);
    }

    /// Installs `release` from the command line into the inactive slot,
    /// stops the agent, lets the simulated boot loader try that slot and
    /// starts the agent again (whose start-up check commits the trial).
    pub(crate) fn install_and_boot(&self, agent: Agent, release: &str) -> Agent {
        succeeds(&self.run(&["update", "install", release]), "install");
        agent.stop();
        let boot = update::boot::FileBootControl::open(&self.boot_file).unwrap();
        let trial = update::boot::BootControl::state(&boot)
            .unwrap()
            .tried
            .map(|(slot, _)| slot);
        assert!(trial.is_some(), "the install marked a slot to try");
        assert_eq!(Some(boot.boot().unwrap()), trial, "power-on tries it");
        self.start()
    }
}

/// The owner installs a release with `bulwark update install` (progress
/// phases reported, the slot written byte for byte, a trial marked),
/// reads the status and changes the update policy; a wrong password, an
/// unknown release and an unknown policy key fail with messages naming
/// what was wrong.
#[test]
fn owner_installs_reads_status_and_changes_policy_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let image: Vec<u8> = (0..600_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let unit = Unit::new(
        dir.path(),
        "software",
        &[("r1", "1.0.0", &first), ("r2", "2.0.0", &image)],
    );
    let (state, port) = (&unit.state, unit.port);
    let p = |name: &str| dir.path().join(name);
    let wrong = p("wrong-password");
    std::fs::write(&wrong, "not the password at all\n").unwrap();
    let agent = unit.start();
    unit.claim();

    // A blank unit: slot a holds no verified release, so the agent is in
    // fail-safe mode, where installing is the way out.
    let status = succeeds(&unit.run(&["update", "status"]), "status");
    assert!(status.contains("fail-safe: yes"), "{status}");
    let _agent = unit.install_and_boot(agent, "r1");
    let status = succeeds(&unit.run(&["update", "status"]), "status");
    assert!(status.contains("fail-safe: no"), "{status}");
    assert!(
        status.contains("boot: active b, booted b, trial none"),
        "{status}"
    );
    assert!(status.contains("security floor: 1"), "{status}");

    let denied = run(state, &wrong, port, &["update", "status"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("logging in as owner") && stderr.contains("401"),
        "{stderr}"
    );

    let missing = unit.run(&["update", "install", "r9"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("r9"), "{stderr}");

    let installed = unit.run(&["update", "install", "r2"]);
    let stdout = succeeds(&installed, "install");
    assert!(
        stdout.contains("release r2 (version 2.0.0) installed into slot a"),
        "{stdout}"
    );
    // Not a terminal: phases come as lines, starting with the one the
    // install's 202 answer reported (the agent test with a slow link sees
    // every phase; this small local install may finish between polls).
    let stderr = String::from_utf8_lossy(&installed.stderr);
    let phases: Vec<&str> = stderr.lines().filter(|l| l.starts_with("r2: ")).collect();
    assert_eq!(phases.first(), Some(&"r2: preparing"), "{stderr}");
    assert_eq!(std::fs::read(p("slot-a")).unwrap(), image);

    let json = succeeds(&unit.run(&["update", "status", "--json"]), "status --json");
    let status: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["boot"]["trial"]["slot"], "a", "{status}");
    assert_eq!(status["slots"][0]["release"]["version"], "2.0.0");
    assert_eq!(status["restart_pending"], true);

    let changed = unit.run(&[
        "update",
        "policy",
        "--set",
        "install=manual",
        "--set",
        "restart=confirm",
    ]);
    succeeds(&changed, "policy --set");
    let policy = succeeds(&unit.run(&["update", "policy", "--json"]), "policy");
    let policy: Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["updates"]["install"], "manual", "{policy}");
    assert_eq!(policy["updates"]["restart"], "confirm", "{policy}");
    let bad = unit.run(&["update", "policy", "--set", "instal=manual"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("\"instal\""), "{stderr}");
    let refused = unit.run(&["update", "policy", "--set", "check_interval_secs=5"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("check_interval_secs"), "{stderr}");
}

/// docs/updates.md must stay true: its boot-file example parses and
/// validates, and every `bulwark update …` command line it shows names a
/// real subcommand with options that its `--help` lists.
#[test]
fn the_examples_in_docs_updates_md_are_valid() {
    let doc = std::fs::read_to_string(repo_root().join("docs/updates.md")).unwrap();
    let block = |fence: &str| -> Vec<String> {
        doc.split(fence)
            .skip(1)
            .map(|b| b.split("```").next().unwrap().to_owned())
            .collect()
    };
    let toml = block("```toml\n");
    assert_eq!(toml.len(), 1, "one boot-file example");
    let file = agent_config::AgentFile::from_toml(&toml[0])
        .unwrap_or_else(|e| panic!("docs/updates.md boot file: {e}"));
    file.validate()
        .unwrap_or_else(|e| panic!("docs/updates.md boot file: {e}"));
    let update = file.update.expect("an [update] section");
    assert_eq!(update.health_checks.len(), 1);
    assert!(update.repository.is_some());

    let mut checked = 0;
    for sh in block("```sh\n") {
        // Join continued lines, drop comments.
        let joined = sh.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.split(" #").next().unwrap().trim();
            let Some(rest) = line.strip_prefix("bulwark ") else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let command: Vec<&str> = words
                .iter()
                .take_while(|w| !w.starts_with('-') && !w.starts_with('.'))
                .copied()
                .collect();
            // A positional argument (a release name) ends the command.
            let command: Vec<&str> = command
                .into_iter()
                .take_while(|w| !w.contains('.') && !w.contains('-') || *w == "update")
                .collect();
            let mut args = command.clone();
            args.push("--help");
            let help = ok(Path::new("/nonexistent"), &args);
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    help.contains(flag),
                    "docs/updates.md: `bulwark {}` has no {flag}:\n{help}",
                    command.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} command lines found");
}
