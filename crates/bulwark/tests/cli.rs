//! The command line end to end, software keystore.

use crate::common::*;

#[test]
fn main_job_provisions_a_development_unit_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = ok(&state, &["dev"]);
    assert!(first.contains("DEVELOPMENT UNIT"), "{first}");
    let secret = field(&first, "setup secret");
    assert_eq!(secret.len(), 39, "{secret}");
    let again = ok(&state, &["dev"]);
    assert!(again.contains("DEVELOPMENT UNIT"));
    assert!(!again.contains(&secret), "setup secret shown twice");
    assert!(again.contains("class 1 only"), "{again}");
    assert!(again.contains("matches the certificate"), "{again}");
    openssl_verify(&state.join("dev-ca"), &state.join("identity/device.pem"));
}

#[test]
fn two_units_share_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_str = ca.to_str().unwrap();
    ok(
        dir.path(),
        &[
            "ca",
            "init",
            "--dir",
            ca_str,
            "--organization",
            "Acme Devices",
        ],
    );
    let mut units = Vec::new();
    for serial in ["ACME-0001", "ACME-0002"] {
        let state = dir.path().join(serial);
        let out = ok(
            &state,
            &[
                "provision",
                "--ca",
                ca_str,
                "--serial",
                serial,
                "--model",
                "Thermo-2",
            ],
        );
        openssl_verify(&ca, &state.join("identity/device.pem"));
        let shown: serde_json::Value =
            serde_json::from_str(&ok(&state, &["identity", "show", "--json"])).unwrap();
        assert_eq!(shown["serial"], serial);
        assert_eq!(shown["key_matches_certificate"], true);
        let key = std::fs::read(
            state
                .join("keystore/software/keys")
                .join(format!("{}.key", shown["key_label"].as_str().unwrap())),
        )
        .unwrap();
        units.push((
            shown["device_id"].as_str().unwrap().to_owned(),
            shown["certificate"]["sha256"].as_str().unwrap().to_owned(),
            field(&out, "setup secret"),
            key,
            std::fs::read(state.join("keystore/software/kek")).unwrap(),
        ));
    }
    let (a, b) = (&units[0], &units[1]);
    assert_ne!(a.0, b.0, "identifiers");
    assert_ne!(a.1, b.1, "certificates");
    assert_ne!(a.2, b.2, "setup secrets");
    assert_ne!(a.3, b.3, "key files");
    assert_ne!(a.4, b.4, "key-encryption keys");
    // The same serial cannot be issued again.
    let state = dir.path().join("dup");
    let err = fails(
        &state,
        &[
            "provision",
            "--ca",
            ca_str,
            "--serial",
            "ACME-0001",
            "--model",
            "Thermo-2",
        ],
    );
    assert!(err.contains("already issued"), "{err}");
}

#[test]
fn reprovisioning_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_str = ca.to_str().unwrap();
    let state = dir.path().join("unit");
    ok(
        dir.path(),
        &["ca", "init", "--dir", ca_str, "--organization", "Acme"],
    );
    let args = [
        "provision",
        "--ca",
        ca_str,
        "--serial",
        "S1",
        "--model",
        "M",
    ];
    ok(&state, &args);
    let err = fails(&state, &args);
    assert!(err.contains("--force"), "{err}");
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&state, &forced);
}

#[test]
fn secrets_never_reach_output_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = bulwark(&state, &["dev"]);
    assert!(out.status.success());
    let secret = field(&String::from_utf8_lossy(&out.stdout), "setup secret");
    // Logs go to stderr at debug level: the secret must not be there.
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&secret));
    let kek = std::fs::read(state.join("keystore/software/kek")).unwrap();
    let kek_hex = hex_lower(&kek);
    for args in [
        &["identity", "show", "--json"][..],
        &["identity", "show"],
        &["keys", "list"],
    ] {
        let out = bulwark(&state, args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(!all.contains(&secret), "{args:?} printed the setup secret");
        assert!(!all.contains(&kek_hex), "{args:?} printed the KEK");
        assert!(
            !all.contains("argon2id"),
            "{args:?} printed the secret hash"
        );
    }
    // A PIN in a malformed keystore spec is not echoed.
    let err = fails(
        &state,
        &["keys", "list", "--keystore", "hsm:pin-value=55555555"],
    );
    assert!(
        err.contains("unknown keystore") && !err.contains("55555555"),
        "{err}"
    );
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_str = ca.to_str().unwrap();
    let state = dir.path().join("unit");
    let err = fails(
        &state,
        &["provision", "--ca", ca_str, "--serial", "S", "--model", "M"],
    );
    assert!(err.contains("ca.json"), "{err}");
    ok(
        dir.path(),
        &["ca", "init", "--dir", ca_str, "--organization", "Acme"],
    );
    let err = fails(
        &state,
        &[
            "provision",
            "--ca",
            ca_str,
            "--serial",
            "S 1;",
            "--model",
            "M",
        ],
    );
    assert!(err.contains("serial number"), "{err}");
    assert!(!state.join("identity").exists());
    let err = fails(
        &state,
        &[
            "provision",
            "--ca",
            ca_str,
            "--serial",
            "S1",
            "--model",
            "M",
            "--keystore",
            "pkcs11:token=x?pin-value=1234",
        ],
    );
    assert!(err.contains("pin-source") && !err.contains("1234"), "{err}");
    // A corrupt device key file is reported with its path.
    ok(
        &state,
        &[
            "provision",
            "--ca",
            ca_str,
            "--serial",
            "S2",
            "--model",
            "M",
        ],
    );
    let keys_dir = state.join("keystore/software/keys");
    let key_file = std::fs::read_dir(&keys_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&key_file, b"garbage").unwrap();
    let err = fails(&state, &["identity", "show"]);
    assert!(
        err.contains(key_file.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    let err = fails(
        dir.path(),
        &["ca", "init", "--dir", ca_str, "--organization", "Acme"],
    );
    assert!(err.contains("refusing to overwrite"), "{err}");
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn event_log_verifies_and_tampering_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    ok(&state, &["dev"]);
    let out = ok(&state, &["log", "verify"]);
    assert!(out.contains("event log intact"), "{out}");
    let export = ok(&state, &["log", "export"]);
    let first: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(first["action"], "device.provisioned");
    let log = state.join("store/events.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[60] ^= 0x40;
    std::fs::write(&log, bytes).unwrap();
    let out = bulwark(&state, &["log", "verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("record 0 was modified"), "{text}");
}

#[test]
fn agent_runs_on_embedded_defaults_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .env("BULWARK_STATE_DIR", &state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("stop with") {
            break;
        }
    }
    assert!(seen.contains("DEVELOPMENT UNIT"), "{seen}");
    assert!(seen.contains("setup secret:"), "{seen}");
    assert!(
        seen.contains("management API on https://127.0.0.1:8443/api/v1/"),
        "{seen}"
    );
    std::net::TcpStream::connect("127.0.0.1:8443").expect("the agent listens");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(rest.iter().any(|l| l.contains("agent stopped")), "{rest:?}");
    assert!(
        std::net::TcpStream::connect("127.0.0.1:8443").is_err(),
        "the port is closed after shutdown"
    );
}

#[test]
fn update_repository_publishes_releases_a_device_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_str = repo.to_str().unwrap();
    let image = dir.path().join("image.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&image, &bytes).unwrap();
    let state = dir.path().join("state");
    let init = ok(&state, &["update", "repo", "init", repo_str]);
    assert!(init.contains("release-signing.pem"), "{init}");
    let again = fails(&state, &["update", "repo", "init", repo_str]);
    assert!(again.contains("already holds a repository"), "{again}");
    let added = ok(
        &state,
        &[
            "update",
            "repo",
            "add",
            repo_str,
            "--release",
            "r1",
            "--image",
            image.to_str().unwrap(),
            "--compatible",
            "plug-1",
            "--version",
            "1.0.0",
            "--version-code",
            "1",
            "--security-version",
            "1",
            "--chunk-size",
            "65536",
        ],
    );
    assert!(added.contains("5 chunks"), "{added}");
    let bad = fails(
        &state,
        &[
            "update",
            "repo",
            "add",
            repo_str,
            "--release",
            "../escape",
            "--image",
            image.to_str().unwrap(),
            "--compatible",
            "plug-1",
            "--version",
            "1",
            "--version-code",
            "2",
            "--security-version",
            "1",
        ],
    );
    assert!(bad.contains("release name"), "{bad}");
    let out = dir.path().join("www");
    ok(
        &state,
        &[
            "update",
            "repo",
            "publish",
            repo_str,
            "--out",
            out.to_str().unwrap(),
        ],
    );

    // The device side: TUF from the published directory, then the
    // manifest against the exported release key.
    let root = std::fs::read(repo.join("tuf/root/1.root.json")).unwrap();
    let client = update_tuf::Client::new(
        &root,
        &format!("file://{}/", out.join("metadata").display()),
        &format!("file://{}/", out.join("targets").display()),
        &dir.path().join("datastore"),
        update_tuf::Limits::default(),
    )
    .unwrap();
    let wire = client.fetch_target("r1.manifest.json").unwrap();
    let pem = std::fs::read_to_string(repo.join("release-signing.pem")).unwrap();
    let key = agent_config::public_key_from_pem("release", &pem).unwrap();
    let trusted = update::manifest::TrustedKeys::new(&[key]).unwrap();
    let device = update::manifest::Device {
        compatible: "plug-1".into(),
        current_version_code: 0,
        security_floor: 0,
    };
    let verified = update::manifest::SignedManifest::verify(&wire, &trusted, 1, &device).unwrap();
    assert_eq!(verified.manifest().image_size, bytes.len() as u64);
    let mut streamed = Vec::new();
    std::io::Read::read_to_end(&mut client.open_target("r1.image").unwrap(), &mut streamed)
        .unwrap();
    assert_eq!(streamed, bytes);
    let other = update::manifest::Device {
        compatible: "plug-2".into(),
        ..device
    };
    assert!(update::manifest::SignedManifest::verify(&wire, &trusted, 1, &other).is_err());
}

/// `bulwark update repo add` for a small release `name` of `image`.
fn add_release(state: &std::path::Path, repo: &str, name: &str, image: &str, code: &str) {
    ok(
        state,
        &[
            "update",
            "repo",
            "add",
            repo,
            "--release",
            name,
            "--image",
            image,
            "--compatible",
            "plug-1",
            "--version",
            code,
            "--version-code",
            code,
            "--security-version",
            "1",
            "--chunk-size",
            "65536",
        ],
    );
}

/// The key ids a published root version gives `role`.
fn role_keyids(metadata: &std::path::Path, version: u64, role: &str) -> Vec<String> {
    let path = metadata.join(format!("{version}.root.json"));
    let root: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(root["signed"]["version"], version, "{}", path.display());
    let mut ids: Vec<String> = root["signed"]["roles"][role]["keyids"]
        .as_array()
        .unwrap_or_else(|| panic!("no {role} keyids in {}", path.display()))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

// Key rotation follows TUF's root rotation: a device that trusted root 1
// walks to the root naming the new keys and accepts releases they sign.
#[test]
fn update_repository_rotates_role_keys_a_device_follows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let repo = dir.path().join("repo");
    let repo_str = repo.to_str().unwrap();
    let image = dir.path().join("image.bin");
    std::fs::write(&image, vec![7u8; 70_000]).unwrap();
    let image_str = image.to_str().unwrap();
    let out = dir.path().join("www");
    let out_str = out.to_str().unwrap();
    let metadata = out.join("metadata");
    ok(&state, &["update", "repo", "init", repo_str]);
    // As made before `rotate` existed: no role_keys, the original labels.
    let config_path = repo.join("bulwark-repo.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["role_keys"]["targets"], "tuf-targets");
    config.as_object_mut().unwrap().remove("role_keys");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    add_release(&state, repo_str, "r1", image_str, "1");
    ok(
        &state,
        &["update", "repo", "publish", repo_str, "--out", out_str],
    );

    let root1 = std::fs::read(repo.join("tuf/root/1.root.json")).unwrap();
    let datastore = dir.path().join("datastore");
    let client = || {
        update_tuf::Client::new(
            &root1,
            &format!("file://{}/", metadata.display()),
            &format!("file://{}/", out.join("targets").display()),
            &datastore,
            update_tuf::Limits::default(),
        )
        .unwrap()
    };
    let device = client();
    assert_eq!(device.root_version(), 1);
    device.fetch_target("r1.manifest.json").unwrap();
    drop(device);

    // An unknown role is refused before anything is touched.
    let config = std::fs::read(repo.join("bulwark-repo.json")).unwrap();
    let refused = fails(
        &state,
        &["update", "repo", "rotate", repo_str, "--role", "release"],
    );
    assert!(
        refused.contains("root, targets, snapshot, timestamp"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(repo.join("bulwark-repo.json")).unwrap(),
        config
    );
    assert!(!repo.join("tuf/root/2.root.json").exists());

    let rotated = ok(
        &state,
        &[
            "update",
            "repo",
            "rotate",
            repo_str,
            "--role",
            "timestamp",
            "--role",
            "targets",
        ],
    );
    assert!(rotated.contains("root version 2"), "{rotated}");
    assert!(
        rotated.contains("targets: tuf-targets-2 (retired: tuf-targets)"),
        "{rotated}"
    );
    assert!(
        rotated.contains("timestamp: tuf-timestamp-2 (retired: tuf-timestamp)"),
        "{rotated}"
    );
    assert!(rotated.contains("publish"), "{rotated}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("bulwark-repo.json")).unwrap()).unwrap();
    assert_eq!(saved["role_keys"]["targets"], "tuf-targets-2");
    assert_eq!(saved["role_keys"]["root"], "tuf-root");
    add_release(&state, repo_str, "r2", image_str, "2");
    ok(
        &state,
        &["update", "repo", "publish", repo_str, "--out", out_str],
    );

    for (role, changed) in [
        ("root", false),
        ("targets", true),
        ("snapshot", false),
        ("timestamp", true),
    ] {
        let before = role_keyids(&metadata, 1, role);
        let after = role_keyids(&metadata, 2, role);
        assert_eq!(after.len(), 1, "{role}: {after:?}");
        assert_eq!(before != after, changed, "{role}: {before:?} -> {after:?}");
    }
    let device = client();
    assert_eq!(device.root_version(), 2);
    let wire = device.fetch_target("r2.manifest.json").unwrap();
    let pem = std::fs::read_to_string(repo.join("release-signing.pem")).unwrap();
    let key = agent_config::public_key_from_pem("release", &pem).unwrap();
    let trusted = update::manifest::TrustedKeys::new(&[key]).unwrap();
    let target = update::manifest::Device {
        compatible: "plug-1".into(),
        current_version_code: 1,
        security_floor: 1,
    };
    let verified = update::manifest::SignedManifest::verify(&wire, &trusted, 1, &target).unwrap();
    assert_eq!(verified.manifest().version_code, 2);
    drop(device);

    // The root key itself: root 3 is signed by the old and the new one,
    // and the device, already at root 2, follows.
    let rotated = ok(
        &state,
        &["update", "repo", "rotate", repo_str, "--role", "root"],
    );
    assert!(
        rotated.contains("root: tuf-root-2 (retired: tuf-root)"),
        "{rotated}"
    );
    ok(
        &state,
        &["update", "repo", "publish", repo_str, "--out", out_str],
    );
    assert_ne!(
        role_keyids(&metadata, 2, "root"),
        role_keyids(&metadata, 3, "root")
    );
    let device = client();
    assert_eq!(device.root_version(), 3);
    device.fetch_target("r2.image").unwrap();
}

/// A rotation cut between signing the new root and saving the
/// configuration (simulated: the old configuration put back, the new one
/// left as the pending file) is finished by the next command; a pending
/// file whose keys the root does not name (the cut came before signing)
/// is dropped. Either way the repository keeps publishing.
#[test]
fn an_interrupted_key_rotation_is_finished_or_dropped_by_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let repo = dir.path().join("repo");
    let repo_str = repo.to_str().unwrap();
    let image = dir.path().join("image.bin");
    std::fs::write(&image, vec![9u8; 70_000]).unwrap();
    let out = dir.path().join("www");
    let publish = [
        "update",
        "repo",
        "publish",
        repo_str,
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&state, &["update", "repo", "init", repo_str]);
    add_release(&state, repo_str, "r1", image.to_str().unwrap(), "1");
    let config = repo.join("bulwark-repo.json");
    let pending = repo.join("bulwark-repo.next.json");
    let before = std::fs::read(&config).unwrap();
    // Publishes, which settles the pending rotation as `said` and leaves
    // `expected` as the configuration.
    let publish_settles = |said: &str, expected: &[u8]| {
        let published = bulwark(&state, &publish);
        assert!(published.status.success(), "{published:?}");
        let stderr = String::from_utf8_lossy(&published.stderr);
        assert!(stderr.contains(said), "{stderr}");
        assert_eq!(std::fs::read(&config).unwrap(), expected);
        assert!(!pending.exists());
    };

    // Signed, not saved.
    ok(
        &state,
        &["update", "repo", "rotate", repo_str, "--role", "snapshot"],
    );
    let after = std::fs::read(&config).unwrap();
    assert_ne!(before, after);
    assert!(
        !pending.exists(),
        "a finished rotation leaves no pending file"
    );
    std::fs::write(&pending, &after).unwrap();
    std::fs::write(&config, &before).unwrap();
    publish_settles("finished an interrupted key rotation", &after);

    // Pending, never signed: the root still names the current keys.
    let mut bogus: serde_json::Value = serde_json::from_slice(&after).unwrap();
    bogus["role_keys"]["timestamp"] = "tuf-timestamp-9".into();
    std::fs::write(&pending, serde_json::to_vec(&bogus).unwrap()).unwrap();
    publish_settles("dropped an interrupted key rotation", &after);
}
