//! The `[anomaly]` part of the policy: how per-device behaviour baselines
//! are learned, when a deviation is an alert, and whether alerts
//! quarantine the device (see [`crate::anomaly`]).
//!
//! ```toml
//! [anomaly]
//! enabled = true                # default
//! learning_secs = 86400         # learn for this long ...
//! learning_observations = 100   # ... and at least this many messages
//! interval_secs = 60            # rate counted per interval; alert cooldown
//! z_threshold = 4.0             # deviations beyond this many stddevs alert
//! stddev_floor = 0.1            # stddev never below 10% of the mean (nor 1)
//! max_kinds = 256               # distinct topics/paths/register blocks kept
//! max_kind_bytes = 16384        # ... and their total size
//! register_block = 16           # Modbus addresses per tracked block
//! action = "alert"              # or "quarantine"
//! quarantine_score = 10.0       # with "quarantine": one anomaly this strong
//! quarantine_anomalies = 5      # ... or this many anomalies ...
//! quarantine_window_secs = 600  # ... within this window
//! ```
//!
//! A quarantine lasts the `[quarantine]` part's `duration_secs`.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ranged, to_u32, to_usize};
use crate::Result;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnomalyFile {
    enabled: Option<bool>,
    learning_secs: Option<u64>,
    learning_observations: Option<u64>,
    interval_secs: Option<u64>,
    z_threshold: Option<f64>,
    stddev_floor: Option<f64>,
    max_kinds: Option<u64>,
    max_kind_bytes: Option<u64>,
    register_block: Option<u64>,
    action: Option<AnomalyAction>,
    quarantine_score: Option<f64>,
    quarantine_anomalies: Option<u64>,
    quarantine_window_secs: Option<u64>,
}

/// What the gateway does about an anomaly besides reporting it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyAction {
    /// Report only (the default: a baseline is a guess, not a rule).
    #[default]
    Alert,
    /// Report, and quarantine the device on a strong anomaly or on
    /// several within the window.
    Quarantine,
}

/// The validated `[anomaly]` part.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyPolicy {
    /// Whether devices are watched at all.
    pub enabled: bool,
    /// Shortest learning phase, from a device's first message.
    pub learning: Duration,
    /// Fewest messages in the learning phase.
    pub learning_observations: u64,
    /// Rate interval; also the cooldown between repeated alerts of a kind.
    pub interval: Duration,
    /// Standard deviations from the mean that make a deviation significant.
    pub z_threshold: f64,
    /// Smallest standard deviation, as a fraction of the mean.
    pub stddev_floor: f64,
    /// Most distinct activities (topics, paths, register blocks) kept per
    /// device.
    pub max_kinds: usize,
    /// Most bytes of activity names kept per device.
    pub max_kind_bytes: usize,
    /// Modbus addresses per tracked block.
    pub register_block: u32,
    /// Alert only, or also quarantine.
    pub action: AnomalyAction,
    /// A single anomaly scoring at least this quarantines.
    pub quarantine_score: f64,
    /// This many anomalies within `quarantine_window` quarantine.
    pub quarantine_anomalies: u32,
    /// The window `quarantine_anomalies` are counted in.
    pub quarantine_window: Duration,
}

impl Default for AnomalyPolicy {
    /// What an empty `[anomaly]` part means.
    fn default() -> Self {
        Self {
            enabled: true,
            learning: Duration::from_secs(D_LEARNING_SECS),
            learning_observations: D_LEARNING_OBSERVATIONS,
            interval: Duration::from_secs(D_INTERVAL_SECS),
            z_threshold: D_Z,
            stddev_floor: D_FLOOR,
            max_kinds: D_MAX_KINDS as usize,
            max_kind_bytes: D_MAX_KIND_BYTES as usize,
            register_block: D_BLOCK as u32,
            action: AnomalyAction::Alert,
            quarantine_score: D_Q_SCORE,
            quarantine_anomalies: D_Q_ANOMALIES as u32,
            quarantine_window: Duration::from_secs(D_Q_WINDOW_SECS),
        }
    }
}

const D_LEARNING_SECS: u64 = 86_400;
const D_LEARNING_OBSERVATIONS: u64 = 100;
const D_INTERVAL_SECS: u64 = 60;
const D_Z: f64 = 4.0;
const D_FLOOR: f64 = 0.1;
const D_MAX_KINDS: u64 = 256;
const D_MAX_KIND_BYTES: u64 = 16_384;
const D_BLOCK: u64 = 16;
const D_Q_SCORE: f64 = 10.0;
const D_Q_ANOMALIES: u64 = 5;
const D_Q_WINDOW_SECS: u64 = 600;

fn ranged_f64(field: &str, value: Option<f64>, default: f64, min: f64, max: f64) -> Result<f64> {
    let v = value.unwrap_or(default);
    // NaN fails the range check too.
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} is outside {min}..={max}")))
    }
}

impl AnomalyPolicy {
    pub(super) fn validate(f: AnomalyFile) -> Result<Self> {
        let secs = |field: &str, v, default, min, max| {
            ranged(field, v, default, min, max).map(Duration::from_secs)
        };
        Ok(Self {
            enabled: f.enabled.unwrap_or(true),
            // Up to 30 days: long enough for a weekly cycle, short enough
            // that a typo does not switch detection off for good.
            learning: secs(
                "anomaly.learning_secs",
                f.learning_secs,
                D_LEARNING_SECS,
                0,
                30 * 86_400,
            )?,
            learning_observations: ranged(
                "anomaly.learning_observations",
                f.learning_observations,
                D_LEARNING_OBSERVATIONS,
                1,
                100_000_000,
            )?,
            interval: secs(
                "anomaly.interval_secs",
                f.interval_secs,
                D_INTERVAL_SECS,
                1,
                86_400,
            )?,
            z_threshold: ranged_f64("anomaly.z_threshold", f.z_threshold, D_Z, 1.0, 100.0)?,
            stddev_floor: ranged_f64("anomaly.stddev_floor", f.stddev_floor, D_FLOOR, 0.0, 10.0)?,
            max_kinds: to_usize(ranged(
                "anomaly.max_kinds",
                f.max_kinds,
                D_MAX_KINDS,
                1,
                65_536,
            )?),
            max_kind_bytes: to_usize(ranged(
                "anomaly.max_kind_bytes",
                f.max_kind_bytes,
                D_MAX_KIND_BYTES,
                64,
                16 << 20,
            )?),
            register_block: to_u32(ranged(
                "anomaly.register_block",
                f.register_block,
                D_BLOCK,
                1,
                65_536,
            )?),
            action: f.action.unwrap_or_default(),
            quarantine_score: ranged_f64(
                "anomaly.quarantine_score",
                f.quarantine_score,
                D_Q_SCORE,
                0.0,
                1e6,
            )?,
            quarantine_anomalies: to_u32(ranged(
                "anomaly.quarantine_anomalies",
                f.quarantine_anomalies,
                D_Q_ANOMALIES,
                1,
                1000,
            )?),
            quarantine_window: secs(
                "anomaly.quarantine_window_secs",
                f.quarantine_window_secs,
                D_Q_WINDOW_SECS,
                1,
                86_400,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::AnomalyAction;
    use crate::Policy;

    fn err(text: &str) -> String {
        Policy::from_toml(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_enabled_and_alert_only() {
        let p = Policy::from_toml("", "t").unwrap();
        let a = &p.anomaly;
        assert!(a.enabled);
        assert_eq!(a.action, AnomalyAction::Alert);
        assert_eq!(a.learning, Duration::from_secs(86_400));
        assert_eq!(a.z_threshold, 4.0);
        assert_eq!(a, &super::AnomalyPolicy::default());
    }

    #[test]
    fn values_are_read() {
        let p = Policy::from_toml(
            "[anomaly]\nenabled = false\nlearning_secs = 0\nlearning_observations = 5\n\
             z_threshold = 3.5\naction = \"quarantine\"\nquarantine_anomalies = 2\n\
             register_block = 100",
            "t",
        )
        .unwrap();
        let a = &p.anomaly;
        assert!(!a.enabled);
        assert_eq!(a.learning, Duration::ZERO);
        assert_eq!((a.learning_observations, a.z_threshold), (5, 3.5));
        assert_eq!(a.action, AnomalyAction::Quarantine);
        assert_eq!((a.quarantine_anomalies, a.register_block), (2, 100));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[anomaly]\nz_threshold = 0.5").contains("anomaly.z_threshold"));
        assert!(err("[anomaly]\nz_threshold = nan").contains("anomaly.z_threshold"));
        assert!(err("[anomaly]\nstddev_floor = -1.0").contains("anomaly.stddev_floor"));
        assert!(err("[anomaly]\nmax_kinds = 0").contains("anomaly.max_kinds"));
        assert!(err("[anomaly]\ninterval_secs = 0").contains("anomaly.interval_secs"));
        assert!(err("[anomaly]\nregister_block = 70000").contains("anomaly.register_block"));
        assert!(err("[anomaly]\naction = \"block\"").contains("action"));
        assert!(err("[anomaly]\ncolour = 1").contains("colour"));
        assert!(
            err("[anomaly]\nquarantine_anomalies = 0").contains("anomaly.quarantine_anomalies")
        );
    }
}
