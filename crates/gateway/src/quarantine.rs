//! Quarantine: strike counting, the set of quarantined devices, and its
//! state file.
//!
//! [`Quarantine`] counts strikes (refused packets, rate-limit hits) per
//! device in a sliding window; at the policy's threshold the device is
//! quarantined for the policy's period. An operator can quarantine a
//! device by hand (for a period or until released) and release it.
//!
//! Opened with [`Quarantine::open`], every change to the set is written
//! to `quarantine.json` in the state directory before the call returns
//! (temporary file, fsync, rename, fsync of the directory), so a device
//! quarantined before a restart is still quarantined after it. Entries
//! that expired while the gateway was down are dropped on load; a file
//! that does not parse is an error naming it: silently starting with an
//! empty set would release every device.
//!
//! The logic runs on [`tokio::time::Instant`] (tests use paused time);
//! only the file holds wall-clock times, converted at the edges.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::audit::{Audit, GatewayEvent, action};
use crate::policy::QuarantineRule;
use crate::{Error, Result, ViolationKind};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "quarantine.json";
const FORMAT_VERSION: u32 = 1;

/// One quarantined device.
#[derive(Debug, Clone)]
struct Hold {
    /// `None`: until an operator releases it.
    until: Option<Instant>,
    since: SystemTime,
    until_wall: Option<SystemTime>,
    reason: String,
    manual: bool,
}

#[derive(Debug, Default)]
struct Record {
    strikes: VecDeque<Instant>,
    hold: Option<Hold>,
}

impl Record {
    fn held_at(&self, now: Instant) -> Option<&Hold> {
        self.hold
            .as_ref()
            .filter(|h| h.until.is_none_or(|u| u > now))
    }
}

/// A device under quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// Policy name of the device.
    pub device: String,
    /// Time left; `None` until an operator releases it.
    #[serde(skip)]
    pub remaining: Option<Duration>,
    /// When it started (seconds since the Unix epoch).
    pub since: u64,
    /// When it ends (seconds since the Unix epoch), if it does by itself.
    pub until: Option<u64>,
    /// Why: the strikes that triggered it, or the operator's reason.
    pub reason: String,
    /// Whether an operator put it there.
    pub manual: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    devices: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    device: String,
    since: u64,
    until: Option<u64>,
    reason: String,
    manual: bool,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Strike counting and quarantine state, queryable and releasable.
#[derive(Debug, Default)]
pub struct Quarantine {
    records: Mutex<HashMap<String, Record>>,
    /// Where the set is kept; `None`: memory only.
    file: Option<PathBuf>,
}

impl Quarantine {
    /// Loads the quarantine set from `state_dir` (creating the directory
    /// if needed); later changes are saved there.
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::StateIo {
            what: "creating",
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(STATE_FILE);
        let mut records = HashMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| Error::StateCorrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != FORMAT_VERSION {
                    return Err(Error::StateCorrupt {
                        path,
                        reason: format!(
                            "format version {} (this gateway reads {FORMAT_VERSION})",
                            file.version
                        ),
                    });
                }
                let (wall, now) = (SystemTime::now(), Instant::now());
                for e in file.devices {
                    let until_wall = e.until.map(|u| UNIX_EPOCH + Duration::from_secs(u));
                    let until = match until_wall {
                        None => None,
                        Some(u) => match u.duration_since(wall) {
                            Ok(left) if !left.is_zero() => Some(now + left),
                            // Expired while the gateway was down.
                            _ => continue,
                        },
                    };
                    records.insert(
                        e.device,
                        Record {
                            strikes: VecDeque::new(),
                            hold: Some(Hold {
                                until,
                                since: UNIX_EPOCH + Duration::from_secs(e.since),
                                until_wall,
                                reason: e.reason,
                                manual: e.manual,
                            }),
                        },
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::StateIo {
                    what: "reading",
                    path,
                    source,
                });
            }
        }
        Ok(Self {
            records: Mutex::new(records),
            file: Some(path),
        })
    }

    /// The state file, if the set is persisted.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the current set; called with the lock held so that writes
    /// land in the order of the changes. Changes are rare (a quarantine
    /// starting or being released), so the fsync on the caller's task is
    /// accepted.
    fn save(&self, map: &HashMap<String, Record>, now: Instant) -> Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let mut devices: Vec<Entry> = map
            .iter()
            .filter_map(|(d, r)| {
                r.held_at(now).map(|h| Entry {
                    device: d.clone(),
                    since: unix(h.since),
                    until: h.until_wall.map(unix),
                    reason: h.reason.clone(),
                    manual: h.manual,
                })
            })
            .collect();
        devices.sort_by(|a, b| a.device.cmp(&b.device));
        let bytes = serde_json::to_vec_pretty(&StateFile {
            version: FORMAT_VERSION,
            devices,
        })
        .map_err(|e| Error::StateWrite {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        keys::fsio::write_atomic(path, &bytes, 0o600).map_err(|e| Error::StateWrite {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    fn hold(
        &self,
        map: &mut HashMap<String, Record>,
        device: &str,
        duration: Option<Duration>,
        reason: String,
        manual: bool,
        now: Instant,
    ) -> Result<()> {
        let wall = SystemTime::now();
        let r = map.entry(device.to_owned()).or_default();
        r.strikes.clear();
        r.hold = Some(Hold {
            until: duration.map(|d| now + d),
            since: wall,
            until_wall: duration.map(|d| wall + d),
            reason,
            manual,
        });
        self.save(map, now)
    }

    /// [`Quarantine::strike`] now, for `kind` broken by `device` from
    /// `peer`; a strike that starts a quarantine is reported to `audit`.
    pub fn strike_reported(
        &self,
        audit: &dyn Audit,
        rule: &QuarantineRule,
        device: &str,
        peer: SocketAddr,
        kind: ViolationKind,
    ) -> bool {
        let started = self.strike(device, rule, Instant::now());
        if started {
            audit.record(GatewayEvent {
                action: action::QUARANTINE_START,
                device: Some(device.to_owned()),
                peer,
                reason: Some(kind),
                detail: format!(
                    "{} strikes within {:?}: quarantined for {:?}",
                    rule.strikes, rule.window, rule.duration
                ),
            });
        }
        started
    }

    /// Records a strike for `device`; returns true if this put it in
    /// quarantine. A failure to save the state file is logged: the
    /// quarantine holds in memory regardless.
    pub fn strike(&self, device: &str, rule: &QuarantineRule, now: Instant) -> bool {
        let mut map = self.lock();
        if map.len() > 4096 {
            map.retain(|_, r| {
                r.held_at(now).is_some()
                    || r.strikes
                        .back()
                        .is_some_and(|&t| now.saturating_duration_since(t) < rule.window)
            });
        }
        let r = map.entry(device.to_owned()).or_default();
        if r.held_at(now).is_some() {
            return false;
        }
        while r
            .strikes
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= rule.window)
        {
            r.strikes.pop_front();
        }
        r.strikes.push_back(now);
        if r.strikes.len() < rule.strikes as usize {
            return false;
        }
        let reason = format!("{} strikes within {:?}", rule.strikes, rule.window);
        if let Err(e) = self.hold(&mut map, device, Some(rule.duration), reason, false, now) {
            tracing::error!(device, error = %e, "quarantine not saved; it holds until restart");
        }
        true
    }

    /// Time left if `device` is quarantined at `now` ([`Duration::MAX`]
    /// for a quarantine that lasts until released).
    pub fn remaining(&self, device: &str, now: Instant) -> Option<Duration> {
        self.lock()
            .get(device)
            .and_then(|r| r.held_at(now))
            .map(|h| h.until.map_or(Duration::MAX, |u| u - now))
    }

    /// Quarantines `device` for `duration` on the gateway's own account
    /// (e.g. anomaly detection); same as [`Self::quarantine_because`]
    /// with a generic reason.
    pub fn quarantine(&self, device: &str, duration: Duration, now: Instant) {
        self.quarantine_because(device, duration, "automatic", now);
    }

    /// Quarantines `device` for `duration` on the gateway's own account,
    /// recording `reason`. A failure to save the state file is logged:
    /// the quarantine holds in memory regardless.
    pub fn quarantine_because(&self, device: &str, duration: Duration, reason: &str, now: Instant) {
        let mut map = self.lock();
        // Never shortens a quarantine in force (an operator's until
        // release, or a longer one).
        let ends = now + duration;
        if map
            .get(device)
            .and_then(|r| r.held_at(now))
            .is_some_and(|h| h.until.is_none_or(|u| u >= ends))
        {
            return;
        }
        if let Err(e) = self.hold(
            &mut map,
            device,
            Some(duration),
            reason.to_owned(),
            false,
            now,
        ) {
            tracing::error!(device, error = %e, "quarantine not saved; it holds until restart");
        }
    }

    /// Quarantines `device` by an operator's hand, for `duration` or
    /// (`None`) until released; saved before it returns.
    pub fn quarantine_manual(
        &self,
        device: &str,
        duration: Option<Duration>,
        reason: &str,
        now: Instant,
    ) -> Result<()> {
        let mut map = self.lock();
        self.hold(&mut map, device, duration, reason.to_owned(), true, now)
    }

    /// Releases `device` (and forgets its strikes); returns whether it
    /// was quarantined. Saved before it returns.
    pub fn release(&self, device: &str, now: Instant) -> Result<bool> {
        let mut map = self.lock();
        let was = map.remove(device).is_some_and(|r| r.held_at(now).is_some());
        if was {
            self.save(&map, now)?;
        }
        Ok(was)
    }

    /// Every device quarantined at `now`, by name.
    pub fn list(&self, now: Instant) -> Vec<Quarantined> {
        let map = self.lock();
        let mut out: Vec<_> = map
            .iter()
            .filter_map(|(d, r)| {
                r.held_at(now).map(|h| Quarantined {
                    device: d.clone(),
                    remaining: h.until.map(|u| u - now),
                    since: unix(h.since),
                    until: h.until_wall.map(unix),
                    reason: h.reason.clone(),
                    manual: h.manual,
                })
            })
            .collect();
        out.sort_by(|a, b| a.device.cmp(&b.device));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: QuarantineRule = QuarantineRule {
        strikes: 3,
        window: Duration::from_secs(10),
        duration: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn strikes_in_the_window_quarantine_and_it_lifts() {
        let q = Quarantine::default();
        let t0 = Instant::now();
        assert!(!q.strike("d", &RULE, t0));
        assert!(!q.strike("d", &RULE, t0 + Duration::from_secs(5)));
        // The first strike has left the window: still two.
        assert!(!q.strike("d", &RULE, t0 + Duration::from_secs(11)));
        assert!(q.strike("d", &RULE, t0 + Duration::from_secs(12)));
        let at = t0 + Duration::from_secs(13);
        assert_eq!(q.remaining("d", at), Some(Duration::from_secs(59)));
        let listed = q.list(at);
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].manual);
        assert_eq!(q.remaining("other", at), None);
        tokio::time::advance(Duration::from_secs(73)).await;
        assert_eq!(q.remaining("d", Instant::now()), None);
        assert!(q.list(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn manual_quarantine_and_release() {
        let q = Quarantine::default();
        let now = Instant::now();
        q.quarantine("d", Duration::from_secs(5), now);
        assert!(q.remaining("d", now).is_some());
        q.quarantine_manual("forever", None, "until released", now)
            .unwrap();
        // The gateway's own quarantine never shortens the operator's.
        q.quarantine("forever", Duration::from_secs(1), now);
        tokio::time::advance(Duration::from_secs(86_400)).await;
        let now = Instant::now();
        assert_eq!(q.remaining("forever", now), Some(Duration::MAX));
        assert_eq!(q.remaining("d", now), None);
        assert!(q.release("forever", now).unwrap());
        assert!(!q.release("forever", now).unwrap());
        assert_eq!(q.remaining("forever", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn state_survives_reopening_and_expired_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        {
            let q = Quarantine::open(dir.path()).unwrap();
            assert!(q.list(now).is_empty());
            q.quarantine_manual("manual", None, "operator: firmware audit", now)
                .unwrap();
            for _ in 0..3 {
                q.strike("auto", &RULE, now);
            }
            q.quarantine_because("short", Duration::from_secs(1), "x", now);
        }
        // Wall time passes while the gateway is down (the file holds wall
        // clock times; paused tokio time does not move them).
        let path = dir.path().join(STATE_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut file: StateFile = serde_json::from_str(&text).unwrap();
        for e in &mut file.devices {
            if e.device == "short" {
                e.until = Some(unix(SystemTime::now()) - 10);
            }
        }
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

        let q = Quarantine::open(dir.path()).unwrap();
        let now = Instant::now();
        let listed = q.list(now);
        let names: Vec<_> = listed.iter().map(|q| q.device.as_str()).collect();
        assert_eq!(names, ["auto", "manual"]);
        assert!(listed[1].manual && listed[1].remaining.is_none());
        assert_eq!(listed[1].reason, "operator: firmware audit");
        let left = q.remaining("auto", now).unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(55));
        assert!(q.release("manual", now).unwrap());
        let q = Quarantine::open(dir.path()).unwrap();
        assert_eq!(q.list(Instant::now()).len(), 1);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for bad in [&b"{not json"[..], b"{\"version\":9,\"devices\":[]}"] {
            std::fs::write(&path, bad).unwrap();
            let e = Quarantine::open(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }
}
