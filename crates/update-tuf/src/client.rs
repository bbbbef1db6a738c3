//! Device side: load repository metadata with every TUF check, add a clock
//! step-back check, and fetch targets bounded by their signed length.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tough::schema::{Role, Root, Signed};
use tough::{RepositoryLoader, TargetName};
use url::Url;

use crate::clock::{Clock, SystemClock, sub, to_jiff};
use crate::error::classify;
use crate::publish::runtime;
use crate::transport::{HttpTransport, RateLimits, TlsRoots, client_config};
use crate::{Error, Result, SIGNED_AT_FIELD};

/// Bounds on what a repository may make a device download, and how fast.
///
/// The size limits apply where the signed metadata declares no length
/// (root and timestamp metadata always; snapshot and targets metadata
/// when the metadata above omits it); targets are always bounded by their
/// signed length.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `N.root.json` accepted.
    pub max_root_size: u64,
    /// Largest `targets.json` accepted when the snapshot omits its length.
    pub max_targets_size: u64,
    /// Largest `timestamp.json` accepted.
    pub max_timestamp_size: u64,
    /// Largest `snapshot.json` accepted when the timestamp omits its length.
    pub max_snapshot_size: u64,
    /// Most root versions walked in one refresh.
    pub max_root_updates: u64,
    /// Largest target [`Client::fetch_target`] reads into memory.
    pub max_fetch_target_size: u64,
    /// A transfer that moves fewer than `min_bytes_per_sec * rate_window`
    /// bytes in any window is abandoned (slow retrieval).
    pub min_bytes_per_sec: u64,
    /// The window over which `min_bytes_per_sec` is measured.
    pub rate_window: Duration,
    /// Longest time one file's transfer may take, connection included.
    pub deadline: Duration,
    /// How far the clock may lag behind the newest signed time seen before
    /// it counts as stepped back.
    pub clock_tolerance: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_root_size: 1024 * 1024,
            max_targets_size: 10 * 1024 * 1024,
            max_timestamp_size: 64 * 1024,
            max_snapshot_size: 1024 * 1024,
            max_root_updates: 1024,
            max_fetch_target_size: 1024 * 1024,
            min_bytes_per_sec: 1024,
            rate_window: Duration::from_secs(10),
            deadline: Duration::from_secs(300),
            clock_tolerance: Duration::from_secs(3600),
        }
    }
}

/// A target as the signed targets metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Its name.
    pub name: String,
    /// Its exact length in bytes.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

/// What the device remembers between refreshes, beside tough's own files.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ClockState {
    /// Newest signing time seen in verified timestamp metadata (RFC 3339).
    newest_signed_at: Option<String>,
    /// Its timestamp metadata version.
    timestamp_version: u64,
}

const CLOCK_STATE: &str = "bulwark-clock.json";

/// A device's verified view of an update repository.
///
/// Constructing one runs the full TUF client workflow through tough's
/// `RepositoryLoader`: walk the root chain from the trusted root, then
/// timestamp, snapshot and targets metadata, checking signatures against
/// thresholds, versions against what the datastore remembers (rollback),
/// hashes and versions against the metadata above (mix-and-match), expiry
/// (freeze) and lengths (endless data). Before and after, it checks the
/// clock against the newest signed time seen.
///
/// The API is blocking: it drives its own single-threaded runtime, so async
/// callers use `spawn_blocking`.
#[derive(Debug)]
pub struct Client {
    repo: tough::Repository,
    clock: Arc<dyn Clock>,
    limits: Limits,
    rt: tokio::runtime::Runtime,
    /// For ranged downloads, which bypass tough's whole-file reader.
    transport: HttpTransport,
    targets_url: Url,
}

impl Client {
    /// Loads and verifies the repository at `metadata_base_url` /
    /// `targets_base_url` (`http://`, `https://` or `file://`), starting from
    /// `trusted_root` (the root metadata the device was provisioned with)
    /// or the newer verified root kept in `datastore`.
    pub fn new(
        trusted_root: &[u8],
        metadata_base_url: &str,
        targets_base_url: &str,
        datastore: &Path,
        limits: Limits,
    ) -> Result<Self> {
        Self::new_with_clock(
            trusted_root,
            metadata_base_url,
            targets_base_url,
            datastore,
            limits,
            Arc::new(SystemClock),
        )
    }

    /// [`Client::new`] with a chosen clock for the step-back and expiry
    /// checks (tough also checks expiry against the system clock).
    /// `https://` mirrors are checked against the platform trust store.
    pub fn new_with_clock(
        trusted_root: &[u8],
        metadata_base_url: &str,
        targets_base_url: &str,
        datastore: &Path,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::new_with_tls(
            trusted_root,
            metadata_base_url,
            targets_base_url,
            datastore,
            limits,
            clock,
            &TlsRoots::Platform,
        )
    }

    /// [`Client::new_with_clock`] with the trust anchors for `https://`
    /// mirrors. TUF authenticates every byte either way; TLS keeps which
    /// release a device fetches from a network observer and stops a
    /// network attacker from serving anything at all.
    pub fn new_with_tls(
        trusted_root: &[u8],
        metadata_base_url: &str,
        targets_base_url: &str,
        datastore: &Path,
        limits: Limits,
        clock: Arc<dyn Clock>,
        tls_roots: &TlsRoots,
    ) -> Result<Self> {
        let metadata_url = parse_url(metadata_base_url)?;
        let targets_url = parse_url(targets_base_url)?;
        let base_targets_url = targets_url.clone();
        // Trust anchors are loaded only when a mirror needs them, so an
        // http:// or file:// repository works on a device without any.
        let tls = if metadata_url.scheme() == "https" || targets_url.scheme() == "https" {
            Some(client_config(tls_roots)?)
        } else {
            None
        };
        std::fs::create_dir_all(datastore).map_err(|e| io(datastore, e))?;

        // Refuse before trusting any expiry check made against this clock.
        let mut state = read_state(datastore);
        check_clock(
            clock.as_ref(),
            state.newest_signed_at.as_deref(),
            limits.clock_tolerance,
        )?;

        let root = newest_root(trusted_root, datastore);
        let transport = HttpTransport::new(
            RateLimits {
                min_bytes_per_sec: limits.min_bytes_per_sec,
                rate_window: limits.rate_window,
                deadline: limits.deadline,
            },
            tls,
        );
        let rt = runtime()?;
        let repo = rt
            .block_on(
                RepositoryLoader::new(&root, metadata_url, targets_url)
                    .transport(transport.clone())
                    .datastore(datastore)
                    .limits(tough::Limits {
                        max_root_size: limits.max_root_size,
                        max_targets_size: limits.max_targets_size,
                        max_timestamp_size: limits.max_timestamp_size,
                        max_snapshot_size: limits.max_snapshot_size,
                        max_root_updates: limits.max_root_updates,
                    })
                    .expiration_enforcement(tough::ExpirationEnforcement::Safe)
                    .load(),
            )
            .map_err(|e| classify(&e))?;

        let client = Self {
            repo,
            clock,
            limits,
            rt,
            transport,
            targets_url: base_targets_url,
        };
        client.check_expiry()?;

        // The signing time is covered by the timestamp signature: a clock
        // behind it (beyond the tolerance) was set back, even on a device
        // that has never seen this repository before.
        let timestamp = &client.repo.timestamp().signed;
        if let Some(signed_at) = timestamp
            ._extra
            .get(SIGNED_AT_FIELD)
            .and_then(|v| v.as_str())
        {
            check_clock(
                client.clock.as_ref(),
                Some(signed_at),
                client.limits.clock_tolerance,
            )?;
            let newer = match state
                .newest_signed_at
                .as_deref()
                .map(str::parse::<jiff::Timestamp>)
            {
                Some(Ok(seen)) => signed_at.parse::<jiff::Timestamp>().is_ok_and(|s| s > seen),
                _ => true,
            };
            if newer {
                state.newest_signed_at = Some(signed_at.to_owned());
                state.timestamp_version = timestamp.version.get();
                write_state(datastore, &state)?;
            }
        }
        tracing::info!(
            root_version = client.root_version(),
            timestamp_version = timestamp.version.get(),
            "update repository metadata verified"
        );
        Ok(client)
    }

    /// The root version now trusted.
    pub fn root_version(&self) -> u64 {
        self.repo.root().signed.version.get()
    }

    /// The verified timestamp metadata version.
    pub fn timestamp_version(&self) -> u64 {
        self.repo.timestamp().signed.version.get()
    }

    /// The verified targets metadata version (the release).
    pub fn targets_version(&self) -> u64 {
        self.repo.targets().signed.version.get()
    }

    /// Every target the verified metadata lists, sorted by name.
    pub fn targets(&self) -> Vec<TargetInfo> {
        let mut out: Vec<TargetInfo> = self
            .repo
            .all_targets()
            .filter_map(|(name, target)| {
                let sha256 = <[u8; 32]>::try_from(target.hashes.sha256.as_ref()).ok()?;
                Some(TargetInfo {
                    name: name.raw().to_owned(),
                    length: target.length,
                    sha256,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The signed description of target `name`.
    pub fn target(&self, name: &str) -> Result<TargetInfo> {
        self.targets()
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::TargetNotFound {
                name: name.to_owned(),
            })
    }

    /// Downloads target `name` into memory and returns its bytes after
    /// checking length and SHA-256 against the signed metadata. For small
    /// files (the update manifest); refuses targets above
    /// [`Limits::max_fetch_target_size`] before downloading.
    pub fn fetch_target(&self, name: &str) -> Result<Vec<u8>> {
        let info = self.target(name)?;
        if info.length > self.limits.max_fetch_target_size {
            return Err(Error::TargetTooLarge {
                name: name.to_owned(),
                length: info.length,
                limit: self.limits.max_fetch_target_size,
            });
        }
        let mut reader = self.open_target(name)?;
        let mut out = Vec::with_capacity(usize::try_from(info.length).unwrap_or(0));
        reader.read_to_end(&mut out).map_err(Error::from_io)?;
        Ok(out)
    }

    /// Opens target `name` for streaming. The reader yields at most the
    /// signed length (a server sending more fails with
    /// [`Error::EndlessData`]), and its final read fails unless the whole
    /// content matched the signed SHA-256: bytes read before the end are
    /// not yet verified, so a consumer must verify them itself before use
    /// (the update manifest's chunk hashes) or discard them on error.
    pub fn open_target(&self, name: &str) -> Result<TargetReader<'_>> {
        self.check_expiry()?;
        let info = self.target(name)?;
        let target_name = TargetName::new(name).map_err(|_| Error::InvalidTargetName {
            name: name.to_owned(),
            reason: "not a valid TUF target name",
        })?;
        let repo = self.repo.clone();
        let (tx, rx) = mpsc::channel(8);
        let task_name = name.to_owned();
        self.rt.spawn(async move {
            use futures_util::StreamExt;
            let stream = match repo.read_target(&target_name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    let _ = tx
                        .send(Err(Error::TargetNotFound { name: task_name }))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(classify(&e))).await;
                    return;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let item = item.map(Some).map_err(|e| match classify(&e) {
                    Error::Inconsistent { detail, .. } => Error::TargetHashMismatch {
                        name: task_name.clone(),
                        detail,
                    },
                    other => other,
                });
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            // tough's digest check runs when the stream ends: reaching
            // here means the whole target matched its signed hash.
            let _ = tx.send(Ok(None)).await;
        });
        Ok(TargetReader {
            rt: &self.rt,
            name: name.to_owned(),
            rx,
            buf: tough::Bytes::new(),
            remaining: info.length,
            state: ReadState::Reading,
        })
    }

    /// Opens target `name` from byte `offset` on, for a download that
    /// resumes where an earlier one broke off: asks for
    /// `Range: bytes=<offset>-` and yields exactly `length - offset`
    /// bytes. A `206` whose `Content-Range` is not
    /// `bytes <offset>-<length-1>/<length>` is refused; a server that
    /// ignores the range (`200`) is read from the start and the first
    /// `offset` bytes are discarded. Either way no more than the signed
    /// length is read (endless-data defence), with the same rate and
    /// deadline limits.
    ///
    /// The whole-target hash cannot be checked (the prefix is not here):
    /// the reader's clean end proves the length only, so the consumer
    /// must verify every byte itself, as the update installer does with
    /// the signed manifest's chunk hashes (and a final re-read of the
    /// slot).
    pub fn open_target_from(&self, name: &str, offset: u64) -> Result<TargetReader<'_>> {
        self.open_ranged(name, offset, None)
    }

    /// Opens bytes `start..end` of target `name`, for a download of only
    /// the parts a consumer needs (the update installer's chunks that the
    /// active slot does not hold): asks for
    /// `Range: bytes=<start>-<end-1>` and yields exactly `end - start`
    /// bytes. A `206` whose `Content-Range` is not
    /// `bytes <start>-<end-1>/<length>` is refused; a server that ignores
    /// the range (`200`) is read from the start, the first `start` bytes
    /// discarded and the transfer dropped at `end`. A range that is empty
    /// or reaches past the signed length is refused before any request.
    ///
    /// As with [`Client::open_target_from`], no hash covers the range:
    /// the consumer must verify every byte itself.
    pub fn open_target_range(&self, name: &str, start: u64, end: u64) -> Result<TargetReader<'_>> {
        self.open_ranged(name, start, Some(end))
    }

    /// [`Client::open_target_from`] (`end: None`) and
    /// [`Client::open_target_range`].
    fn open_ranged(&self, name: &str, offset: u64, end: Option<u64>) -> Result<TargetReader<'_>> {
        self.check_expiry()?;
        let info = self.target(name)?;
        if offset > info.length {
            return Err(Error::Transport {
                url: name.to_owned(),
                detail: format!(
                    "resume offset {offset} beyond the signed length {}",
                    info.length
                ),
            });
        }
        if let Some(end) = end
            && (end <= offset || end > info.length)
        {
            return Err(Error::Transport {
                url: name.to_owned(),
                detail: format!(
                    "range {offset}..{end} is empty or beyond the signed length {}",
                    info.length
                ),
            });
        }
        // Where the reader stops: the range's end, else the target's.
        let stop = end.unwrap_or(info.length);
        // Consistent snapshots: targets are stored as `<sha256>.<name>`.
        let url = self
            .targets_url
            .join(&format!("{}.{name}", hex::encode(info.sha256)))
            .map_err(|e| Error::InvalidUrl {
                url: name.to_owned(),
                reason: e.to_string(),
            })?;
        let transport = self.transport.clone();
        let (tx, rx) = mpsc::channel(8);
        let length = info.length;
        let url_text = url.to_string();
        self.rt.spawn(async move {
            use futures_util::StreamExt;
            let fail = |e: tough::TransportError| crate::error::classify_transport(&e);
            let (reply, stream) = match transport.fetch_range(url, offset, end, length).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(fail(e))).await;
                    return;
                }
            };
            let mut position = match reply {
                crate::transport::RangeReply::Partial => offset,
                crate::transport::RangeReply::Full => 0,
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let mut bytes = match item {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(fail(e))).await;
                        return;
                    }
                };
                let next = position.saturating_add(bytes.len() as u64);
                // Past the signed length, or a 206 longer than the range
                // its Content-Range announced.
                let limit = match reply {
                    crate::transport::RangeReply::Partial => stop,
                    crate::transport::RangeReply::Full => length,
                };
                if next > limit {
                    let _ = tx
                        .send(Err(Error::EndlessData {
                            url: url_text.clone(),
                            limit,
                        }))
                        .await;
                    return;
                }
                if next > stop {
                    // A 200 reply past the range: keep only its end and
                    // drop the transfer (the connection closes with it).
                    let keep = usize::try_from(stop.saturating_sub(position))
                        .unwrap_or(bytes.len())
                        .min(bytes.len());
                    bytes.truncate(keep);
                }
                if position < offset {
                    // A 200 reply: drop what precedes the range.
                    let skip = usize::try_from((offset - position).min(bytes.len() as u64))
                        .unwrap_or(bytes.len());
                    let _ = bytes.split_to(skip);
                }
                position = next.min(stop);
                if !bytes.is_empty() && tx.send(Ok(Some(bytes))).await.is_err() {
                    return;
                }
                // A bounded range ends here; an open one is read to its
                // end, so that a server sending more is caught.
                if end.is_some() && position == stop {
                    break;
                }
            }
            if position == stop {
                let _ = tx.send(Ok(None)).await;
            }
        });
        Ok(TargetReader {
            rt: &self.rt,
            name: name.to_owned(),
            rx,
            buf: tough::Bytes::new(),
            remaining: stop - offset,
            state: ReadState::Reading,
        })
    }

    /// Our own expiry check against `clock` (tough's uses the system
    /// clock): every role must still be valid now.
    fn check_expiry(&self) -> Result<()> {
        let now = to_jiff(self.clock.now());
        let roles = [
            ("root", self.repo.root().signed.expires()),
            ("timestamp", self.repo.timestamp().signed.expires()),
            ("snapshot", self.repo.snapshot().signed.expires()),
            ("targets", self.repo.targets().signed.expires()),
        ];
        for (role, expires) in roles {
            if expires <= now {
                return Err(Error::Expired { role: role.into() });
            }
        }
        Ok(())
    }
}

/// A target being downloaded; see [`Client::open_target`]. I/O errors
/// carry an [`Error`]: get it back with [`Error::from_io`].
#[derive(Debug)]
pub struct TargetReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    name: String,
    /// `Ok(None)` marks the end of a stream whose hash matched; a channel
    /// closed without it is a failure, never a clean end.
    rx: mpsc::Receiver<Result<Option<tough::Bytes>>>,
    buf: tough::Bytes,
    remaining: u64,
    state: ReadState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    Verified,
    Failed,
}

impl TargetReader<'_> {
    fn fail(&mut self, e: Error) -> std::io::Error {
        self.state = ReadState::Failed;
        std::io::Error::other(e)
    }
}

impl Read for TargetReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.state {
                ReadState::Verified => return Ok(0),
                ReadState::Failed => {
                    return Err(std::io::Error::other("target download already failed"));
                }
                ReadState::Reading => {}
            }
            match self.rt.block_on(self.rx.recv()) {
                Some(Ok(Some(bytes))) => {
                    let len = bytes.len() as u64;
                    // tough refuses the chunk that crosses the signed
                    // length; this is a second guard on our side.
                    if len > self.remaining {
                        let limit = self.remaining;
                        return Err(self.fail(Error::EndlessData {
                            url: self.name.clone(),
                            limit,
                        }));
                    }
                    self.remaining -= len;
                    self.buf = bytes;
                }
                Some(Ok(None)) if self.remaining == 0 => self.state = ReadState::Verified,
                Some(Err(e)) => return Err(self.fail(e)),
                Some(Ok(None)) | None => {
                    let name = self.name.clone();
                    return Err(self.fail(Error::TargetTruncated { name }));
                }
            }
        }
        let n = out.len().min(self.buf.len());
        let chunk = self.buf.split_to(n);
        out.get_mut(..n)
            .ok_or_else(|| std::io::Error::other("buffer"))?
            .copy_from_slice(&chunk);
        Ok(n)
    }
}

fn parse_url(s: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| Error::InvalidUrl {
        url: s.to_owned(),
        reason: e.to_string(),
    })
}

/// The trusted root to start from: the datastore's copy when it is a
/// newer, self-consistent root (tough stores each root it verified there),
/// so a rotation survives restarts and revoked root keys stay revoked.
fn newest_root(provisioned: &[u8], datastore: &Path) -> Vec<u8> {
    let parse = |b: &[u8]| serde_json::from_slice::<Signed<Root>>(b).ok();
    let Ok(stored) = std::fs::read(datastore.join("root.json")) else {
        return provisioned.to_vec();
    };
    match (parse(provisioned), parse(&stored)) {
        (Some(p), Some(s))
            if s.signed.version > p.signed.version && s.signed.verify_role(&s).is_ok() =>
        {
            stored
        }
        _ => provisioned.to_vec(),
    }
}

/// Refuses a clock earlier than `seen` minus the tolerance.
fn check_clock(clock: &dyn Clock, seen: Option<&str>, tolerance: Duration) -> Result<()> {
    let Some(seen_str) = seen else {
        return Ok(());
    };
    let Ok(seen) = seen_str.parse::<jiff::Timestamp>() else {
        return Ok(());
    };
    let now = to_jiff(clock.now());
    if now < sub(seen, tolerance) {
        return Err(Error::ClockSteppedBack {
            now: now.to_string(),
            seen: seen.to_string(),
        });
    }
    Ok(())
}

fn read_state(datastore: &Path) -> ClockState {
    std::fs::read(datastore.join(CLOCK_STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_state(datastore: &Path, state: &ClockState) -> Result<()> {
    let path: PathBuf = datastore.join(CLOCK_STATE);
    let bytes = serde_json::to_vec(state).map_err(|e| Error::Metadata {
        detail: e.to_string(),
    })?;
    keys::fsio::write_atomic(&path, &bytes, 0o600).map_err(|e| Error::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[derive(Debug)]
    struct At(SystemTime);
    impl Clock for At {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[test]
    fn clock_within_tolerance_passes_and_beyond_fails() {
        let seen = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let seen_s = seen.to_string();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let tol = Duration::from_secs(60);
        assert!(check_clock(&At(base - Duration::from_secs(59)), Some(&seen_s), tol).is_ok());
        assert!(matches!(
            check_clock(&At(base - Duration::from_secs(61)), Some(&seen_s), tol),
            Err(Error::ClockSteppedBack { .. })
        ));
        assert!(check_clock(&At(base - Duration::from_secs(61)), None, tol).is_ok());
    }
}
