//! Per-device behaviour baselines and anomaly alerts (issue 6, item 6).
//!
//! A [`Detector`] keeps one [`Baseline`] per device, each behind its own
//! lock; a proxy resolves a device's [`DeviceDetector`] once per
//! connection (or CoAP leg) and calls [`DeviceDetector::observe_at`] for
//! every message it forwards, with the `tokio::time::Instant` it already
//! read. No sockets here. [`DeviceDetector::observe`] takes an
//! [`Observation`] that carries its time (for windows and rates) and its
//! UTC hour (for the time-of-day profile), so tests drive both;
//! `observe_at` derives the hour from a wall-clock reading the baseline
//! refreshes once a minute, not per message.
//!
//! What a baseline learns, and what is an anomaly once learned:
//! - **Activities** (MQTT PUBLISH topics, CoAP method and path, Modbus unit,
//!   function and register block): a set; one not in it is *first seen*.
//!   The set is bounded in entries and bytes, so a device cannot exhaust
//!   memory; the first activity that does not fit is an *overflow*.
//! - **Message size**: running mean and variance; a size more than
//!   `z_threshold` standard deviations away is a *size* anomaly.
//! - **Message rate**: messages per `interval`, with the same statistics
//!   over closed intervals (silent intervals count as zero); a count above
//!   the mean by `z_threshold` deviations is a *rate* anomaly, raised as
//!   soon as the count crosses, not when the interval ends.
//! - **Time of day**: a histogram of UTC hours; activity in an hour never
//!   seen is an *hour* anomaly.
//!
//! Nothing is reported during the learning phase (`learning` since the
//! device's first message *and* `learning_observations` messages); an
//! overflow during learning is reported when it ends, since the baseline
//! it left is incomplete.
//!
//! Design decisions:
//! - Mean and variance are Welford's running values whose weight stops
//!   growing at [`MEMORY`] samples, after which they are an exponentially
//!   weighted average: the baseline follows slow, legitimate change and
//!   no sum grows without bound. Every message updates them, anomalous or
//!   not, so a lasting change stops alerting after a while: the first
//!   alerts are the evidence.
//! - The standard deviation used for a z-score is at least
//!   `stddev_floor` times the mean and at least 1 (byte or message), so a
//!   perfectly regular device does not alert on a byte of jitter.
//! - A first-seen activity is learned when reported (one alert each), an
//!   hour too; the overflow is reported once; a rate alert once per
//!   interval; a repeated size alert and an untracked activity after an
//!   overflow wait out a cooldown of one `interval`. A flood of odd
//!   messages is a handful of events, not a flood of them.
//! - Scores are comparable: a z-score for size and rate; `z_threshold`
//!   (just significant) for first-seen activities and hours; twice that
//!   for an overflow.
//! - Hours are UTC (one conversion, [`utc_hour`]): the gateway needs no
//!   time zone database, and a device's schedule maps to fixed UTC hours
//!   except across daylight-saving changes, which the learned hours
//!   absorb when the learning window spans them.
//! - Known activities cost one hash lookup by `&str` (or by integer for
//!   Modbus): no allocation per message unless something is reported
//!   (Modbus aside: the request's span list is a small `Vec`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::audit::{Audit, GatewayEvent, action};
use crate::coap::codec::Message;
use crate::limit::Quarantine;
use crate::modbus::codec::Request;
use crate::policy::anomaly::{AnomalyAction, AnomalyPolicy};

/// Samples after which the running statistics stop gaining weight.
pub const MEMORY: f64 = 1000.0;
/// Devices a [`Detector`] keeps baselines for; past this, baselines no
/// connection holds are dropped.
pub const MAX_DEVICES: usize = 65_536;
/// How long a baseline's wall-clock anchor is trusted.
const ANCHOR_REFRESH: Duration = Duration::from_secs(60);
/// Longest activity name kept in an alert's evidence.
const EVIDENCE_CHARS: usize = 120;

/// The UTC hour (0–23) of a wall-clock time; the one place wall-clock
/// time enters the detector.
pub fn utc_hour(t: SystemTime) -> u8 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Invariant: < 24.
    u8::try_from(secs / 3600 % 24).unwrap_or(0)
}

/// What a device did, as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub enum What<'a> {
    /// An MQTT PUBLISH to this topic.
    Topic(&'a str),
    /// A CoAP request (its method and Uri-Path are the activity).
    Coap(&'a Message<'a>),
    /// A Modbus request to a unit: its function and the register blocks
    /// its addresses fall in.
    Modbus {
        /// Unit id.
        unit: u8,
        /// The parsed request.
        request: Request,
    },
}

/// One forwarded message.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// What it was.
    pub what: What<'a>,
    /// Its size in bytes (payload for MQTT and CoAP, PDU for Modbus).
    pub size: usize,
    /// When, on the gateway's monotonic clock.
    pub at: Instant,
    /// The UTC hour it happened in, 0–23 (see [`utc_hour`]).
    pub hour: u8,
}

/// Which part of the baseline an anomaly broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// An activity never seen before.
    FirstSeen,
    /// Message rate above the baseline.
    Rate,
    /// Message size away from the baseline.
    Size,
    /// Activity in an hour of the day never seen before.
    Hour,
    /// More distinct activities than the baseline keeps.
    Overflow,
}

impl AnomalyKind {
    /// Stable name, for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstSeen => "first-seen",
            Self::Rate => "rate",
            Self::Size => "size",
            Self::Hour => "hour",
            Self::Overflow => "overflow",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A deviation from a device's baseline, with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// Policy name of the device.
    pub device: String,
    /// What deviated.
    pub kind: AnomalyKind,
    /// Observed against expected, for the operator.
    pub evidence: String,
    /// How strong: a z-score, or `z_threshold` (×2 for an overflow).
    pub score: f64,
}

/// What one observation found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    /// Anomalies, usually none.
    pub anomalies: Vec<Anomaly>,
    /// Why the device should be quarantined, when the policy says so.
    pub quarantine: Option<String>,
}

impl Findings {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.anomalies.is_empty() && self.quarantine.is_none()
    }
}

/// Running mean and (population) variance: Welford's update, with the
/// weight capped at [`MEMORY`].
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: f64,
    mean: f64,
    var: f64,
}

impl Stats {
    fn push(&mut self, x: f64) {
        self.n = (self.n + 1.0).min(MEMORY);
        let alpha = 1.0 / self.n;
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// The standard deviation, floored (see the module notes).
    fn spread(&self, floor: f64) -> f64 {
        self.var.sqrt().max(floor * self.mean.abs()).max(1.0)
    }
}

/// Key of a Modbus activity: unit, function, register block.
fn modbus_key(unit: u8, function: u8, block: u32) -> u64 {
    (u64::from(unit) << 40) | (u64::from(function) << 32) | u64::from(block)
}

/// Bytes one numeric activity is charged against `max_kind_bytes`.
const CODE_BYTES: usize = 8;

/// One device's learned behaviour.
#[derive(Debug, Default)]
pub struct Baseline {
    started: Option<Instant>,
    observations: u64,
    learned: bool,
    texts: HashSet<Box<str>>,
    codes: HashSet<u64>,
    kind_bytes: usize,
    /// An activity did not fit; reported once, after learning.
    overflowed: bool,
    overflow_reported: bool,
    hours: [u64; 24],
    size: Stats,
    rate: Stats,
    interval_start: Option<Instant>,
    interval_count: u64,
    rate_alerted: bool,
    last_alert: [Option<Instant>; 5],
    /// A monotonic instant and the wall-clock time read with it, so the
    /// hour of a message needs no clock read of its own.
    anchor: Option<(Instant, SystemTime)>,
    recent: VecDeque<Instant>,
    /// Reused to render CoAP activities without allocating per message.
    scratch: String,
}

impl Baseline {
    /// Distinct activities kept.
    pub fn kinds(&self) -> usize {
        self.texts.len() + self.codes.len()
    }

    /// Bytes of activity names kept (numeric ones count 8).
    pub fn kind_bytes(&self) -> usize {
        self.kind_bytes
    }

    /// Anomaly times kept for the quarantine count.
    pub fn recent_anomalies(&self) -> usize {
        self.recent.len()
    }

    /// Whether the learning phase is over.
    pub fn learned(&self) -> bool {
        self.learned
    }

    /// The UTC hour at `at`, from the anchor (re-read every
    /// [`ANCHOR_REFRESH`], so a wall-clock step shows within a minute).
    fn hour_at(&mut self, at: Instant) -> u8 {
        let (i, w) = match self.anchor {
            Some((i, w)) if at >= i && at.saturating_duration_since(i) < ANCHOR_REFRESH => (i, w),
            _ => {
                let fresh = (at, SystemTime::now());
                self.anchor = Some(fresh);
                fresh
            }
        };
        utc_hour(w + at.saturating_duration_since(i))
    }

    fn cooled(&mut self, kind: AnomalyKind, at: Instant, interval: Duration) -> bool {
        let slot = self.last_alert.get_mut(kind.index());
        match slot {
            Some(Some(last)) if at.saturating_duration_since(*last) < interval => false,
            Some(s) => {
                *s = Some(at);
                true
            }
            None => true,
        }
    }

    fn observe(&mut self, device: &str, rule: &AnomalyPolicy, obs: &Observation<'_>) -> Findings {
        let mut out = Findings::default();
        let at = obs.at;
        let started = *self.started.get_or_insert(at);
        self.observations = self.observations.saturating_add(1);
        if !self.learned
            && self.observations > rule.learning_observations
            && at.saturating_duration_since(started) >= rule.learning
        {
            self.learned = true;
        }
        let alerting = self.learned;
        let mut report = |kind, score, evidence: String| {
            out.anomalies.push(Anomaly {
                device: device.to_owned(),
                kind,
                evidence,
                score,
            });
        };

        if alerting && self.overflowed && !self.overflow_reported {
            self.overflow_reported = true;
            report(
                AnomalyKind::Overflow,
                2.0 * rule.z_threshold,
                format!(
                    "more distinct activities during learning than the baseline keeps \
                     ({} kept, {} bytes; limits {} and {})",
                    self.kinds(),
                    self.kind_bytes,
                    rule.max_kinds,
                    rule.max_kind_bytes
                ),
            );
        }

        // Activities.
        match obs.what {
            What::Topic(topic) => {
                if let Some((kind, score, evidence)) =
                    self.activity_text(rule, at, alerting, "topic", topic)
                {
                    report(kind, score, evidence);
                }
            }
            What::Coap(msg) => {
                let mut key = std::mem::take(&mut self.scratch);
                key.clear();
                key.push_str(msg.code.method().map_or("?", |m| m.as_str()));
                key.push(' ');
                let mut any = false;
                for seg in msg.path() {
                    key.push('/');
                    key.push_str(&String::from_utf8_lossy(seg));
                    any = true;
                }
                if !any {
                    key.push('/');
                }
                let found = self.activity_text(rule, at, alerting, "request", &key);
                self.scratch = key;
                if let Some((kind, score, evidence)) = found {
                    report(kind, score, evidence);
                }
            }
            What::Modbus { unit, request } => {
                let function = request.function();
                let block = rule.register_block.max(1);
                let spans = request.spans();
                if spans.is_empty() {
                    let found = self.activity_code(
                        rule,
                        at,
                        alerting,
                        modbus_key(unit, function, u32::MAX),
                        || format!("unit {unit} function {function}"),
                    );
                    if let Some((kind, score, evidence)) = found {
                        report(kind, score, evidence);
                    }
                }
                for span in spans {
                    let first = u32::from(span.start) / block;
                    let last = u32::from(span.last()) / block;
                    for b in first..=last {
                        let found = self.activity_code(
                            rule,
                            at,
                            alerting,
                            modbus_key(unit, function, b),
                            || {
                                format!(
                                    "unit {unit} function {function} addresses {}..={} \
                                     (block {}..={})",
                                    span.start,
                                    span.last(),
                                    b * block,
                                    (b * block).saturating_add(block - 1).min(65_535)
                                )
                            },
                        );
                        if let Some((kind, score, evidence)) = found {
                            report(kind, score, evidence);
                        }
                    }
                }
            }
        }

        // Time of day.
        let hour = usize::from(obs.hour % 24);
        let before = self.hours.get(hour).copied().unwrap_or(0);
        if alerting && before == 0 {
            let seen: Vec<String> = (0..24)
                .filter(|&h| self.hours.get(h).is_some_and(|&c| c > 0))
                .map(|h| h.to_string())
                .collect();
            report(
                AnomalyKind::Hour,
                rule.z_threshold,
                format!(
                    "activity at {hour:02}:00-{hour:02}:59 UTC, never seen before; \
                     hours seen: [{}]",
                    seen.join(", ")
                ),
            );
        }
        if let Some(count) = self.hours.get_mut(hour) {
            *count = before.saturating_add(1);
        }

        // Size.
        let size = obs.size as f64;
        if alerting && self.size.n >= 2.0 {
            let sd = self.size.spread(rule.stddev_floor);
            let z = (size - self.size.mean) / sd;
            if z.abs() > rule.z_threshold && self.cooled(AnomalyKind::Size, at, rule.interval) {
                report(
                    AnomalyKind::Size,
                    z.abs(),
                    format!(
                        "message of {} bytes; baseline mean {:.1} stddev {:.1} (used {:.1}); \
                         z = {z:.1}",
                        obs.size,
                        self.size.mean,
                        self.size.var.sqrt(),
                        sd
                    ),
                );
            }
        }
        self.size.push(size);

        // Rate: close the intervals that ended, silent ones as zeros.
        let interval_start = *self.interval_start.get_or_insert(at);
        let elapsed = at.saturating_duration_since(interval_start);
        let interval = rule.interval.max(Duration::from_millis(1));
        // The division only when an interval ended, not per message.
        if elapsed >= interval {
            let passed = elapsed.as_nanos() / interval.as_nanos();
            self.rate.push(self.interval_count as f64);
            // After MEMORY zeros the statistics are zero anyway.
            let zeros = (passed - 1).min(MEMORY as u128);
            for _ in 0..zeros {
                self.rate.push(0.0);
            }
            let step = interval.saturating_mul(u32::try_from(passed).unwrap_or(u32::MAX));
            self.interval_start = Some(interval_start + step);
            self.interval_count = 0;
            self.rate_alerted = false;
        }
        self.interval_count = self.interval_count.saturating_add(1);
        if alerting && !self.rate_alerted && self.rate.n >= 2.0 {
            let sd = self.rate.spread(rule.stddev_floor);
            let z = (self.interval_count as f64 - self.rate.mean) / sd;
            if z > rule.z_threshold {
                self.rate_alerted = true;
                report(
                    AnomalyKind::Rate,
                    z,
                    format!(
                        "{} messages in the current {:?} interval; baseline mean {:.1} \
                         stddev {:.1} (used {:.1}); z = {z:.1}",
                        self.interval_count,
                        interval,
                        self.rate.mean,
                        self.rate.var.sqrt(),
                        sd
                    ),
                );
            }
        }

        self.decide(rule, at, &mut out);
        out
    }

    /// Whether the policy's quarantine rule fires on these anomalies.
    fn decide(&mut self, rule: &AnomalyPolicy, at: Instant, out: &mut Findings) {
        if rule.action != AnomalyAction::Quarantine || out.anomalies.is_empty() {
            return;
        }
        if let Some(a) = out
            .anomalies
            .iter()
            .find(|a| a.score >= rule.quarantine_score)
        {
            out.quarantine = Some(format!(
                "{} anomaly with score {:.1} (quarantine at {:.1})",
                a.kind.as_str(),
                a.score,
                rule.quarantine_score
            ));
        }
        let cap = rule.quarantine_anomalies.max(1) as usize;
        for _ in &out.anomalies {
            self.recent.push_back(at);
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| at.saturating_duration_since(t) >= rule.quarantine_window)
            || self.recent.len() > cap
        {
            self.recent.pop_front();
        }
        if out.quarantine.is_none() && self.recent.len() >= cap {
            out.quarantine = Some(format!(
                "{} anomalies within {:?}",
                self.recent.len(),
                rule.quarantine_window
            ));
        }
        if out.quarantine.is_some() {
            self.recent.clear();
        }
    }

    /// Looks up (and, while there is room, learns) a named activity.
    fn activity_text(
        &mut self,
        rule: &AnomalyPolicy,
        at: Instant,
        alerting: bool,
        what: &str,
        name: &str,
    ) -> Option<(AnomalyKind, f64, String)> {
        if self.texts.contains(name) {
            return None;
        }
        let fits = self.kinds() < rule.max_kinds
            && self.kind_bytes.saturating_add(name.len()) <= rule.max_kind_bytes;
        if fits {
            self.texts.insert(name.into());
            self.kind_bytes += name.len();
        }
        self.new_activity(rule, at, alerting, fits, || {
            format!("{what} {}", shorten(name))
        })
    }

    /// The same for a numeric activity.
    fn activity_code(
        &mut self,
        rule: &AnomalyPolicy,
        at: Instant,
        alerting: bool,
        key: u64,
        describe: impl FnOnce() -> String,
    ) -> Option<(AnomalyKind, f64, String)> {
        if self.codes.contains(&key) {
            return None;
        }
        let fits = self.kinds() < rule.max_kinds
            && self.kind_bytes.saturating_add(CODE_BYTES) <= rule.max_kind_bytes;
        if fits {
            self.codes.insert(key);
            self.kind_bytes += CODE_BYTES;
        }
        self.new_activity(rule, at, alerting, fits, describe)
    }

    fn new_activity(
        &mut self,
        rule: &AnomalyPolicy,
        at: Instant,
        alerting: bool,
        kept: bool,
        describe: impl FnOnce() -> String,
    ) -> Option<(AnomalyKind, f64, String)> {
        if !kept {
            self.overflowed = true;
        }
        if !alerting {
            return None;
        }
        if kept {
            let known = self.kinds() - 1;
            return Some((
                AnomalyKind::FirstSeen,
                rule.z_threshold,
                format!(
                    "first {} after {} messages; {known} activities known",
                    describe(),
                    self.observations - 1
                ),
            ));
        }
        if !self.overflow_reported {
            self.overflow_reported = true;
            return Some((
                AnomalyKind::Overflow,
                2.0 * rule.z_threshold,
                format!(
                    "{} not kept: baseline full ({} activities, {} bytes; limits {} and {})",
                    describe(),
                    self.kinds(),
                    self.kind_bytes,
                    rule.max_kinds,
                    rule.max_kind_bytes
                ),
            ));
        }
        // Full: an unknown activity cannot be remembered, so it would
        // alert on every message; once per interval instead.
        self.cooled(AnomalyKind::FirstSeen, at, rule.interval)
            .then(|| {
                (
                    AnomalyKind::FirstSeen,
                    rule.z_threshold,
                    format!("unknown {} (baseline full, not kept)", describe()),
                )
            })
    }
}

/// An activity name cut for evidence, control characters escaped.
fn shorten(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == EVIDENCE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    format!("`{out}`")
}

/// Baselines of every device one proxy has seen.
#[derive(Debug, Default)]
pub struct Detector {
    devices: Mutex<HashMap<String, Arc<Mutex<Baseline>>>>,
}

/// One device's baseline, resolved once per connection.
#[derive(Debug, Clone)]
pub struct DeviceDetector {
    name: Arc<str>,
    baseline: Arc<Mutex<Baseline>>,
}

impl Detector {
    /// The baseline of `device`, shared by all its connections.
    pub fn device(&self, device: &str) -> DeviceDetector {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_DEVICES && !map.contains_key(device) {
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let baseline = if map.len() < MAX_DEVICES || map.contains_key(device) {
            map.entry(device.to_owned()).or_default().clone()
        } else {
            // Every slot is in use: this connection learns on its own.
            Arc::default()
        };
        DeviceDetector {
            name: device.into(),
            baseline,
        }
    }

    /// Forgets `device`'s baseline (it learns afresh from its next
    /// message); returns whether there was one.
    pub fn reset(&self, device: &str) -> bool {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(device).is_some()
    }

    /// Devices with a baseline.
    pub fn len(&self) -> usize {
        self.devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no device has a baseline.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeviceDetector {
    /// A baseline of its own, not in any [`Detector`] (tests, benches).
    pub fn detached(device: &str) -> Self {
        Self {
            name: device.into(),
            baseline: Arc::default(),
        }
    }

    /// The device's policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Updates the baseline with one forwarded message and reports what
    /// deviated. Cheap when `rule` is disabled: nothing is learned.
    pub fn observe(&self, rule: &AnomalyPolicy, obs: &Observation<'_>) -> Findings {
        if !rule.enabled {
            return Findings::default();
        }
        self.baseline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&self.name, rule, obs)
    }

    /// [`observe`](Self::observe) for a message forwarded at `at`, the
    /// caller's own clock reading; the hour comes from the baseline's
    /// wall-clock anchor. What the proxies call: no clock read here.
    pub fn observe_at(
        &self,
        rule: &AnomalyPolicy,
        what: What<'_>,
        size: usize,
        at: Instant,
    ) -> Findings {
        if !rule.enabled {
            return Findings::default();
        }
        let mut b = self.baseline.lock().unwrap_or_else(PoisonError::into_inner);
        let hour = b.hour_at(at);
        b.observe(
            &self.name,
            rule,
            &Observation {
                what,
                size,
                at,
                hour,
            },
        )
    }

    /// Runs `f` on the baseline (inspection, tests).
    pub fn with_baseline<T>(&self, f: impl FnOnce(&Baseline) -> T) -> T {
        f(&self.baseline.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Records `findings` as [`action::ANOMALY`] events and, when they call
/// for it, quarantines the device for `duration` (a
/// [`action::QUARANTINE_START`] event). Returns whether it did (not when
/// the device was already quarantined).
pub fn report(
    audit: &dyn Audit,
    quarantine: &Quarantine,
    duration: Duration,
    peer: SocketAddr,
    findings: Findings,
) -> bool {
    let mut device = None;
    for a in findings.anomalies {
        device = Some(a.device.clone());
        audit.record(GatewayEvent {
            action: action::ANOMALY,
            device: Some(a.device),
            peer,
            reason: None,
            detail: format!("{} (score {:.1}): {}", a.kind.as_str(), a.score, a.evidence),
        });
    }
    let (Some(why), Some(device)) = (findings.quarantine, device) else {
        return false;
    };
    let now = Instant::now();
    if quarantine.remaining(&device, now).is_some() {
        return false;
    }
    quarantine.quarantine_because(&device, duration, &format!("anomaly: {why}"), now);
    audit.record(GatewayEvent {
        action: action::QUARANTINE_START,
        device: Some(device),
        peer,
        reason: None,
        detail: format!("anomaly: {why}: quarantined for {duration:?}"),
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::codec::{self, MessageType, Method};
    use crate::modbus::codec::Span;
    use proptest::prelude::*;

    fn rule() -> AnomalyPolicy {
        AnomalyPolicy {
            learning: Duration::from_secs(60),
            learning_observations: 10,
            interval: Duration::from_secs(10),
            ..AnomalyPolicy::default()
        }
    }

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    fn topic(t: &str, size: usize, at: Instant, hour: u8) -> Observation<'_> {
        Observation {
            what: What::Topic(t),
            size,
            at,
            hour,
        }
    }

    /// A regular device: one 20-byte message to `s/t` every second, at
    /// 10:xx UTC, for `secs` seconds. Returns everything it found.
    fn learn(d: &DeviceDetector, rule: &AnomalyPolicy, t0: Instant, secs: u32) -> Vec<Anomaly> {
        (0..secs)
            .flat_map(|s| {
                d.observe(rule, &topic("s/t", 20, at(t0, f64::from(s)), 10))
                    .anomalies
            })
            .collect()
    }

    fn kinds(f: &Findings) -> Vec<AnomalyKind> {
        f.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn learning_phase_reports_nothing() {
        let d = DeviceDetector::detached("d");
        let r = rule();
        let t0 = Instant::now();
        // New topics, odd sizes, bursts and hours all during learning.
        for i in 0..50u32 {
            let t = format!("x/{i}");
            let f = d.observe(
                &r,
                &topic(
                    &t,
                    (i as usize) * 100,
                    at(t0, f64::from(i) * 0.1),
                    (i % 24) as u8,
                ),
            );
            assert!(f.is_empty(), "{f:?}");
        }
        // 50 observations but only 4.9 s: still learning.
        assert!(!d.with_baseline(Baseline::learned));
    }

    #[test]
    fn first_seen_topic_after_learning_alerts_once() {
        let d = DeviceDetector::detached("d");
        let r = rule();
        let t0 = Instant::now();
        assert!(learn(&d, &r, t0, 70).is_empty());
        assert!(d.with_baseline(Baseline::learned));
        let f = d.observe(&r, &topic("s/other", 20, at(t0, 70.0), 10));
        assert_eq!(kinds(&f), [AnomalyKind::FirstSeen]);
        let a = &f.anomalies[0];
        assert_eq!(a.device, "d");
        assert!(a.evidence.contains("topic `s/other`"), "{}", a.evidence);
        assert!(a.evidence.contains("after 70 messages"), "{}", a.evidence);
        assert_eq!(a.score, r.z_threshold);
        assert!(f.quarantine.is_none(), "alert only by default");
        // Learned now.
        assert!(
            d.observe(&r, &topic("s/other", 20, at(t0, 71.0), 10))
                .is_empty()
        );
    }

    #[test]
    fn size_deviation_alerts_with_numbers_and_floor_absorbs_jitter() {
        let d = DeviceDetector::detached("d");
        let r = rule();
        let t0 = Instant::now();
        learn(&d, &r, t0, 70);
        // 20 bytes with stddev 0: the floor is max(0.1 * 20, 1) = 2, so
        // 24 bytes (z = 2) is fine and 40 (z = 10) is not.
        assert!(
            d.observe(&r, &topic("s/t", 24, at(t0, 70.0), 10))
                .is_empty()
        );
        let f = d.observe(&r, &topic("s/t", 400, at(t0, 71.0), 10));
        assert_eq!(kinds(&f), [AnomalyKind::Size]);
        let e = &f.anomalies[0].evidence;
        assert!(e.contains("400 bytes") && e.contains("mean 20."), "{e}");
        assert!(f.anomalies[0].score > 100.0);
        // Cooldown: a second odd size within the interval is not repeated.
        assert!(
            d.observe(&r, &topic("s/t", 400, at(t0, 72.0), 10))
                .is_empty()
        );
        let later = d.observe(&r, &topic("s/t", 900, at(t0, 90.0), 10));
        assert_eq!(kinds(&later), [AnomalyKind::Size]);
    }

    #[test]
    fn rate_deviation_alerts_once_per_interval() {
        let d = DeviceDetector::detached("d");
        let r = rule();
        let t0 = Instant::now();
        // 10 messages per 10 s interval, learned.
        learn(&d, &r, t0, 100);
        // A burst: 40 messages in one second. Mean 10, floor 1 (10% of
        // 10): z crosses 4 at the 15th message of the interval.
        let mut found = Vec::new();
        for i in 0..40 {
            let f = d.observe(
                &r,
                &topic("s/t", 20, at(t0, 100.0 + f64::from(i) * 0.02), 10),
            );
            found.extend(f.anomalies.into_iter().map(|a| (i, a)));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let (i, a) = &found[0];
        assert_eq!(a.kind, AnomalyKind::Rate);
        assert_eq!(*i, 14, "alerts when the count crosses, not at the end");
        assert!(a.evidence.contains("15 messages"), "{}", a.evidence);
        assert!(a.evidence.contains("mean 10.0"), "{}", a.evidence);
        // The normal pace after a quiet gap does not alert (the gap's zeros
        // lower the mean, but a rate at or below the baseline never does).
        assert!(learn(&d, &r, at(t0, 200.0), 30).is_empty());
    }

    #[test]
    fn an_hour_never_seen_alerts() {
        let d = DeviceDetector::detached("d");
        let r = rule();
        let t0 = Instant::now();
        learn(&d, &r, t0, 70);
        let f = d.observe(&r, &topic("s/t", 20, at(t0, 70.0), 3));
        assert_eq!(kinds(&f), [AnomalyKind::Hour]);
        assert!(f.anomalies[0].evidence.contains("03:00-03:59 UTC"));
        assert!(f.anomalies[0].evidence.contains("hours seen: [10]"));
        assert!(d.observe(&r, &topic("s/t", 20, at(t0, 71.0), 3)).is_empty());
    }

    #[test]
    fn hour_comes_from_the_anchor_and_the_anchor_is_refreshed() {
        let mut b = Baseline::default();
        let t0 = Instant::now();
        // Anchored 30 s before 10:00 UTC.
        b.anchor = Some((t0, UNIX_EPOCH + Duration::from_secs(10 * 3600 - 30)));
        assert_eq!(b.hour_at(t0), 9);
        assert_eq!(b.hour_at(t0 + Duration::from_secs(40)), 10);
        // Past the refresh the wall clock is read again.
        let late = t0 + ANCHOR_REFRESH + Duration::from_secs(1);
        let before = utc_hour(SystemTime::now());
        let got = b.hour_at(late);
        let after = utc_hour(SystemTime::now());
        assert!(got == before || got == after, "{got} not {before}/{after}");
        assert_eq!(b.anchor.map(|(i, _)| i), Some(late));
        // And observe_at uses it.
        let d = DeviceDetector::detached("d");
        let f = d.observe_at(&rule(), What::Topic("a"), 1, t0);
        assert!(f.is_empty());
        assert_eq!(d.with_baseline(|b| b.hours.iter().sum::<u64>()), 1);
    }

    #[test]
    fn utc_hour_of_a_known_time() {
        // 2026-12-01T15:36:50Z.
        let t = UNIX_EPOCH + Duration::from_secs(1_796_139_410);
        assert_eq!(utc_hour(t), 15);
        assert_eq!(utc_hour(UNIX_EPOCH), 0);
    }

    #[test]
    fn sets_are_bounded_and_overflow_is_reported() {
        let d = DeviceDetector::detached("d");
        let r = AnomalyPolicy {
            max_kinds: 4,
            ..rule()
        };
        let t0 = Instant::now();
        learn(&d, &r, t0, 70);
        let mut all = Vec::new();
        for i in 0..10 {
            let t = format!("s/{i}");
            all.push(kinds(
                &d.observe(&r, &topic(&t, 20, at(t0, 70.0 + f64::from(i)), 10)),
            ));
        }
        // Three more fit (s/t is one of four), the fourth overflows, the
        // rest are untracked first-seen at most once per interval.
        assert_eq!(
            all[..4],
            [
                vec![AnomalyKind::FirstSeen],
                vec![AnomalyKind::FirstSeen],
                vec![AnomalyKind::FirstSeen],
                vec![AnomalyKind::Overflow],
            ]
        );
        assert_eq!(d.with_baseline(Baseline::kinds), 4);
        let untracked: usize = all[4..].iter().map(Vec::len).sum();
        assert_eq!(untracked, 1, "{all:?}");
    }

    #[test]
    fn overflow_during_learning_is_reported_when_it_ends() {
        let d = DeviceDetector::detached("d");
        let r = AnomalyPolicy {
            max_kinds: 2,
            ..rule()
        };
        let t0 = Instant::now();
        for i in 0..5u32 {
            let t = format!("s/{i}");
            assert!(
                d.observe(&r, &topic(&t, 20, at(t0, f64::from(i)), 10))
                    .is_empty()
            );
        }
        let mut found = learn(&d, &r, at(t0, 5.0), 60);
        assert_eq!(found.len(), 2, "{found:?}");
        // s/t itself did not fit: the overflow and then the once-per-
        // interval untracked activity.
        let overflow = found.remove(0);
        assert_eq!(overflow.kind, AnomalyKind::Overflow);
        assert!(overflow.evidence.contains("during learning"));
        assert_eq!(found[0].kind, AnomalyKind::FirstSeen);
    }

    #[test]
    fn modbus_blocks_and_coap_paths_are_activities() {
        let d = DeviceDetector::detached("plc");
        let r = rule();
        let t0 = Instant::now();
        let read = |start, quantity, s: f64| Observation {
            what: What::Modbus {
                unit: 1,
                request: Request::ReadHoldingRegisters(Span { start, quantity }),
            },
            size: 5,
            at: at(t0, s),
            hour: 10,
        };
        for s in 0..70 {
            assert!(d.observe(&r, &read(0, 10, f64::from(s))).is_empty());
        }
        // 0..=15 is block 0: known.
        assert!(d.observe(&r, &read(6, 10, 70.0)).is_empty());
        let f = d.observe(&r, &read(100, 10, 71.0));
        assert_eq!(kinds(&f), [AnomalyKind::FirstSeen]);
        let e = &f.anomalies[0].evidence;
        assert!(
            e.contains("unit 1 function 3 addresses 100..=109 (block 96..=111)"),
            "{e}"
        );
        // A span across two new blocks is two activities.
        let f = d.observe(&r, &read(30, 10, 72.0));
        assert_eq!(kinds(&f), [AnomalyKind::FirstSeen, AnomalyKind::FirstSeen]);

        let c = DeviceDetector::detached("coap");
        let get = codec::encode(
            MessageType::Confirmable,
            Method::Get.code(),
            1,
            b"t",
            &[(11, b"sensors".as_slice()), (11, b"temp".as_slice())],
            b"",
        );
        let put = codec::encode(
            MessageType::Confirmable,
            Method::Put.code(),
            2,
            b"t",
            &[(11, b"config".as_slice())],
            b"x",
        );
        let (get, put) = (codec::parse(&get).unwrap(), codec::parse(&put).unwrap());
        for s in 0..70 {
            assert!(c.observe(&r, &coap(&get, at(t0, f64::from(s)))).is_empty());
        }
        assert!(c.observe(&r, &coap(&get, at(t0, 70.0))).is_empty());
        let f = c.observe(&r, &coap(&put, at(t0, 71.0)));
        assert_eq!(kinds(&f), [AnomalyKind::FirstSeen]);
        let e = &f.anomalies[0].evidence;
        assert!(e.contains("request `PUT /config`"), "{e}");
        assert!(c.with_baseline(|b| b.texts.contains("GET /sensors/temp")));
    }

    fn coap<'a>(m: &'a Message<'a>, at: Instant) -> Observation<'a> {
        Observation {
            what: What::Coap(m),
            size: m.payload.len(),
            at,
            hour: 10,
        }
    }

    #[test]
    fn quarantine_on_score_or_count() {
        let d = DeviceDetector::detached("d");
        let r = AnomalyPolicy {
            action: AnomalyAction::Quarantine,
            quarantine_score: 50.0,
            quarantine_anomalies: 3,
            ..rule()
        };
        let t0 = Instant::now();
        learn(&d, &r, t0, 70);
        // One strong size anomaly.
        let f = d.observe(&r, &topic("s/t", 4000, at(t0, 70.0), 10));
        assert!(
            f.quarantine
                .as_deref()
                .unwrap()
                .contains("size anomaly with score")
        );
        // Three weak ones in the window.
        assert!(
            d.observe(&r, &topic("a", 20, at(t0, 71.0), 10))
                .quarantine
                .is_none()
        );
        assert!(
            d.observe(&r, &topic("b", 20, at(t0, 72.0), 10))
                .quarantine
                .is_none()
        );
        let f = d.observe(&r, &topic("c", 20, at(t0, 73.0), 10));
        assert_eq!(f.quarantine.as_deref(), Some("3 anomalies within 600s"));
        assert_eq!(d.with_baseline(Baseline::recent_anomalies), 0);
        // Outside the window they do not add up.
        let r = AnomalyPolicy {
            quarantine_window: Duration::from_secs(5),
            ..r
        };
        assert!(
            d.observe(&r, &topic("e", 20, at(t0, 80.0), 10))
                .quarantine
                .is_none()
        );
        assert!(
            d.observe(&r, &topic("f", 20, at(t0, 90.0), 10))
                .quarantine
                .is_none()
        );
        assert!(
            d.observe(&r, &topic("g", 20, at(t0, 100.0), 10))
                .quarantine
                .is_none()
        );
    }

    #[test]
    fn disabled_learns_nothing_and_detector_shares_baselines() {
        let det = Detector::default();
        let r = AnomalyPolicy {
            enabled: false,
            ..rule()
        };
        let a = det.device("d");
        let b = det.device("d");
        let t0 = Instant::now();
        a.observe(&r, &topic("x", 1, t0, 1));
        assert_eq!(b.with_baseline(Baseline::kinds), 0);
        a.observe(&rule(), &topic("x", 1, t0, 1));
        assert_eq!(b.with_baseline(Baseline::kinds), 1);
        assert_eq!(det.len(), 1);
        assert!(det.reset("d"));
        assert_eq!(det.device("d").with_baseline(Baseline::kinds), 0);
    }

    /// One arbitrary message: an MQTT topic, a Modbus read or a CoAP
    /// request, of any size, after any gap, in any hour.
    fn arbitrary_observation() -> impl Strategy<Value = (u8, String, u16, u16, usize, u64, u8)> {
        (
            0u8..3,
            "[a-c]{0,6}(/[a-c]{0,6}){0,4}",
            any::<u16>(),
            1u16..300,
            0usize..5000,
            0u64..30_000,
            0u8..30,
        )
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Whatever a device sends, its baseline stays within the policy's
        /// bounds: activities by count and bytes, anomaly times by the
        /// quarantine count.
        #[test]
        fn memory_stays_bounded(
            stream in proptest::collection::vec(arbitrary_observation(), 0..300),
            max_kinds in 1usize..24,
            max_kind_bytes in 64usize..256,
            quarantine_anomalies in 1u32..8,
        ) {
            let r = AnomalyPolicy {
                learning: Duration::from_secs(5),
                learning_observations: 3,
                interval: Duration::from_secs(2),
                max_kinds,
                max_kind_bytes,
                register_block: 4,
                action: AnomalyAction::Quarantine,
                quarantine_anomalies,
                ..AnomalyPolicy::default()
            };
            let d = DeviceDetector::detached("d");
            let mut at = Instant::now();
            for (what, name, start, quantity, size, gap_ms, hour) in stream {
                at += Duration::from_millis(gap_ms);
                let quantity = quantity.min(u16::MAX - start).max(1);
                let request = Request::ReadCoils(Span { start, quantity });
                let segments: Vec<(u16, &[u8])> =
                    name.split('/').map(|s| (11, s.as_bytes())).collect();
                let datagram =
                    codec::encode(MessageType::Confirmable, Method::Get.code(), 1, b"", &segments, b"");
                let msg = codec::parse(&datagram).unwrap();
                let what = match what {
                    0 => What::Topic(&name),
                    1 => What::Modbus { unit: 1, request },
                    _ => What::Coap(&msg),
                };
                let f = d.observe(&r, &Observation { what, size, at, hour });
                for a in &f.anomalies {
                    prop_assert!(a.score.is_finite() && a.score > 0.0, "{a:?}");
                }
                d.with_baseline(|b| {
                    let text_bytes: usize = b.texts.iter().map(|t| t.len()).sum();
                    prop_assert!(b.kinds() <= max_kinds);
                    prop_assert!(b.kind_bytes() <= max_kind_bytes);
                    prop_assert_eq!(b.kind_bytes(), text_bytes + CODE_BYTES * b.codes.len());
                    prop_assert!(b.recent_anomalies() <= quarantine_anomalies as usize);
                    prop_assert!(b.size.var.is_finite() && b.rate.var.is_finite());
                    Ok(())
                })?;
            }
        }
    }

    #[test]
    fn evidence_escapes_and_shortens_names() {
        let long = format!("a\n{}", "b".repeat(500));
        let s = shorten(&long);
        assert!(s.starts_with("`a\\nbbb") && s.ends_with("…`"), "{s}");
        assert!(s.chars().count() < 130);
    }
}
