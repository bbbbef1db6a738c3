//! Runtime device settings: what an owner or operator reads and changes
//! through the API or a signed bundle, with secure defaults and floors.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::check;
use crate::error::{Error, Result, truncate};

/// Largest settings document accepted by [`DeviceSettings::from_json`].
pub const MAX_SETTINGS_JSON_BYTES: usize = 64 * 1024;

/// The runtime configuration of a device.
///
/// `Default` is the secure default configuration (ISO/IEC 27402
/// 5.2.5.2.1). Every section may be left out of a JSON document and then
/// takes its defaults; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSettings {
    /// How the device presents itself.
    pub device: DeviceInfo,
    /// Clock and time zone.
    pub time: TimeSettings,
    /// Local user authentication policy.
    pub auth: AuthSettings,
    /// TLS policy of the management API.
    pub tls: TlsSettings,
    /// Logging.
    pub logging: LoggingSettings,
    /// Telemetry to the manufacturer (off unless the owner opts in).
    pub telemetry: TelemetrySettings,
    /// Software update policy (5.2.7.2 b).
    pub updates: UpdateSettings,
    /// Dotted paths of settings deliberately set weaker than their secure
    /// default. Only the weakenable settings may be named: `auth.session_idle_secs`,
    /// `auth.lockout_after`, `auth.lockout_secs`, `tls.min_version`,
    /// `updates.automatic`.
    #[schema(max_items = 5)]
    pub danger_acknowledged: Vec<String>,
}

/// `device` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceInfo {
    /// Display name: 1 to 64 of letters, digits, space and `- _ . ( )`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9 ._()-]{1,64}$"
    )]
    pub name: String,
    /// Where the device is: 0 to 64 of the same characters.
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9 ._()-]{0,64}$")]
    pub location: String,
}

impl Default for DeviceInfo {
    fn default() -> Self {
        Self {
            name: "Bulwark device".to_owned(),
            location: String::new(),
        }
    }
}

/// `time` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TimeSettings {
    /// IANA time zone name such as `Europe/Berlin`, or `UTC`: the zone
    /// maintenance windows are read in.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$"
    )]
    pub timezone: String,
    /// Up to 4 NTP server host names (RFC 1123); empty uses none.
    #[schema(max_items = 4)]
    pub ntp_servers: Vec<String>,
}

impl Default for TimeSettings {
    fn default() -> Self {
        Self {
            timezone: "UTC".to_owned(),
            ntp_servers: Vec::new(),
        }
    }
}

/// `auth` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Shortest password accepted for local users.
    #[schema(minimum = 12, maximum = 128)]
    pub min_password_length: u32,
    /// Idle time after which a session ends; above 3600 needs acknowledgement.
    #[schema(minimum = 60, maximum = 86400)]
    pub session_idle_secs: u32,
    /// Failed logins before an account locks; above 10 needs acknowledgement.
    #[schema(minimum = 3, maximum = 100)]
    pub lockout_after: u32,
    /// How long a locked account stays locked; below 300 needs acknowledgement.
    #[schema(minimum = 60, maximum = 86400)]
    pub lockout_secs: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            min_password_length: 12,
            session_idle_secs: 900,
            lockout_after: 10,
            lockout_secs: 900,
        }
    }
}

/// `tls` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Lowest TLS version the management API accepts; "1.2" needs acknowledgement.
    pub min_version: TlsVersion,
}

/// A TLS protocol version. Versions below 1.2 cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum TlsVersion {
    /// TLS 1.2: accepted only when acknowledged as a weakening.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3: the secure default.
    #[default]
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    /// `"1.2"` or `"1.3"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        }
    }
}

/// `logging` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// Least severe level recorded.
    pub level: LogLevel,
    /// Remote syslog receiver as `host:port` or `[ipv6]:port`.
    #[schema(max_length = 261)]
    pub remote_syslog: Option<String>,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (the default).
    #[default]
    Info,
    /// Everything, for troubleshooting.
    Debug,
}

/// `telemetry` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Whether telemetry is sent at all (off by default).
    pub enabled: bool,
    /// Seconds between reports.
    #[schema(minimum = 60, maximum = 86400)]
    pub interval_secs: u32,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_secs: 3600,
        }
    }
}

/// `updates` section: the software update policy (ISO/IEC 27402
/// 5.2.7.2 b).
///
/// The agent checks the update repository every `check_interval_secs`
/// plus a random delay of up to `jitter_secs` (so that a fleet does not
/// call at once), announces a newer release once (`notify_available`) and,
/// with `automatic` on and `install` `automatic`, installs it inside the
/// maintenance `window` (anytime without one). An installed release takes
/// effect at the next restart, which interrupts the device: with
/// `restart` `automatic` the user is notified `restart_notice_secs` ahead,
/// with `confirm` the restart waits for an owner or a granted service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSettings {
    /// Whether the device checks for and installs security updates on its
    /// own (on by default); off needs acknowledgement (`updates.automatic`).
    pub automatic: bool,
    /// Whether a release found by a check is installed without asking
    /// (`automatic`) or waits for an owner or a granted service (`manual`).
    pub install: InstallMode,
    /// Seconds between checks.
    #[schema(minimum = 3600, maximum = 604800)]
    pub check_interval_secs: u32,
    /// Largest random delay added to each interval, in seconds.
    #[schema(minimum = 0, maximum = 3600)]
    pub jitter_secs: u32,
    /// When automatic installs may run; absent: at any time.
    pub window: Option<MaintenanceWindow>,
    /// Whether a newer release raises an `update_available` notification.
    pub notify_available: bool,
    /// Whether the device restarts into an installed release on its own
    /// (after the notice) or waits for a confirmed restart.
    pub restart: RestartMode,
    /// Seconds between the restart notice and the restart itself.
    #[schema(minimum = 0, maximum = 86400)]
    pub restart_notice_secs: u32,
    /// Most bytes one install may download (metered links), after the
    /// chunks reused from the active slot; 0: no limit. An install over
    /// it is refused before anything is downloaded.
    #[schema(minimum = 0, maximum = 1099511627776_u64)]
    pub data_budget_bytes: u64,
}

/// Whether the interruption that finishes an update needs a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// Restart after the notice (needs the boot file's
    /// `update.restart_command`).
    #[default]
    Automatic,
    /// Announce, and restart only on `POST /api/v1/update/restart`.
    Confirm,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            automatic: true,
            install: InstallMode::Automatic,
            check_interval_secs: 21_600,
            jitter_secs: 900,
            window: None,
            notify_available: true,
            restart: RestartMode::Automatic,
            restart_notice_secs: 300,
            data_budget_bytes: 0,
        }
    }
}

/// Whether releases found by a check are installed without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstallMode {
    /// Installed by the device, inside the maintenance window.
    #[default]
    Automatic,
    /// Announced only; an owner or a granted service installs it.
    Manual,
}

/// A weekly maintenance window: from `start` to `end` on each of `days`.
///
/// Times are wall-clock times in `time.timezone` (UTC by default), so a
/// window follows daylight saving time (a window lying wholly inside a
/// spring-forward gap does not open that day; one inside the repeated
/// autumn hour is open in both passes). An `end`
/// earlier than `start` wraps past midnight into the next day (the window
/// belongs to the day it starts on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// The days the window opens on, each at most once.
    #[schema(min_items = 1, max_items = 7)]
    pub days: Vec<Weekday>,
    /// When it opens, `HH:MM` (local time in `time.timezone`).
    #[schema(value_type = String, pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: TimeOfDay,
    /// When it closes, `HH:MM` (local time), not equal to `start`.
    #[schema(value_type = String, pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: TimeOfDay,
}

impl MaintenanceWindow {
    /// Whether the window is open on `day` at `time` (local wall clock).
    pub fn contains(&self, day: Weekday, time: TimeOfDay) -> bool {
        let on = |d: Weekday| self.days.contains(&d);
        if self.start <= self.end {
            on(day) && self.start <= time && time < self.end
        } else {
            // Wraps past midnight: the late part of a listed day, or the
            // early part of the day after one.
            (on(day) && time >= self.start) || (on(day.previous()) && time < self.end)
        }
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The day before.
    pub fn previous(self) -> Self {
        match self {
            Self::Mon => Self::Sun,
            Self::Tue => Self::Mon,
            Self::Wed => Self::Tue,
            Self::Thu => Self::Wed,
            Self::Fri => Self::Thu,
            Self::Sat => Self::Fri,
            Self::Sun => Self::Sat,
        }
    }
}

/// A time of day to the minute, written `HH:MM` (00:00 to 23:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    /// `hour:minute`; `None` past 23:59.
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        (hour < 24 && minute < 60).then(|| Self {
            minutes: u16::from(hour) * 60 + u16::from(minute),
        })
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.minutes
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "{:?} is not a time of day HH:MM (00:00 to 23:59)",
                truncate(&text)
            )
        };
        let b = text.as_bytes();
        if b.len() != 5 || b.get(2) != Some(&b':') {
            return Err(bad());
        }
        let two = |i: usize| -> Option<u8> {
            let (h, l) = (*b.get(i)?, *b.get(i + 1)?);
            (h.is_ascii_digit() && l.is_ascii_digit()).then(|| (h - b'0') * 10 + (l - b'0'))
        };
        match (two(0), two(3)) {
            (Some(h), Some(m)) => Self::new(h, m).ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> Self {
        format!("{:02}:{:02}", t.minutes / 60, t.minutes % 60)
    }
}

/// One setting that is weaker than its secure default, acknowledged in
/// `danger_acknowledged`. The agent raises a warning for each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Weakening {
    /// Dotted path of the setting.
    pub field: String,
    /// The secure default.
    pub secure_default: String,
    /// The value in effect.
    pub value: String,
}

/// Settings that passed [`DeviceSettings::validate`]: the only way to a
/// [`crate::Versioned::next`] state or a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    settings: DeviceSettings,
    weakenings: Vec<Weakening>,
}

impl Validated {
    /// The settings.
    pub fn settings(&self) -> &DeviceSettings {
        &self.settings
    }

    /// The acknowledged weakenings, in table order; empty when every
    /// setting is at least as strong as its secure default.
    pub fn weakenings(&self) -> &[Weakening] {
        &self.weakenings
    }

    /// The settings, consuming the proof.
    pub fn into_settings(self) -> DeviceSettings {
        self.settings
    }
}

/// Which direction of a number is the weaker one.
#[derive(Clone, Copy)]
enum Weaker {
    Higher,
    Lower,
}

/// A security-relevant numeric setting (see the table in the crate docs).
struct Rule {
    field: &'static str,
    secure_default: u32,
    /// The usable limit on the strong side (too strict to operate).
    strict_limit: u32,
    /// Values weaker than this need acknowledgement.
    acknowledge_past: u32,
    /// Values weaker than this are refused outright.
    floor: u32,
    weaker: Weaker,
}

const MIN_PASSWORD_LENGTH: Rule = Rule {
    field: "auth.min_password_length",
    secure_default: 12,
    strict_limit: 128,
    acknowledge_past: 12,
    floor: 12,
    weaker: Weaker::Lower,
};
const SESSION_IDLE_SECS: Rule = Rule {
    field: "auth.session_idle_secs",
    secure_default: 900,
    strict_limit: 60,
    acknowledge_past: 3600,
    floor: 86400,
    weaker: Weaker::Higher,
};
const LOCKOUT_AFTER: Rule = Rule {
    field: "auth.lockout_after",
    secure_default: 10,
    strict_limit: 3,
    acknowledge_past: 10,
    floor: 100,
    weaker: Weaker::Higher,
};
const LOCKOUT_SECS: Rule = Rule {
    field: "auth.lockout_secs",
    secure_default: 900,
    strict_limit: 86400,
    acknowledge_past: 300,
    floor: 60,
    weaker: Weaker::Lower,
};
const TLS_MIN_VERSION: &str = "tls.min_version";
const UPDATES_AUTOMATIC: &str = "updates.automatic";

/// The settings that may be weakened with an acknowledgement: the names
/// `danger_acknowledged` accepts.
pub const WEAKENABLE_SETTINGS: [&str; 5] = [
    SESSION_IDLE_SECS.field,
    LOCKOUT_AFTER.field,
    LOCKOUT_SECS.field,
    TLS_MIN_VERSION,
    UPDATES_AUTOMATIC,
];

impl Rule {
    /// Range and floor checks; returns a weakening if the value is on the
    /// weak side of its acknowledgement threshold.
    fn check(&self, value: u32, acknowledged: &[String], out: &mut Vec<Weakening>) -> Result<()> {
        let (past_floor, too_strict, needs_ack) = match self.weaker {
            Weaker::Higher => (
                value > self.floor,
                value < self.strict_limit,
                value > self.acknowledge_past,
            ),
            Weaker::Lower => (
                value < self.floor,
                value > self.strict_limit,
                value < self.acknowledge_past,
            ),
        };
        if past_floor {
            return Err(Error::BelowSecurityFloor {
                field: self.field.to_owned(),
                floor: self.floor.to_string(),
            });
        }
        if too_strict {
            let (min, max) = match self.weaker {
                Weaker::Higher => (self.strict_limit, self.floor),
                Weaker::Lower => (self.floor, self.strict_limit),
            };
            return check::range(self.field, value, min, max);
        }
        if needs_ack {
            acknowledge(self.field, acknowledged)?;
            out.push(Weakening {
                field: self.field.to_owned(),
                secure_default: self.secure_default.to_string(),
                value: value.to_string(),
            });
        }
        Ok(())
    }
}

fn acknowledge(field: &str, acknowledged: &[String]) -> Result<()> {
    if acknowledged.iter().any(|a| a == field) {
        Ok(())
    } else {
        Err(Error::WeakeningNotAcknowledged {
            field: field.to_owned(),
        })
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '(' | ')')
}

const NAME_FORMAT: &str = "letters, digits, space and - _ . ( ) only";

impl DeviceSettings {
    /// The zone `time.timezone` names (from the embedded tz database when
    /// the system has none); validation has checked that it exists.
    pub fn time_zone(&self) -> std::result::Result<jiff::tz::TimeZone, jiff::Error> {
        jiff::tz::TimeZone::get(&self.time.timezone)
    }

    /// Decodes a settings document (JSON) from untrusted bytes. Does not
    /// validate: call [`DeviceSettings::validate`] next.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        crate::decode::json("device settings", bytes, MAX_SETTINGS_JSON_BYTES)
    }

    /// Checks every field's range and format and the security floor, and
    /// lists acknowledged weakenings.
    pub fn validate(&self) -> Result<Validated> {
        self.check_acknowledgements()?;
        let ack = &self.danger_acknowledged;
        let mut weakenings = Vec::new();

        check::chars(
            "device.name",
            &self.device.name,
            1,
            64,
            is_name_char,
            &format!("1 to 64 characters: {NAME_FORMAT}"),
        )?;
        check::chars(
            "device.location",
            &self.device.location,
            0,
            64,
            is_name_char,
            &format!("0 to 64 characters: {NAME_FORMAT}"),
        )?;

        if !is_timezone(&self.time.timezone) || self.time_zone().is_err() {
            return Err(check::invalid(
                "time.timezone",
                "a time zone of the IANA tz database like Europe/Berlin or UTC (1 to 64 of A-Z a-z 0-9 _ + - in /-separated parts)",
            ));
        }
        check::count("time.ntp_servers", &self.time.ntp_servers, 4)?;
        for (i, server) in self.time.ntp_servers.iter().enumerate() {
            if !check::is_hostname(server) {
                return Err(check::invalid(
                    &format!("time.ntp_servers[{i}]"),
                    "an RFC 1123 host name",
                ));
            }
        }

        MIN_PASSWORD_LENGTH.check(self.auth.min_password_length, ack, &mut weakenings)?;
        SESSION_IDLE_SECS.check(self.auth.session_idle_secs, ack, &mut weakenings)?;
        LOCKOUT_AFTER.check(self.auth.lockout_after, ack, &mut weakenings)?;
        LOCKOUT_SECS.check(self.auth.lockout_secs, ack, &mut weakenings)?;

        if self.tls.min_version == TlsVersion::V1_2 {
            acknowledge(TLS_MIN_VERSION, ack)?;
            weakenings.push(Weakening {
                field: TLS_MIN_VERSION.to_owned(),
                secure_default: TlsVersion::default().as_str().to_owned(),
                value: self.tls.min_version.as_str().to_owned(),
            });
        }

        if let Some(remote) = &self.logging.remote_syslog
            && !check::is_host_port(remote)
        {
            return Err(check::invalid(
                "logging.remote_syslog",
                "host:port or [ipv6]:port with port 1 to 65535",
            ));
        }

        check::range(
            "telemetry.interval_secs",
            self.telemetry.interval_secs,
            60,
            86400,
        )?;

        self.check_updates(ack, &mut weakenings)?;

        Ok(Validated {
            settings: self.clone(),
            weakenings,
        })
    }

    fn check_updates(&self, ack: &[String], weakenings: &mut Vec<Weakening>) -> Result<()> {
        let updates = &self.updates;
        if !updates.automatic {
            acknowledge(UPDATES_AUTOMATIC, ack)?;
            weakenings.push(Weakening {
                field: UPDATES_AUTOMATIC.to_owned(),
                secure_default: "true".to_owned(),
                value: "false".to_owned(),
            });
        }
        check::range(
            "updates.check_interval_secs",
            updates.check_interval_secs,
            3600,
            604_800,
        )?;
        check::range("updates.jitter_secs", updates.jitter_secs, 0, 3600)?;
        check::range(
            "updates.restart_notice_secs",
            updates.restart_notice_secs,
            0,
            86_400,
        )?;
        check::range(
            "updates.data_budget_bytes",
            updates.data_budget_bytes,
            0,
            1 << 40,
        )?;
        if let Some(window) = &updates.window {
            if window.days.is_empty() {
                return Err(check::invalid(
                    "updates.window.days",
                    "at least one of mon, tue, wed, thu, fri, sat, sun",
                ));
            }
            for (i, day) in window.days.iter().enumerate() {
                if window
                    .days
                    .get(..i)
                    .is_some_and(|before| before.contains(day))
                {
                    return Err(Error::Duplicate {
                        field: format!("updates.window.days[{i}]"),
                    });
                }
            }
            if window.start == window.end {
                return Err(check::invalid(
                    "updates.window.end",
                    "a time other than updates.window.start",
                ));
            }
        }
        Ok(())
    }

    fn check_acknowledgements(&self) -> Result<()> {
        let field = "danger_acknowledged";
        for (i, name) in self.danger_acknowledged.iter().enumerate() {
            if !WEAKENABLE_SETTINGS.contains(&name.as_str()) {
                return Err(Error::UnknownAcknowledgement {
                    name: truncate(name),
                    allowed: WEAKENABLE_SETTINGS.join(", "),
                });
            }
            if self
                .danger_acknowledged
                .get(..i)
                .is_some_and(|before| before.contains(name))
            {
                return Err(Error::Duplicate {
                    field: format!("{field}[{i}]"),
                });
            }
        }
        Ok(())
    }

    /// SHA-256 over the canonical JSON serialisation (field order as
    /// declared, no whitespace). Equal settings give equal digests.
    pub fn digest(&self) -> [u8; 32] {
        // Invariant: these types hold only strings, numbers, booleans,
        // enums and lists, which serde_json always serialises.
        let json = serde_json::to_vec(self).expect("device settings always serialise to JSON");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

/// `UTC` or `Area/City[/...]`: `/`-separated non-empty parts of
/// `[A-Za-z0-9_+-]`, 64 bytes at most. Leading, trailing and doubled `/`
/// are refused, and `.` is not allowed at all, so the name is always a
/// safe relative path below the zoneinfo directory.
fn is_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= 64
        && tz.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(json: &str) -> Result<Validated> {
        DeviceSettings::from_json(json.as_bytes())?.validate()
    }

    fn auth(field: &str, value: u32, ack: bool) -> Result<Validated> {
        let ack = if ack {
            format!(r#", "danger_acknowledged": ["auth.{field}"]"#)
        } else {
            String::new()
        };
        with(&format!(r#"{{"auth": {{"{field}": {value}}}{ack}}}"#))
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Ok,
        Weak,
        Floor,
        Range,
    }

    fn outcome(field: &str, value: u32) -> Outcome {
        let plain = auth(field, value, false);
        let acked = auth(field, value, true);
        match (plain, acked) {
            (Ok(v), _) => {
                assert!(v.weakenings().is_empty());
                Outcome::Ok
            }
            (Err(Error::WeakeningNotAcknowledged { field: f }), Ok(v)) => {
                assert_eq!(f, format!("auth.{field}"));
                let w = &v.weakenings()[0];
                assert_eq!(w.field, f);
                assert_eq!(w.value, value.to_string());
                Outcome::Weak
            }
            (Err(Error::BelowSecurityFloor { field: f, .. }), Err(_)) => {
                assert_eq!(f, format!("auth.{field}"));
                Outcome::Floor
            }
            (Err(Error::OutOfRange { field: f, .. }), Err(_)) => {
                assert_eq!(f, format!("auth.{field}"));
                Outcome::Range
            }
            other => panic!("{field}={value}: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_secure_and_valid() {
        let v = DeviceSettings::default().validate().unwrap();
        assert!(v.weakenings().is_empty());
        assert_eq!(
            DeviceSettings::from_json(b"{}").unwrap(),
            DeviceSettings::default()
        );
        let d = DeviceSettings::default();
        assert_eq!(d.device.name, "Bulwark device");
        assert_eq!(d.time.timezone, "UTC");
        assert_eq!(d.auth.min_password_length, 12);
        assert_eq!(d.tls.min_version, TlsVersion::V1_3);
        assert_eq!(d.logging.level, LogLevel::Info);
        assert!(!d.telemetry.enabled);
        assert_eq!(d.telemetry.interval_secs, 3600);
    }

    #[test]
    fn min_password_length_has_floor_12_and_max_128() {
        assert_eq!(outcome("min_password_length", 8), Outcome::Floor);
        assert_eq!(outcome("min_password_length", 11), Outcome::Floor);
        assert_eq!(outcome("min_password_length", 12), Outcome::Ok);
        assert_eq!(outcome("min_password_length", 128), Outcome::Ok);
        assert_eq!(outcome("min_password_length", 129), Outcome::Range);
        let Err(Error::BelowSecurityFloor { floor, .. }) = auth("min_password_length", 8, false)
        else {
            panic!()
        };
        assert_eq!(floor, "12");
    }

    #[test]
    fn session_idle_secs_limits() {
        assert_eq!(outcome("session_idle_secs", 59), Outcome::Range);
        assert_eq!(outcome("session_idle_secs", 60), Outcome::Ok);
        assert_eq!(outcome("session_idle_secs", 3600), Outcome::Ok);
        assert_eq!(outcome("session_idle_secs", 3601), Outcome::Weak);
        assert_eq!(outcome("session_idle_secs", 86400), Outcome::Weak);
        assert_eq!(outcome("session_idle_secs", 86401), Outcome::Floor);
    }

    #[test]
    fn lockout_after_limits() {
        assert_eq!(outcome("lockout_after", 2), Outcome::Range);
        assert_eq!(outcome("lockout_after", 3), Outcome::Ok);
        assert_eq!(outcome("lockout_after", 10), Outcome::Ok);
        assert_eq!(outcome("lockout_after", 11), Outcome::Weak);
        assert_eq!(outcome("lockout_after", 100), Outcome::Weak);
        assert_eq!(outcome("lockout_after", 101), Outcome::Floor);
    }

    #[test]
    fn lockout_secs_limits() {
        assert_eq!(outcome("lockout_secs", 59), Outcome::Floor);
        assert_eq!(outcome("lockout_secs", 60), Outcome::Weak);
        assert_eq!(outcome("lockout_secs", 299), Outcome::Weak);
        assert_eq!(outcome("lockout_secs", 300), Outcome::Ok);
        assert_eq!(outcome("lockout_secs", 86400), Outcome::Ok);
        assert_eq!(outcome("lockout_secs", 86401), Outcome::Range);
    }

    #[test]
    fn out_of_range_names_field_and_range() {
        let err = auth("lockout_after", 2, false).unwrap_err();
        let Error::OutOfRange {
            field,
            value,
            allowed,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            (field.as_str(), value.as_str(), allowed.as_str()),
            ("auth.lockout_after", "2", "3..=100")
        );
        assert_eq!(
            err.to_string(),
            "`auth.lockout_after` is 2; allowed: 3..=100"
        );
    }

    #[test]
    fn tls_1_2_needs_acknowledgement_and_is_reported() {
        let err = with(r#"{"tls": {"min_version": "1.2"}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::WeakeningNotAcknowledged { field } if field == "tls.min_version"),
            "{err:?}"
        );
        let v =
            with(r#"{"tls": {"min_version": "1.2"}, "danger_acknowledged": ["tls.min_version"]}"#)
                .unwrap();
        assert_eq!(
            v.weakenings(),
            [Weakening {
                field: "tls.min_version".into(),
                secure_default: "1.3".into(),
                value: "1.2".into()
            }]
        );
        // Below 1.2 cannot even be expressed.
        let err = with(r#"{"tls": {"min_version": "1.1"}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { field, .. } if field == "tls.min_version"),
            "{err:?}"
        );
    }

    #[test]
    fn several_weakenings_are_all_reported() {
        let v = with(
            r#"{"auth": {"lockout_after": 20, "lockout_secs": 120},
                "tls": {"min_version": "1.2"},
                "danger_acknowledged": ["tls.min_version", "auth.lockout_secs", "auth.lockout_after"]}"#,
        )
        .unwrap();
        let fields: Vec<_> = v.weakenings().iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            fields,
            ["auth.lockout_after", "auth.lockout_secs", "tls.min_version"]
        );
        assert_eq!(v.weakenings()[1].secure_default, "900");
    }

    #[test]
    fn acknowledging_one_field_does_not_cover_another() {
        let err = with(
            r#"{"auth": {"lockout_after": 20}, "danger_acknowledged": ["auth.lockout_secs"]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::WeakeningNotAcknowledged { field } if field == "auth.lockout_after")
        );
    }

    #[test]
    fn unknown_or_repeated_acknowledgements_are_refused() {
        let err = with(r#"{"danger_acknowledged": ["auth.min_password_length"]}"#).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownAcknowledgement { name, .. } if name == "auth.min_password_length"),
            "{err:?}"
        );
        let err = with(r#"{"danger_acknowledged": ["tls.min_versoin"]}"#).unwrap_err();
        assert!(matches!(err, Error::UnknownAcknowledgement { .. }));
        let err =
            with(r#"{"danger_acknowledged": ["tls.min_version", "tls.min_version"]}"#).unwrap_err();
        assert!(matches!(&err, Error::Duplicate { field } if field == "danger_acknowledged[1]"));
    }

    fn format_error_field(json: &str) -> String {
        match with(json) {
            Err(Error::InvalidFormat { field, .. }) => field,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn device_name_and_location() {
        let name = |n: &str| with(&format!(r#"{{"device": {{"name": "{n}"}}}}"#));
        assert!(name("a").is_ok());
        assert!(name("Lab switch (rack 3) - port_1.a").is_ok());
        assert!(name(&"n".repeat(64)).is_ok());
        for bad in [
            "",
            "a/b",
            "K\u{fc}che",
            "a\\tb",
            "<script>",
            &"n".repeat(65),
        ] {
            assert!(
                matches!(name(bad), Err(Error::InvalidFormat { field, .. }) if field == "device.name"),
                "{bad}"
            );
        }
        let location = |n: &str| with(&format!(r#"{{"device": {{"location": "{n}"}}}}"#));
        assert!(location("").is_ok());
        assert!(location(&"l".repeat(64)).is_ok());
        assert_eq!(
            format_error_field(&format!(
                r#"{{"device": {{"location": "{}"}}}}"#,
                "l".repeat(65)
            )),
            "device.location"
        );
        assert_eq!(
            format_error_field(r#"{"device": {"location": "a;b"}}"#),
            "device.location"
        );
    }

    #[test]
    fn timezone_format() {
        let tz = |t: &str| with(&format!(r#"{{"time": {{"timezone": "{t}"}}}}"#));
        for good in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "Etc/GMT-14",
        ] {
            assert!(tz(good).is_ok(), "{good}");
        }
        for bad in [
            "Mars/Olympus_Mons",
            "Europe/Atlantis",
            "",
            "/etc/passwd",
            "../../x",
            "Europe//Berlin",
            "Europe/",
            "Europe Berlin",
            &"Z".repeat(65),
        ] {
            assert!(
                matches!(tz(bad), Err(Error::InvalidFormat { field, .. }) if field == "time.timezone"),
                "{bad}"
            );
        }
    }

    #[test]
    fn ntp_servers_count_and_format() {
        assert!(
            with(r#"{"time": {"ntp_servers": ["a", "b.example", "0.pool.ntp.org", "192.0.2.1"]}}"#)
                .is_ok()
        );
        let err = with(r#"{"time": {"ntp_servers": ["a", "b", "c", "d", "e"]}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::TooManyEntries { field, count: 5, max: 4 } if field == "time.ntp_servers")
        );
        assert_eq!(
            format_error_field(r#"{"time": {"ntp_servers": ["ok", "not ok"]}}"#),
            "time.ntp_servers[1]"
        );
        assert_eq!(
            format_error_field(r#"{"time": {"ntp_servers": ["-bad"]}}"#),
            "time.ntp_servers[0]"
        );
    }

    #[test]
    fn remote_syslog_is_host_port() {
        assert!(with(r#"{"logging": {"remote_syslog": "log.example:514"}}"#).is_ok());
        assert!(with(r#"{"logging": {"remote_syslog": "[2001:db8::1]:6514"}}"#).is_ok());
        assert!(with(r#"{"logging": {"remote_syslog": null}}"#).is_ok());
        for bad in ["log.example", "log.example:0", "log example:514", ""] {
            assert_eq!(
                format_error_field(&format!(r#"{{"logging": {{"remote_syslog": "{bad}"}}}}"#)),
                "logging.remote_syslog"
            );
        }
        let v = with(r#"{"logging": {"level": "debug"}}"#).unwrap();
        assert_eq!(v.settings().logging.level, LogLevel::Debug);
        assert!(matches!(
            with(r#"{"logging": {"level": "trace"}}"#),
            Err(Error::InvalidField { field, .. }) if field == "logging.level"
        ));
    }

    #[test]
    fn telemetry_interval_range() {
        let t = |s: u32| {
            with(&format!(
                r#"{{"telemetry": {{"enabled": true, "interval_secs": {s}}}}}"#
            ))
        };
        assert!(t(60).is_ok());
        assert!(t(86400).is_ok());
        for bad in [59, 86401] {
            assert!(
                matches!(t(bad), Err(Error::OutOfRange { field, .. }) if field == "telemetry.interval_secs")
            );
        }
    }

    #[test]
    fn malformed_input_says_what_is_wrong() {
        let err = DeviceSettings::from_json(b"{\"device\": {\"name\": \"\xff\"}}").unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotUtf8 {
                    valid_up_to: 21,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = DeviceSettings::from_json(b"{\n  \"auth\": {,}\n}").unwrap_err();
        assert!(
            matches!(err, Error::Malformed { line: Some(2), .. }),
            "{err:?}"
        );

        let err = DeviceSettings::from_json(b"{} trailing").unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");

        let err = DeviceSettings::from_json(b"").unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");

        let err = DeviceSettings::from_json(br#"{"auth": {"lockout_after": "ten"}}"#).unwrap_err();
        let Error::InvalidField { field, reason, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "auth.lockout_after");
        assert!(reason.contains("invalid type"), "{reason}");

        let err =
            DeviceSettings::from_json(br#"{"auth": {"lockout_after": 4294967296}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { field, .. } if field == "auth.lockout_after"),
            "{err:?}"
        );

        let err = DeviceSettings::from_json(br#"{"auth": {"lockout_after": -1}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { field, .. } if field == "auth.lockout_after"),
            "{err:?}"
        );

        let err = DeviceSettings::from_json(br#"[]"#).unwrap_err();
        assert!(matches!(&err, Error::InvalidField { .. }), "{err:?}");

        let err = DeviceSettings::from_json(br#"{"auth": {}, "auth": {}}"#).unwrap_err();
        assert!(matches!(&err, Error::InvalidField { .. }), "{err:?}");

        let big = vec![b' '; MAX_SETTINGS_JSON_BYTES + 1];
        let err = DeviceSettings::from_json(&big).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let err = DeviceSettings::from_json(br#"{"auth": {"lockout_sec": 900}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownField { field, .. } if field == "auth.lockout_sec"),
            "{err:?}"
        );
        let err = DeviceSettings::from_json(br#"{"debug_backdoor": true}"#).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownField { field, .. } if field == "debug_backdoor"),
            "{err:?}"
        );
    }

    #[test]
    fn round_trips_through_json() {
        let v = with(r#"{"device": {"name": "x"}, "logging": {"remote_syslog": "h:1"}}"#).unwrap();
        let json = serde_json::to_vec(v.settings()).unwrap();
        assert_eq!(&DeviceSettings::from_json(&json).unwrap(), v.settings());
    }

    /// The OpenAPI schema must state the limits the validator enforces.
    #[test]
    fn schema_states_validator_limits() {
        use utoipa::PartialSchema;
        let schema = |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(s).unwrap()
        };
        let auth = schema(AuthSettings::schema());
        for rule in [
            MIN_PASSWORD_LENGTH,
            SESSION_IDLE_SECS,
            LOCKOUT_AFTER,
            LOCKOUT_SECS,
        ] {
            let name = rule.field.strip_prefix("auth.").unwrap();
            let prop = &auth["properties"][name];
            let (min, max) = match rule.weaker {
                Weaker::Higher => (rule.strict_limit, rule.floor),
                Weaker::Lower => (rule.floor, rule.strict_limit),
            };
            assert_eq!(prop["minimum"], min, "{name}");
            assert_eq!(prop["maximum"], max, "{name}");
        }
        let telemetry = schema(TelemetrySettings::schema());
        assert_eq!(telemetry["properties"]["interval_secs"]["minimum"], 60);
        assert_eq!(telemetry["properties"]["interval_secs"]["maximum"], 86400);

        let device = schema(DeviceInfo::schema());
        assert_eq!(device["properties"]["name"]["maxLength"], 64);
        let time = schema(TimeSettings::schema());
        assert_eq!(time["properties"]["timezone"]["maxLength"], 64);
        assert_eq!(time["properties"]["ntp_servers"]["maxItems"], 4);

        // The patterns accept and refuse what the validator does (checked
        // on samples by a tiny matcher for these character-class patterns).
        let name_pattern = device["properties"]["name"]["pattern"].as_str().unwrap();
        assert_eq!(name_pattern, r"^[A-Za-z0-9 ._()-]{1,64}$");
        for c in (0u8..128).map(char::from) {
            let in_class = c.is_ascii_alphanumeric() || " ._()-".contains(c);
            assert_eq!(is_name_char(c), in_class, "{c:?}");
        }
        let tz_pattern = time["properties"]["timezone"]["pattern"].as_str().unwrap();
        assert_eq!(tz_pattern, r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$");
        let tls = schema(TlsVersion::schema());
        assert_eq!(tls["enum"], serde_json::json!(["1.2", "1.3"]));
    }

    #[test]
    fn update_defaults_are_automatic_and_notify() {
        let u = DeviceSettings::default().updates;
        assert!(u.automatic);
        assert_eq!(u.install, InstallMode::Automatic);
        assert_eq!((u.check_interval_secs, u.jitter_secs), (21_600, 900));
        assert_eq!(u.window, None);
        assert!(u.notify_available);
        assert_eq!(
            (u.restart, u.restart_notice_secs),
            (RestartMode::Automatic, 300)
        );
        let v = with(r#"{"updates": {}}"#).unwrap();
        assert_eq!(v.settings().updates, u);
    }

    #[test]
    fn turning_automatic_updates_off_needs_acknowledgement() {
        let err = with(r#"{"updates": {"automatic": false}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::WeakeningNotAcknowledged { field } if field == "updates.automatic"),
            "{err:?}"
        );
        let v = with(
            r#"{"updates": {"automatic": false}, "danger_acknowledged": ["updates.automatic"]}"#,
        )
        .unwrap();
        assert_eq!(
            v.weakenings(),
            [Weakening {
                field: "updates.automatic".into(),
                secure_default: "true".into(),
                value: "false".into()
            }]
        );
        // Manual install still announces every release: not a weakening.
        let v = with(r#"{"updates": {"install": "manual"}}"#).unwrap();
        assert!(v.weakenings().is_empty());
        assert_eq!(v.settings().updates.install, InstallMode::Manual);
        assert!(matches!(
            with(r#"{"updates": {"install": "never"}}"#),
            Err(Error::InvalidField { field, .. }) if field == "updates.install"
        ));
    }

    #[test]
    fn update_interval_and_jitter_ranges() {
        let u = |interval: u32, jitter: u32| {
            with(&format!(
                r#"{{"updates": {{"check_interval_secs": {interval}, "jitter_secs": {jitter}}}}}"#
            ))
        };
        assert!(u(3600, 0).is_ok());
        assert!(u(604_800, 3600).is_ok());
        for (interval, jitter, field) in [
            (3599, 0, "updates.check_interval_secs"),
            (604_801, 0, "updates.check_interval_secs"),
            (3600, 3601, "updates.jitter_secs"),
        ] {
            assert!(
                matches!(u(interval, jitter), Err(Error::OutOfRange { field: f, .. }) if f == field),
                "{interval} {jitter}"
            );
        }
    }

    #[test]
    fn maintenance_window_format() {
        let w = |json: &str| with(&format!(r#"{{"updates": {{"window": {json}}}}}"#));
        let v = w(r#"{"days": ["sat", "sun"], "start": "22:30", "end": "04:00"}"#).unwrap();
        let window = v.settings().updates.window.clone().unwrap();
        assert_eq!(window.days, [Weekday::Sat, Weekday::Sun]);
        assert_eq!(window.start, TimeOfDay::new(22, 30).unwrap());
        assert_eq!(window.end.minutes(), 240);
        // Round trip keeps the HH:MM form.
        let json = serde_json::to_value(v.settings()).unwrap();
        assert_eq!(json["updates"]["window"]["start"], "22:30");
        assert_eq!(json["updates"]["window"]["end"], "04:00");
        for bad in [
            "24:00", "7:00", "07:60", "07-00", "", "07:00:00", "+1:00", "０7:00",
        ] {
            let err = w(&format!(
                r#"{{"days": ["mon"], "start": "{bad}", "end": "05:00"}}"#
            ))
            .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidField { field, .. } if field == "updates.window.start"),
                "{bad}: {err:?}"
            );
        }
        let err = w(r#"{"days": [], "start": "01:00", "end": "02:00"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidFormat { field, .. } if field == "updates.window.days"),
            "{err:?}"
        );
        let err =
            w(r#"{"days": ["mon", "tue", "mon"], "start": "01:00", "end": "02:00"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Duplicate { field } if field == "updates.window.days[2]"),
            "{err:?}"
        );
        let err = w(r#"{"days": ["mon"], "start": "01:00", "end": "01:00"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidFormat { field, .. } if field == "updates.window.end"),
            "{err:?}"
        );
        let err = w(r#"{"days": ["monday"], "start": "01:00", "end": "02:00"}"#).unwrap_err();
        assert!(matches!(err, Error::InvalidField { .. }), "{err:?}");
        let err =
            w(r#"{"days": ["mon"], "start": "01:00", "end": "02:00", "tz": "x"}"#).unwrap_err();
        assert!(matches!(err, Error::UnknownField { .. }), "{err:?}");
    }

    /// Window evaluation: inside and outside a same-day window, and a
    /// window that wraps past midnight into the next day (also from Sunday
    /// into Monday).
    #[test]
    fn maintenance_window_inside_outside_and_past_midnight() {
        let t = |h, m| TimeOfDay::new(h, m).unwrap();
        let day = MaintenanceWindow {
            days: vec![Weekday::Tue, Weekday::Thu],
            start: t(2, 0),
            end: t(4, 30),
        };
        assert!(day.contains(Weekday::Tue, t(2, 0)));
        assert!(day.contains(Weekday::Thu, t(4, 29)));
        assert!(!day.contains(Weekday::Tue, t(4, 30)), "end is exclusive");
        assert!(!day.contains(Weekday::Tue, t(1, 59)));
        assert!(!day.contains(Weekday::Wed, t(3, 0)), "not a listed day");

        let night = MaintenanceWindow {
            days: vec![Weekday::Sat, Weekday::Sun],
            start: t(23, 0),
            end: t(3, 0),
        };
        assert!(night.contains(Weekday::Sat, t(23, 0)));
        assert!(night.contains(Weekday::Sat, t(23, 59)));
        assert!(night.contains(Weekday::Sun, t(0, 0)), "Saturday's window");
        assert!(night.contains(Weekday::Sun, t(2, 59)));
        assert!(night.contains(Weekday::Mon, t(1, 0)), "Sunday's window");
        assert!(!night.contains(Weekday::Mon, t(3, 0)));
        assert!(
            !night.contains(Weekday::Sat, t(2, 0)),
            "Friday is not listed"
        );
        assert!(!night.contains(Weekday::Sun, t(12, 0)));
        assert!(!night.contains(Weekday::Mon, t(23, 30)));
        assert_eq!(Weekday::Mon.previous(), Weekday::Sun);
    }

    #[test]
    fn update_schema_states_validator_limits() {
        use utoipa::PartialSchema;
        let updates = serde_json::to_value(UpdateSettings::schema()).unwrap();
        let p = &updates["properties"];
        assert_eq!(p["check_interval_secs"]["minimum"], 3600);
        assert_eq!(p["check_interval_secs"]["maximum"], 604_800);
        assert_eq!(p["jitter_secs"]["minimum"], 0);
        assert_eq!(p["jitter_secs"]["maximum"], 3600);
        assert_eq!(p["restart_notice_secs"]["maximum"], 86_400);
        assert_eq!(p["data_budget_bytes"]["maximum"], 1_u64 << 40);
        let err = with(r#"{"updates": {"data_budget_bytes": 1099511627777}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::OutOfRange { field, .. } if field == "updates.data_budget_bytes"),
            "{err}"
        );
        let err = with(r#"{"updates": {"restart_notice_secs": 86401}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::OutOfRange { field, .. } if field == "updates.restart_notice_secs"),
            "{err}"
        );
        let window = serde_json::to_value(MaintenanceWindow::schema()).unwrap();
        assert_eq!(window["properties"]["days"]["minItems"], 1);
        assert_eq!(window["properties"]["days"]["maxItems"], 7);
        let pattern = window["properties"]["start"]["pattern"].as_str().unwrap();
        assert_eq!(pattern, r"^([01][0-9]|2[0-3]):[0-5][0-9]$");
        let mode = serde_json::to_value(InstallMode::schema()).unwrap();
        assert_eq!(mode["enum"], serde_json::json!(["automatic", "manual"]));
    }

    #[test]
    fn weakenable_settings_table_matches_rules() {
        for rule in [SESSION_IDLE_SECS, LOCKOUT_AFTER, LOCKOUT_SECS] {
            assert!(WEAKENABLE_SETTINGS.contains(&rule.field));
        }
        assert!(WEAKENABLE_SETTINGS.contains(&UPDATES_AUTOMATIC));
        let d = AuthSettings::default();
        assert_eq!(MIN_PASSWORD_LENGTH.secure_default, d.min_password_length);
        assert_eq!(SESSION_IDLE_SECS.secure_default, d.session_idle_secs);
        assert_eq!(LOCKOUT_AFTER.secure_default, d.lockout_after);
        assert_eq!(LOCKOUT_SECS.secure_default, d.lockout_secs);
    }
}
