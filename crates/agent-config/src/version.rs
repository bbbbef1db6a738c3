//! Versioned settings: a counter plus a content digest, for HTTP ETags
//! and optimistic concurrency.

use serde::{Deserialize, Serialize};

use crate::settings::{DeviceSettings, Validated};

/// The settings in effect and how many changes led to them.
///
/// The fields are public so the agent can store and reload this value; the
/// agent must validate reloaded settings before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// Incremented on every accepted change.
    pub version: u64,
    /// The settings in effect.
    pub settings: DeviceSettings,
}

impl Versioned {
    /// Version 1 of the given settings: the first state of a device.
    pub fn initial(settings: Validated) -> Self {
        Self {
            version: 1,
            settings: settings.into_settings(),
        }
    }

    /// The state after accepting `new`: version plus one. Saturates at
    /// `u64::MAX`, which 2^64 changes never reach.
    #[must_use]
    pub fn next(&self, new: Validated) -> Self {
        Self {
            version: self.version.saturating_add(1),
            settings: new.into_settings(),
        }
    }

    /// SHA-256 of the settings, see [`DeviceSettings::digest`].
    pub fn digest(&self) -> [u8; 32] {
        self.settings.digest()
    }

    /// A strong HTTP entity tag: `"v{version}-{first 16 hex digits of the
    /// digest}"`, double quotes included.
    pub fn etag(&self) -> String {
        let digest = self.digest();
        let prefix = digest.get(..8).unwrap_or_default();
        format!("\"v{}-{}\"", self.version, hex::encode(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{LogLevel, TlsVersion};

    fn validated(settings: &DeviceSettings) -> Validated {
        settings.validate().unwrap()
    }

    #[test]
    fn equal_settings_have_equal_digests() {
        let a = DeviceSettings::default();
        let b = DeviceSettings::from_json(br#"{"auth": {"min_password_length": 12}}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn every_change_changes_the_digest() {
        let base = DeviceSettings::default();
        let mut changes: Vec<DeviceSettings> = Vec::new();
        let mut push = |f: &dyn Fn(&mut DeviceSettings)| {
            let mut s = base.clone();
            f(&mut s);
            changes.push(s);
        };
        push(&|s| s.device.name.push('x'));
        push(&|s| s.device.location = "Lab".into());
        push(&|s| s.time.timezone = "Europe/Berlin".into());
        push(&|s| s.time.ntp_servers.push("pool.ntp.org".into()));
        push(&|s| s.auth.min_password_length = 13);
        push(&|s| s.auth.session_idle_secs = 901);
        push(&|s| s.auth.lockout_after = 9);
        push(&|s| s.auth.lockout_secs = 901);
        push(&|s| s.tls.min_version = TlsVersion::V1_2);
        push(&|s| s.logging.level = LogLevel::Debug);
        push(&|s| s.logging.remote_syslog = Some("log:514".into()));
        push(&|s| s.telemetry.enabled = true);
        push(&|s| s.telemetry.interval_secs = 61);
        push(&|s| s.danger_acknowledged.push("tls.min_version".into()));
        let mut digests = vec![base.digest()];
        for changed in &changes {
            let d = changed.digest();
            assert!(!digests.contains(&d), "{changed:?}");
            digests.push(d);
        }
    }

    #[test]
    fn etag_is_a_quoted_strong_tag_with_version_and_digest_prefix() {
        let v1 = Versioned::initial(validated(&DeviceSettings::default()));
        let etag = v1.etag();
        assert_eq!(v1.version, 1);
        assert!(etag.starts_with("\"v1-") && etag.ends_with('"'), "{etag}");
        assert_eq!(etag.len(), 2 + 3 + 16);
        assert_eq!(&etag[4..20], &hex::encode(v1.digest())[..16]);

        // Same content, next version: the tag changes with the version.
        let v2 = v1.next(validated(&DeviceSettings::default()));
        assert_eq!(v2.version, 2);
        assert_ne!(v1.etag(), v2.etag());
        assert_eq!(v1.digest(), v2.digest());

        let mut other = DeviceSettings::default();
        other.device.name = "Other".into();
        let v3 = v2.next(validated(&other));
        assert_eq!(v3.version, 3);
        assert_ne!(&v3.etag()[4..], &v2.etag()[4..]);
    }
}
