//! The update engine's side of `bench/update.sh` (docs/performance.md,
//! "Secure updates"). Each subcommand is one measured step, run as its own
//! process so that the script can time it with hyperfine next to RAUC,
//! SWUpdate and OpenSSL, and read its peak memory:
//!
//! - `publish IMAGE OUT VERSION_CODE CHUNK_SIZE`: hashes IMAGE into a
//!   manifest (`update::publish::manifest_for_image`), signs it with an
//!   Ed25519 key of a software keystore in `OUT/keys` (created once) and
//!   writes `OUT/manifest-vVERSION_CODE.json` and `OUT/trusted.json`.
//! - `verify TRUSTED MANIFEST IMAGE`: full verification of a bundle: the
//!   signed manifest, then every chunk of IMAGE (`integrity::verify_slot`,
//!   all cores). Fails unless intact.
//! - `install TRUSTED MANIFEST IMAGE DEVICE`: streaming install from a
//!   local file (`install::Installer`, `FileSource`) into the inactive
//!   slot of a simulated device in DEVICE (`FileBootControl`, slot files,
//!   state directory; created on first use). Prints the report and the
//!   process's peak resident memory (`VmHWM`).
//! - `startup TRUSTED DEVICE SLOT`: the start-up integrity check of a slot
//!   (`commit::check_slot`: its signed record, then every chunk).
//! - `adaptive IMAGE WORK CHUNK_SIZE PERCENT`: installs and commits release
//!   1 (IMAGE), replaces PERCENT % of its chunks with random bytes,
//!   publishes release 2 and installs it reusing the active slot; prints
//!   the bytes read from the source against the image size.
//! - `adaptive-http IMAGE WORK CHUNK_SIZE PERCENT spread|contiguous URL`:
//!   the same over HTTP, as the agent fetches releases: publishes release
//!   1 (IMAGE) and then release 2 into a TUF repository
//!   (`update_tuf::Repository`, written to `WORK/www`, which a web server
//!   serves at URL), installs each through `update_tuf::Client` and
//!   `RangedSource` (ranges only where chunks are needed), committing
//!   release 1 in between. The bytes on the wire are the web server's to
//!   count (its access log); this prints our own counters beside them.
//!
//! Run: `bash bench/update.sh` (it builds this with
//! `cargo bench -p update --bench update --no-run`).

// Bench code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore, PublicKey};
use keys_soft::{KekProtection, SoftKeyStore};
use update::anti_rollback::FileSecurityFloor;
use update::boot::{BootControl, FileBootControl, SlotName, Slots};
use update::commit::{BootOutcome, Trust, check_slot, confirm_boot};
use update::install::{FileSource, InstallReport, Installer, RANGE_GAP, RangedSource};
use update::integrity::verify_slot;
use update::manifest::{Device, Manifest, SignedManifest, TrustedKeys};
use update::publish::{Release, manifest_for_image};
use update_tuf::{Client, Limits, Repository, RoleSpec, RootSpec};

const COMPATIBLE: &str = "bw-bench";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        ["publish", image, out, version_code, chunk_size] => publish(
            Path::new(image),
            Path::new(out),
            version_code.parse().unwrap(),
            chunk_size.parse().unwrap(),
        ),
        ["verify", trusted, manifest, image] => {
            verify(Path::new(trusted), Path::new(manifest), Path::new(image));
        }
        ["install", trusted, manifest, image, device] => install(
            Path::new(trusted),
            Path::new(manifest),
            Path::new(image),
            Path::new(device),
        ),
        ["startup", trusted, device, slot] => {
            startup(Path::new(trusted), Path::new(device), slot);
        }
        ["adaptive", image, work, chunk_size, percent] => adaptive(
            Path::new(image),
            Path::new(work),
            chunk_size.parse().unwrap(),
            percent.parse().unwrap(),
        ),
        [
            "adaptive-http",
            image,
            work,
            chunk_size,
            percent,
            layout,
            url,
        ] => adaptive_http(
            Path::new(image),
            Path::new(work),
            chunk_size.parse().unwrap(),
            percent.parse().unwrap(),
            layout.parse().unwrap(),
            url,
        ),
        _ => {
            eprintln!(
                "usage: update-bench publish IMAGE OUT VERSION_CODE CHUNK_SIZE\n\
                 \x20      update-bench verify TRUSTED MANIFEST IMAGE\n\
                 \x20      update-bench install TRUSTED MANIFEST IMAGE DEVICE\n\
                 \x20      update-bench startup TRUSTED DEVICE a|b\n\
                 \x20      update-bench adaptive IMAGE WORK CHUNK_SIZE PERCENT\n\
                 \x20      update-bench adaptive-http IMAGE WORK CHUNK_SIZE PERCENT spread|contiguous URL\n\
                 (run by bench/update.sh)"
            );
            std::process::exit(2);
        }
    }
}

fn release_key(dir: &Path) -> KeyRef {
    let store = SoftKeyStore::open(&dir.join("keys"), KekProtection::File).unwrap();
    let label = "release".parse().unwrap();
    if store.public_key(&label).is_err() {
        store.generate(&label, Algorithm::Ed25519).unwrap();
    }
    let store: Arc<dyn KeyStore> = Arc::new(store);
    KeyRef::new(store, label).unwrap()
}

/// Publishes IMAGE as release `version_code`; returns the manifest's path.
fn publish_release(image: &Path, out: &Path, version_code: u64, chunk_size: u32) -> PathBuf {
    std::fs::create_dir_all(out).unwrap();
    let key = release_key(out);
    let release = Release {
        compatible: COMPATIBLE.into(),
        version: format!("1.{version_code}.0"),
        version_code,
        min_version_code: 0,
        security_version: 1,
        chunk_size,
    };
    let manifest = manifest_for_image(image, &release, 1_800_000_000).unwrap();
    let wire = SignedManifest::sign(&manifest, &[&key]).unwrap();
    let path = out.join(format!("manifest-v{version_code}.json"));
    std::fs::write(&path, wire).unwrap();
    std::fs::write(
        out.join("trusted.json"),
        serde_json::to_vec(&[key.public_key().clone()]).unwrap(),
    )
    .unwrap();
    path
}

fn publish(image: &Path, out: &Path, version_code: u64, chunk_size: u32) {
    let started = Instant::now();
    let path = publish_release(image, out, version_code, chunk_size);
    println!(
        "published {} in {:.3} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}

fn trusted_keys(path: &Path) -> TrustedKeys {
    let public: Vec<PublicKey> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    TrustedKeys::new(&public).unwrap()
}

fn trust(keys: &TrustedKeys) -> Trust<'_> {
    Trust {
        keys,
        threshold: 1,
        compatible: COMPATIBLE,
    }
}

fn verify(trusted: &Path, manifest: &Path, image: &Path) {
    let keys = trusted_keys(trusted);
    let wire = std::fs::read(manifest).unwrap();
    let release = SignedManifest::verify_installed(&wire, &keys, 1, COMPATIBLE).unwrap();
    let report = verify_slot(image, &release).unwrap();
    assert!(report.is_intact(), "bundle does not verify: {report:?}");
}

/// A simulated device in `dir`: slots, boot loader state file, state.
struct Device1 {
    boot: FileBootControl,
    slots: Slots,
    state: PathBuf,
}

fn device(dir: &Path) -> Device1 {
    std::fs::create_dir_all(dir).unwrap();
    Device1 {
        boot: FileBootControl::create(&dir.join("boot.json"), SlotName::A).unwrap(),
        slots: Slots::new(dir.join("slot-a"), dir.join("slot-b")),
        state: dir.join("state"),
    }
}

/// What a release is checked against on `dev`: its running release's
/// version (or 0).
fn device_state(dev: &Device1, installer: &Installer<'_>, keys: &TrustedKeys) -> Device {
    let active = dev.boot.active().unwrap();
    let current = check_slot(&dev.slots, installer.records(), active, trust(keys))
        .unwrap()
        .map_or(0, |r| r.manifest().version_code);
    Device {
        compatible: COMPATIBLE.into(),
        current_version_code: current,
        security_floor: 0,
    }
}

/// Verifies `manifest` for `dev` and installs it from `image`.
fn install_on(dev: &Device1, keys: &TrustedKeys, manifest: &Path, image: &Path) -> InstallReport {
    let installer = Installer::new(&dev.boot, &dev.slots, &dev.state).unwrap();
    let device = device_state(dev, &installer, keys);
    let release =
        SignedManifest::verify(&std::fs::read(manifest).unwrap(), keys, 1, &device).unwrap();
    installer
        .install(&release, &mut FileSource::open(image).unwrap())
        .unwrap()
}

fn install(trusted: &Path, manifest: &Path, image: &Path, dir: &Path) {
    let keys = trusted_keys(trusted);
    let dev = device(dir);
    let report = install_on(&dev, &keys, manifest, image);
    println!(
        "installed slot={} chunks={} downloaded={} reused={} in {:.3} s; VmHWM {} kB",
        report.slot,
        report.chunks,
        report.downloaded_bytes,
        report.reused_bytes,
        report.duration.as_secs_f64(),
        peak_rss_kib()
    );
}

fn startup(trusted: &Path, dir: &Path, slot: &str) {
    let keys = trusted_keys(trusted);
    let slot = match slot {
        "a" | "A" => SlotName::A,
        _ => SlotName::B,
    };
    let dev = device(dir);
    let records = update::records::SlotRecords::new(&dev.state).unwrap();
    let checked = check_slot(&dev.slots, &records, slot, trust(&keys)).unwrap();
    assert!(checked.is_ok(), "start-up check failed: {checked:?}");
}

fn adaptive(image: &Path, work: &Path, chunk_size: u32, percent: f64) {
    let publisher = work.join("publisher");
    let dir = work.join("device");
    let v1 = publish_release(image, &publisher, 1, chunk_size);
    let keys = trusted_keys(&publisher.join("trusted.json"));
    let dev = device(&dir);

    let first = install_on(&dev, &keys, &v1, image);
    boot_and_commit(&dev, &keys, &first);

    let image2 = work.join("image-v2");
    let changes = change_chunks(image, &image2, chunk_size, percent, Layout::Spread);
    let v2 = publish_release(&image2, &publisher, 2, chunk_size);
    let second = install_on(&dev, &keys, &v2, &image2);
    check_second(&dev, &first, &second, &image2, changes.size);
    println!(
        "adaptive: image {} bytes, {} chunks of {chunk_size}, {} changed \
         ({:.2} %); downloaded {} bytes = {:.2} % of the image, reused {} bytes; \
         install {:.3} s (full install of release 1: {:.3} s)",
        changes.size,
        changes.count,
        changes.changed,
        changes.changed as f64 * 100.0 / changes.count as f64,
        second.downloaded_bytes,
        second.downloaded_bytes as f64 * 100.0 / changes.size as f64,
        second.reused_bytes,
        second.duration.as_secs_f64(),
        first.duration.as_secs_f64(),
    );
}

/// Boots the slot `first` was installed into and commits it (release 1
/// becomes the active, recorded release).
fn boot_and_commit(dev: &Device1, keys: &TrustedKeys, first: &InstallReport) {
    assert_eq!(dev.boot.boot().unwrap(), first.slot);
    let records = update::records::SlotRecords::new(&dev.state).unwrap();
    let floor = FileSecurityFloor::new(&dev.state.join("floor.json"));
    let outcome = confirm_boot(&dev.boot, &dev.slots, &records, &floor, trust(keys)).unwrap();
    assert!(matches!(outcome, BootOutcome::TrialCommitted { .. }));
}

/// Release 2 went into the other slot, every byte either fetched or
/// reused, and the slot holds `image2` byte for byte.
fn check_second(
    dev: &Device1,
    first: &InstallReport,
    second: &InstallReport,
    image2: &Path,
    size: u64,
) {
    assert_eq!(second.slot, first.slot.other());
    assert_eq!(second.downloaded_bytes + second.reused_bytes, size);
    let installed = dev.slots.get(second.slot).path.clone();
    assert!(same_content(&installed, image2));
}

/// Where release 2's changed chunks lie.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Spread evenly over the image (one every `100 / PERCENT` chunks).
    Spread,
    /// One run in the middle of the image.
    Contiguous,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" => Ok(Self::Spread),
            "contiguous" => Ok(Self::Contiguous),
            _ => Err(format!("layout {s:?}: expected spread or contiguous")),
        }
    }
}

/// What [`change_chunks`] did.
struct Changes {
    size: u64,
    count: u64,
    changed: u64,
}

/// Writes to `image2` a copy of `image` with `percent` % of its chunks
/// (at least one) replaced with random bytes, laid out as `layout` says.
fn change_chunks(
    image: &Path,
    image2: &Path,
    chunk_size: u32,
    percent: f64,
    layout: Layout,
) -> Changes {
    std::fs::copy(image, image2).unwrap();
    let size = std::fs::metadata(image2).unwrap().len();
    let count = Manifest::chunk_count_for(size, chunk_size);
    let changed = ((count as f64) * percent / 100.0)
        .ceil()
        .clamp(1.0, count as f64) as u64;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(image2)
        .unwrap();
    let mut fresh = vec![0u8; chunk_size as usize];
    for k in 0..changed {
        let index = match layout {
            Layout::Spread => k * count / changed,
            Layout::Contiguous => (count - changed) / 2 + k,
        };
        let (offset, len) = Manifest::chunk_layout(chunk_size, size, index);
        aws_lc_rs::rand::fill(&mut fresh[..len]).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&fresh[..len]).unwrap();
    }
    file.sync_all().unwrap();
    Changes {
        size,
        count,
        changed,
    }
}

/// A TUF repository's role keys, in a software keystore under `dir`.
fn tuf_spec(dir: &Path) -> RootSpec {
    let store = Arc::new(SoftKeyStore::open(&dir.join("tuf-keys"), KekProtection::File).unwrap());
    let key = |label: &str| {
        let label = label.parse().unwrap();
        store.generate(&label, Algorithm::EcdsaP256Sha256).unwrap();
        let store: Arc<dyn KeyStore> = store.clone();
        KeyRef::new(store, label).unwrap()
    };
    let day = std::time::Duration::from_secs(86_400);
    RootSpec {
        root: RoleSpec::single(key("tuf-root"), 365 * day),
        targets: RoleSpec::single(key("tuf-targets"), 30 * day),
        snapshot: RoleSpec::single(key("tuf-snapshot"), 7 * day),
        timestamp: RoleSpec::single(key("tuf-timestamp"), day),
    }
}

/// Adds release `name` (`<name>.manifest.json`, `<name>.image`, as the
/// agent names them) and publishes the repository to `www`.
fn publish_tuf(repo: &mut Repository, www: &Path, name: &str, manifest: &Path, image: &Path) {
    repo.add_target(&format!("{name}.manifest.json"), manifest)
        .unwrap();
    repo.add_target(&format!("{name}.image"), image).unwrap();
    repo.sign_and_publish(www).unwrap();
}

/// Installs release `name` from the repository at `url` the way the
/// agent's `Updates::install` does (crates/agent/src/updates.rs, not
/// reachable from here: it is crate-private and needs a whole agent):
/// refresh the TUF metadata, fetch and verify the manifest, then stream
/// the image through `Client::open_target_range` and `RangedSource`.
fn install_over_http(
    dev: &Device1,
    keys: &TrustedKeys,
    root: &[u8],
    url: &str,
    name: &str,
) -> InstallReport {
    let client = Client::new(
        root,
        &format!("{url}metadata/"),
        &format!("{url}targets/"),
        &dev.state.join("tuf"),
        Limits {
            max_fetch_target_size: update::manifest::MAX_WIRE_BYTES as u64,
            ..Limits::default()
        },
    )
    .unwrap();
    let wire = client
        .fetch_target(&format!("{name}.manifest.json"))
        .unwrap();
    let installer = Installer::new(&dev.boot, &dev.slots, &dev.state).unwrap();
    let device = device_state(dev, &installer, keys);
    let verified = SignedManifest::verify(&wire, keys, 1, &device).unwrap();
    let image = format!("{name}.image");
    let open = |at: u64, end: Option<u64>| {
        match end {
            Some(end) => client.open_target_range(&image, at, end),
            None => client.open_target_from(&image, at),
        }
        .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let mut source = RangedSource::new(open, RANGE_GAP);
    installer.install(&verified, &mut source).unwrap()
}

fn adaptive_http(
    image: &Path,
    work: &Path,
    chunk_size: u32,
    percent: f64,
    layout: Layout,
    url: &str,
) {
    let publisher = work.join("publisher");
    let www = work.join("www");
    let v1 = publish_release(image, &publisher, 1, chunk_size);
    let keys = trusted_keys(&publisher.join("trusted.json"));
    let mut repo = Repository::init(&work.join("tuf-repo"), tuf_spec(&publisher)).unwrap();
    let dev = device(&work.join("device"));

    publish_tuf(&mut repo, &www, "release-1", &v1, image);
    let first = install_over_http(&dev, &keys, repo.root_json(), url, "release-1");
    boot_and_commit(&dev, &keys, &first);

    let image2 = work.join("image-v2");
    let changes = change_chunks(image, &image2, chunk_size, percent, layout);
    let v2 = publish_release(&image2, &publisher, 2, chunk_size);
    publish_tuf(&mut repo, &www, "release-2", &v2, &image2);
    let second = install_over_http(&dev, &keys, repo.root_json(), url, "release-2");
    check_second(&dev, &first, &second, &image2, changes.size);
    // One line of `key=value` for bench/update.sh to read.
    println!(
        "image_bytes={} chunks={} changed={} downloaded_bytes={} reused_bytes={} \
         install_s={:.3} release1_downloaded_bytes={} release1_install_s={:.3}",
        changes.size,
        changes.count,
        changes.changed,
        second.downloaded_bytes,
        second.reused_bytes,
        second.duration.as_secs_f64(),
        first.downloaded_bytes,
        first.duration.as_secs_f64(),
    );
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        b.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
    }
}

/// `VmHWM` (peak resident memory) of this process, in kB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
