//! Progress of the install that is running, for `GET
//! /api/v1/update/progress`: an install of a large image takes minutes,
//! so a client starts it asynchronously (`Prefer: respond-async`) and
//! polls this instead of holding one request open for the whole install.
//!
//! The installer updates an [`InstallProgress`] of lock-free counters;
//! readers take a snapshot, so polling never slows the install down.

use std::sync::Arc;

use serde::Serialize;
use update::{InstallProgress, ProgressSnapshot};
use utoipa::ToSchema;

use crate::updates::InstallSummary;

/// The install that runs now: taken with the install flag, so a client
/// that polls right after starting one sees it running.
#[derive(Debug, Clone)]
pub(crate) struct RunningInstall {
    release: String,
    started_unix: i64,
    progress: Arc<InstallProgress>,
}

impl RunningInstall {
    /// An install of `release` starting now.
    pub(crate) fn new(release: &str) -> Self {
        Self {
            release: release.to_owned(),
            started_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
            progress: Arc::new(InstallProgress::new()),
        }
    }

    /// The counters the installer updates.
    pub(crate) fn progress(&self) -> Arc<InstallProgress> {
        self.progress.clone()
    }
}

/// Where an install is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProgressView {
    /// `preparing` (fetching and verifying the manifest, planning),
    /// `writing` (chunks verified and written), `flushing`,
    /// `verifying_slot` (the written slot re-read and checked), `marking`
    /// (the slot marked "try once"), `done`.
    #[schema(pattern = "^(preparing|writing|flushing|verifying_slot|marking|done)$")]
    phase: String,
    /// Chunks in the image (0 until the manifest verified).
    chunks_total: u64,
    /// Chunks verified and in the slot, resumed ones included.
    chunks_done: u64,
    /// Image size in bytes (0 until the manifest verified).
    bytes_total: u64,
    /// Bytes of the chunks done.
    bytes_done: u64,
    /// Bytes downloaded so far.
    downloaded_bytes: u64,
    /// Bytes copied from the active slot so far (adaptive update).
    reused_bytes: u64,
    /// Bytes an interrupted attempt had already written.
    resumed_bytes: u64,
    /// Bytes of the written slot re-read and verified so far.
    verified_bytes: u64,
}

impl From<ProgressSnapshot> for ProgressView {
    fn from(s: ProgressSnapshot) -> Self {
        let phase = serde_json::to_value(s.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            phase,
            chunks_total: s.chunks_total,
            chunks_done: s.chunks_done,
            bytes_total: s.bytes_total,
            bytes_done: s.bytes_done,
            downloaded_bytes: s.downloaded_bytes,
            reused_bytes: s.reused_bytes,
            resumed_bytes: s.resumed_bytes,
            verified_bytes: s.verified_bytes,
        }
    }
}

/// The running install, or the last one when none runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct InstallProgressView {
    /// Whether an install runs now.
    installing: bool,
    /// The release being installed.
    release: Option<String>,
    /// When the running install started (Unix seconds).
    started_unix: Option<i64>,
    /// Where the running install is.
    progress: Option<ProgressView>,
    /// The last install that ended since the agent started: with
    /// `installing` false, the outcome of the install a client started.
    last_install: Option<InstallSummary>,
}

impl InstallProgressView {
    /// The view of `running` (if any) and the last install.
    pub(crate) fn new(running: Option<RunningInstall>, last: Option<InstallSummary>) -> Self {
        match running {
            Some(r) => Self {
                installing: true,
                release: Some(r.release),
                started_unix: Some(r.started_unix),
                progress: Some(r.progress.snapshot().into()),
                last_install: last,
            },
            None => Self {
                installing: false,
                release: None,
                started_unix: None,
                progress: None,
                last_install: last,
            },
        }
    }
}
