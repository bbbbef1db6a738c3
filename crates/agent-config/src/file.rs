//! The boot configuration file, `/etc/bulwark/agent.toml`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result};

/// Largest boot file accepted by [`AgentFile::from_toml`].
pub const MAX_AGENT_FILE_BYTES: usize = 256 * 1024;

/// Permission names a machine client (`[[services]]`) can be granted.
pub const PERMISSIONS: [&str; 9] = [
    "read-status",
    "read-config",
    "change-config",
    "read-logs",
    "manage-users",
    "remove-user-data",
    "factory-reset",
    "install-update",
    "manage-interfaces",
];

/// The agent's boot configuration. Every field may be left out of the
/// file and then takes the value of [`AgentFile::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentFile {
    /// Directory for the agent's persistent state.
    pub state_dir: PathBuf,
    /// Keystore specification, parsed by the binary (`software`, ...).
    pub keystore: String,
    /// The management API listener.
    pub api: ApiSection,
    /// TLS trust for machine clients.
    pub tls: TlsSection,
    /// Machine clients and what they may do.
    pub services: Vec<ServiceEntry>,
    /// Where security notifications go.
    pub notifications: NotificationsSection,
    /// Keys allowed to sign configuration bundles (ISO/IEC 27402 5.2.2.2).
    pub config_signers: Vec<SignerEntry>,
    /// Interface state on first start.
    pub interfaces: InterfacesSection,
    /// The public part of `bulwark comply build`'s output installed on the
    /// device (`.well-known/security.txt`, `public/disclosure.json`,
    /// `docs/*.md`): served without authentication (5.1.2.1.2).
    pub disclosure_dir: Option<PathBuf>,
    /// Secure updates (ISO/IEC 27402 5.2.7) and the start-up integrity
    /// check (5.2.5.2.1); absent: updates are not configured.
    pub update: Option<UpdateSection>,
}

impl Default for AgentFile {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("./bulwark-state"),
            keystore: "software".to_owned(),
            api: ApiSection::default(),
            tls: TlsSection::default(),
            services: Vec::new(),
            notifications: NotificationsSection::default(),
            config_signers: Vec::new(),
            interfaces: InterfacesSection::default(),
            disclosure_dir: None,
            update: None,
        }
    }
}

/// `[api]`: listener and resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest request body: 1024 to 1048576.
    pub max_body_bytes: usize,
    /// Request timeout: 1 to 120 seconds.
    pub request_timeout_secs: u64,
    /// Requests in flight before shedding load: 1 to 4096.
    pub max_concurrent_requests: usize,
    /// Sustained requests per second per client: 1 to 10000.
    pub per_client_rps: u32,
    /// Burst per client: 1 to 10000.
    pub per_client_burst: u32,
    /// A second address for on-site maintenance (e.g. a USB or service
    /// link), enabled through `[interfaces] maintenance_api` or the API.
    pub maintenance_listen: Option<SocketAddr>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8443)),
            max_body_bytes: 65536,
            request_timeout_secs: 10,
            max_concurrent_requests: 64,
            per_client_rps: 20,
            per_client_burst: 40,
            maintenance_listen: None,
        }
    }
}

/// `[tls]`: trust anchors for client certificates of machine clients.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM CA files; empty means no machine clients can authenticate.
    pub service_anchors: Vec<PathBuf>,
}

/// `[[services]]`: one machine client, named by its certificate's CN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Certificate common name: 1 to 64 of `[A-Za-z0-9._-]`.
    pub identity: String,
    /// Permission names from [`PERMISSIONS`].
    #[serde(default)]
    pub grants: Vec<String>,
}

/// `[notifications]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// MQTT broker to publish to.
    pub mqtt: Option<MqttHub>,
    /// HTTPS endpoint to POST to.
    pub webhook: Option<Webhook>,
    /// Notifications held while sinks are unreachable: 16 to 65536.
    pub queue_capacity: usize,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        Self {
            mqtt: None,
            webhook: None,
            queue_capacity: 1024,
        }
    }
}

/// `[notifications.mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttHub {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port (MQTT over TLS by default).
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Topic to publish to: no wildcards, no NUL, not `$`-reserved, at most 256 bytes.
    pub topic: String,
    /// PEM CA file the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// Notification kinds it receives (see [`NOTIFICATION_KINDS`]);
    /// empty: every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// The least severity it receives; absent: `info` (everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
}

fn default_mqtt_port() -> u16 {
    8883
}

/// `[notifications.webhook]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://host[:port]/path`, at most 2048 bytes.
    pub url: String,
    /// PEM CA file the endpoint's certificate must chain to.
    pub ca_file: PathBuf,
    /// Notification kinds it receives (see [`NOTIFICATION_KINDS`]);
    /// empty: every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// The least severity it receives; absent: `info` (everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
}

/// Notification kinds, as the notify crate names them (a test in the
/// agent checks the two lists agree).
pub const NOTIFICATION_KINDS: [&str; 8] = [
    "security_alert",
    "update_available",
    "restart_pending",
    "integrity_failure",
    "removal_receipt",
    "configuration_changed",
    "warning",
    "reset",
];

/// Notification severities, least first.
pub const NOTIFICATION_SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// Which notifications a hub receives ("whom to notify"): e.g. a user's
/// webhook only `update_available` and `restart_pending`, an operator's
/// broker everything.
fn check_route(field: &str, kinds: &[String], min_severity: Option<&str>) -> Result<()> {
    check::count(&format!("{field}.kinds"), kinds, NOTIFICATION_KINDS.len())?;
    for (i, kind) in kinds.iter().enumerate() {
        if !NOTIFICATION_KINDS.contains(&kind.as_str()) {
            return Err(check::invalid(
                &format!("{field}.kinds[{i}]"),
                &format!("one of {}", NOTIFICATION_KINDS.join(", ")),
            ));
        }
        if kinds[..i].contains(kind) {
            return Err(Error::Duplicate {
                field: format!("{field}.kinds[{i}]"),
            });
        }
    }
    if let Some(s) = min_severity
        && !NOTIFICATION_SEVERITIES.contains(&s)
    {
        return Err(check::invalid(
            &format!("{field}.min_severity"),
            "info, warning or critical",
        ));
    }
    Ok(())
}

/// `[[config_signers]]`: a key allowed to sign configuration bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerEntry {
    /// Name shown in logs and audit records: 1 to 64 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// PEM `SubjectPublicKeyInfo` (ECDSA P-256 or Ed25519).
    pub public_key_file: PathBuf,
}

/// `[interfaces]`: which interfaces are on at first start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterfacesSection {
    /// The HTTPS management API.
    pub management_api: bool,
    /// The maintenance listener (`api.maintenance_listen`), off by
    /// default (5.2.5.2.1: only what is needed is enabled).
    pub maintenance_api: bool,
}

impl Default for InterfacesSection {
    fn default() -> Self {
        Self {
            management_api: true,
            maintenance_api: false,
        }
    }
}

/// `[update]`: A/B slots, the boot loader, the keys trusted to sign
/// releases and the TUF repository they come from. The agent keeps the
/// slot records, the install journal and the repository's verified
/// metadata in `<state_dir>/update/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// This device's hardware compatibility string; a release's manifest
    /// must name exactly this: 1 to 64 of `[A-Za-z0-9._-]`.
    pub compatible: String,
    /// Slot `a`: a file or block device.
    pub slot_a: PathBuf,
    /// Slot `b`: a file or block device, not the same as `slot_a`.
    pub slot_b: PathBuf,
    /// The boot loader: `file:<state file>` (simulated, for development
    /// and tests), `uboot:<fw_env.config>` or `grub:<grubenv>`.
    pub boot: String,
    /// PEM `SubjectPublicKeyInfo` files (ECDSA P-256 or Ed25519) of the
    /// keys trusted to sign release manifests: 1 to 16.
    pub trusted_keys: Vec<PathBuf>,
    /// Distinct trusted keys that must sign a release: 1 to 16, at most the
    /// number of `trusted_keys`.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Where releases come from; absent: installs are refused (the
    /// start-up integrity check still runs).
    pub repository: Option<UpdateRepository>,
    /// The slot the system runs from, `a` or `b`. With `uboot:` or
    /// `grub:`, overrides `bulwark.slot=` / `rauc.slot=` on
    /// `/proc/cmdline`; with `file:`, the slot the simulated boot loader
    /// starts with when its state file does not exist yet (default `a`).
    pub booted_slot: Option<String>,
    /// Checks a trial boot must pass, after its integrity check, to be
    /// committed; a failure abandons the trial (the next boot returns to
    /// the committed slot) and is reported. At most 16, run in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheckSection>,
    /// The command that restarts the device into an installed release,
    /// e.g. `["/usr/bin/systemctl", "reboot"]` (absolute program path, no
    /// shell). Absent: the agent never restarts the device; installs ask
    /// the user to.
    pub restart_command: Option<Vec<String>>,
    /// The TPM PCR (SHA-256 bank) the start-up integrity measurement is
    /// extended into when the keystore uses a TPM: 8 to 15, the PCRs the
    /// OS may extend that it cannot reset (0-7 are the firmware's, 16 and
    /// 23 resettable). Absent: 13 (see `keys_tpm::pcr` for why).
    pub measure_pcr: Option<u8>,
}

fn default_threshold() -> u32 {
    1
}

/// `[[update.health_checks]]`: a program whose exit status 0 within the
/// timeout means healthy, e.g. `command = ["/usr/bin/systemctl",
/// "is-active", "--quiet", "mosquitto.service"]`. No shell, no `PATH`
/// lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// Name in findings and the event log: 1 to 64 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// The program (absolute path) and its arguments: 1 to 32 entries.
    pub command: Vec<String>,
    /// Seconds it may run: 1 to 600.
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u32,
}

fn default_health_timeout() -> u32 {
    60
}

/// `[update.repository]`: a TUF repository (`http://`, `https://` or
/// `file://`: TUF metadata authenticates itself; `https://` adds
/// confidentiality about which release a device fetches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRepository {
    /// Base URL of the metadata (`http://`, `https://` or `file://`,
    /// ending in `/`).
    pub metadata_url: String,
    /// Base URL of the targets (`http://`, `https://` or `file://`,
    /// ending in `/`).
    pub targets_url: String,
    /// The repository's root metadata the device was provisioned with.
    pub root_file: PathBuf,
    /// CA certificates (PEM) an `https://` mirror's certificate must chain
    /// to; absent, the platform trust store is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The boot loader named by [`UpdateSection::boot`], parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootLoader {
    /// A boot loader simulated in a JSON state file.
    File(PathBuf),
    /// U-Boot's environment, described by this `fw_env.config`.
    UBoot(PathBuf),
    /// GRUB's environment block file.
    Grub(PathBuf),
}

impl UpdateSection {
    /// The boot loader [`UpdateSection::boot`] names
    /// ([`AgentFile::validate`] has checked that it parses).
    pub fn boot_loader(&self) -> Result<BootLoader> {
        let expected = "file:<path>, uboot:<fw_env.config> or grub:<grubenv>";
        let (kind, path) = self
            .boot
            .split_once(':')
            .ok_or_else(|| check::invalid("update.boot", expected))?;
        let path = PathBuf::from(path);
        check::path("update.boot", &path).map_err(|_| check::invalid("update.boot", expected))?;
        match kind {
            "file" => Ok(BootLoader::File(path)),
            "uboot" => Ok(BootLoader::UBoot(path)),
            "grub" => Ok(BootLoader::Grub(path)),
            _ => Err(check::invalid("update.boot", expected)),
        }
    }

    fn validate(&self) -> Result<()> {
        check::chars(
            "update.compatible",
            &self.compatible,
            1,
            64,
            is_identity_char,
            IDENTITY_FORMAT,
        )?;
        check::path("update.slot_a", &self.slot_a)?;
        check::path("update.slot_b", &self.slot_b)?;
        if self.slot_a == self.slot_b {
            return Err(check::invalid(
                "update.slot_b",
                "a path different from update.slot_a",
            ));
        }
        self.boot_loader()?;
        if self.trusted_keys.is_empty() {
            return Err(check::invalid(
                "update.trusted_keys",
                "at least one PEM public key file (a release no key signs is never installed)",
            ));
        }
        check::count("update.trusted_keys", &self.trusted_keys, 16)?;
        for (i, key) in self.trusted_keys.iter().enumerate() {
            let field = format!("update.trusted_keys[{i}]");
            check::path(&field, key)?;
            if self.trusted_keys.get(..i).is_some_and(|b| b.contains(key)) {
                return Err(Error::Duplicate { field });
            }
        }
        check::range("update.threshold", self.threshold, 1, 16)?;
        if self.threshold as usize > self.trusted_keys.len() {
            return Err(check::invalid(
                "update.threshold",
                &format!(
                    "at most the number of update.trusted_keys ({})",
                    self.trusted_keys.len()
                ),
            ));
        }
        if let Some(repo) = &self.repository {
            for (field, url) in [
                ("update.repository.metadata_url", &repo.metadata_url),
                ("update.repository.targets_url", &repo.targets_url),
            ] {
                if !is_repository_url(url) {
                    return Err(check::invalid(
                        field,
                        "an http://, https:// or file:// URL ending in / of at most 2048 bytes (printable ASCII, no query or fragment)",
                    ));
                }
            }
            check::path("update.repository.root_file", &repo.root_file)?;
            if let Some(ca) = &repo.ca_file {
                check::path("update.repository.ca_file", ca)?;
            }
        }
        if let Some(slot) = &self.booted_slot
            && slot != "a"
            && slot != "b"
        {
            return Err(check::invalid("update.booted_slot", "a or b"));
        }
        check::count("update.health_checks", &self.health_checks, 16)?;
        for (i, hc) in self.health_checks.iter().enumerate() {
            let field = format!("update.health_checks[{i}]");
            check::chars(
                &format!("{field}.name"),
                &hc.name,
                1,
                64,
                |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
                "1 to 64 of A-Z a-z 0-9 . _ -",
            )?;
            if self.health_checks[..i].iter().any(|o| o.name == hc.name) {
                return Err(Error::Duplicate {
                    field: format!("{field}.name"),
                });
            }
            check_command(&format!("{field}.command"), &hc.command)?;
            check::range(&format!("{field}.timeout_secs"), hc.timeout_secs, 1, 600)?;
        }
        if let Some(command) = &self.restart_command {
            check_command("update.restart_command", command)?;
        }
        if let Some(pcr) = self.measure_pcr {
            // Kept equal to keys_tpm::pcr::ALLOWED (this crate does not
            // depend on the TPM one).
            check::range("update.measure_pcr", pcr, 8, 15)?;
        }
        Ok(())
    }
}

/// A program to run directly: 1 to 32 entries, an absolute program path
/// first (no `PATH` lookup), arguments of at most 4096 bytes without NUL.
fn check_command(field: &str, command: &[String]) -> Result<()> {
    if command.is_empty() || command.len() > 32 {
        return Err(check::invalid(
            field,
            "a program and its arguments: 1 to 32 entries",
        ));
    }
    if !Path::new(&command[0]).is_absolute() {
        return Err(check::invalid(
            field,
            "an absolute program path first (no PATH lookup)",
        ));
    }
    if command.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
        return Err(check::invalid(
            field,
            "arguments of at most 4096 bytes without NUL",
        ));
    }
    Ok(())
}

/// `http[s]://host[:port]/path/` or `file:///path/`: what the TUF client
/// fetches from. The trailing `/` matters: a base URL without it would
/// lose its last segment when file names are joined to it.
fn is_repository_url(url: &str) -> bool {
    if url.len() > 2048
        || !url.ends_with('/')
        || !url
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'))
    {
        return false;
    }
    if let Some(path) = url.strip_prefix("file://") {
        return path.starts_with('/');
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    if authority.ends_with(']') {
        return authority
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    if authority.contains(':') {
        return check::is_host_port(authority);
    }
    check::is_hostname(authority) || authority.parse::<Ipv4Addr>().is_ok()
}

pub(crate) fn is_identity_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

const IDENTITY_FORMAT: &str = "1 to 64 characters of A-Z a-z 0-9 . _ -";

impl AgentFile {
    /// Parses and validates the boot file. Parse errors carry the line
    /// (and column) the TOML parser points at; validation errors carry the
    /// field's dotted path.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: Self = crate::decode::toml("agent.toml", text, MAX_AGENT_FILE_BYTES)?;
        file.validate()?;
        Ok(file)
    }

    /// Checks ranges and formats; [`AgentFile::from_toml`] calls this.
    pub fn validate(&self) -> Result<()> {
        check::path("state_dir", &self.state_dir)?;
        if self.keystore.is_empty()
            || self.keystore.len() > 512
            || self.keystore.chars().any(char::is_control)
        {
            return Err(check::invalid(
                "keystore",
                "a keystore specification of 1 to 512 bytes without control characters",
            ));
        }

        let api = &self.api;
        check::range("api.max_body_bytes", api.max_body_bytes, 1024, 1_048_576)?;
        check::range("api.request_timeout_secs", api.request_timeout_secs, 1, 120)?;
        check::range(
            "api.max_concurrent_requests",
            api.max_concurrent_requests,
            1,
            4096,
        )?;
        check::range("api.per_client_rps", api.per_client_rps, 1, 10_000)?;
        check::range("api.per_client_burst", api.per_client_burst, 1, 10_000)?;
        if api.maintenance_listen == Some(api.listen) {
            return Err(check::invalid(
                "api.maintenance_listen",
                "an address different from api.listen",
            ));
        }

        check::count("tls.service_anchors", &self.tls.service_anchors, 64)?;
        for (i, anchor) in self.tls.service_anchors.iter().enumerate() {
            check::path(&format!("tls.service_anchors[{i}]"), anchor)?;
        }

        self.validate_services()?;
        self.validate_notifications()?;

        check::count("config_signers", &self.config_signers, 64)?;
        let mut names = HashSet::new();
        for (i, signer) in self.config_signers.iter().enumerate() {
            let field = format!("config_signers[{i}].name");
            check::chars(
                &field,
                &signer.name,
                1,
                64,
                is_identity_char,
                IDENTITY_FORMAT,
            )?;
            if !names.insert(signer.name.as_str()) {
                return Err(Error::Duplicate { field });
            }
            check::path(
                &format!("config_signers[{i}].public_key_file"),
                &signer.public_key_file,
            )?;
        }
        if let Some(update) = &self.update {
            update.validate()?;
        }
        Ok(())
    }

    fn validate_services(&self) -> Result<()> {
        check::count("services", &self.services, 1024)?;
        if !self.services.is_empty() && self.tls.service_anchors.is_empty() {
            // A service without an anchor to authenticate it can never
            // connect: almost certainly a forgotten `service_anchors`.
            return Err(check::invalid(
                "tls.service_anchors",
                "empty while [[services]] are configured (list the CA files that issue their certificates)",
            ));
        }
        let mut identities = HashSet::new();
        for (i, service) in self.services.iter().enumerate() {
            let field = format!("services[{i}].identity");
            check::chars(
                &field,
                &service.identity,
                1,
                64,
                is_identity_char,
                IDENTITY_FORMAT,
            )?;
            if !identities.insert(service.identity.as_str()) {
                return Err(Error::Duplicate { field });
            }
            check::count(
                &format!("services[{i}].grants"),
                &service.grants,
                PERMISSIONS.len(),
            )?;
            for (j, grant) in service.grants.iter().enumerate() {
                let field = format!("services[{i}].grants[{j}]");
                if !PERMISSIONS.contains(&grant.as_str()) {
                    return Err(check::invalid(
                        &field,
                        &format!("a permission name, one of: {}", PERMISSIONS.join(", ")),
                    ));
                }
                if service
                    .grants
                    .get(..j)
                    .is_some_and(|before| before.contains(grant))
                {
                    return Err(Error::Duplicate { field });
                }
            }
        }
        Ok(())
    }

    fn validate_notifications(&self) -> Result<()> {
        let n = &self.notifications;
        check::range("notifications.queue_capacity", n.queue_capacity, 16, 65536)?;
        if let Some(mqtt) = &n.mqtt {
            if !check::is_host(&mqtt.host) {
                return Err(check::invalid(
                    "notifications.mqtt.host",
                    "an RFC 1123 host name or an IP address",
                ));
            }
            check::range("notifications.mqtt.port", mqtt.port, 1, u16::MAX)?;
            if !is_mqtt_topic(&mqtt.topic) {
                return Err(check::invalid(
                    "notifications.mqtt.topic",
                    "an MQTT topic name of 1 to 256 bytes without wildcards (+ #), NUL or a leading $",
                ));
            }
            check::path("notifications.mqtt.ca_file", &mqtt.ca_file)?;
            check_route(
                "notifications.mqtt",
                &mqtt.kinds,
                mqtt.min_severity.as_deref(),
            )?;
        }
        if let Some(webhook) = &n.webhook {
            if !is_https_url(&webhook.url) {
                return Err(check::invalid(
                    "notifications.webhook.url",
                    "an https://host[:port]/path URL of at most 2048 bytes (no user info, query or fragment)",
                ));
            }
            check::path("notifications.webhook.ca_file", &webhook.ca_file)?;
            check_route(
                "notifications.webhook",
                &webhook.kinds,
                webhook.min_severity.as_deref(),
            )?;
        }
        Ok(())
    }
}

/// An MQTT topic name for publishing: no wildcards, no NUL, not starting
/// with `$` (reserved for broker topics such as `$SYS`).
fn is_mqtt_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 256
        && !topic.starts_with('$')
        && !topic.chars().any(|c| matches!(c, '+' | '#' | '\0'))
}

/// `https://host[:port][/path]`: host a name, an IPv4 address or a
/// bracketed IPv6 address; the path printable ASCII without `?`, `#` or
/// spaces. User info is refused so no credentials sit in the file.
fn is_https_url(url: &str) -> bool {
    if url.len() > 2048 {
        return false;
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority_ok = if authority.ends_with(']') {
        authority
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
    } else if authority.contains(':') {
        check::is_host_port(authority)
    } else {
        check::is_hostname(authority) || authority.parse::<Ipv4Addr>().is_ok()
    };
    authority_ok
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete file using every field; kept in the fuzz corpus too.
    const FULL: &str = r#"
state_dir = "/var/lib/bulwark"
keystore = "tpm2:/dev/tpmrm0"

[api]
listen = "[::]:443"
max_body_bytes = 131072
request_timeout_secs = 30
max_concurrent_requests = 128
per_client_rps = 10
per_client_burst = 20

[tls]
service_anchors = ["/etc/bulwark/services-ca.pem"]

[[services]]
identity = "fleet-manager.example"
grants = ["read-status", "read-config", "change-config"]

[[services]]
identity = "log_collector-1"
grants = ["read-logs"]

[notifications]
queue_capacity = 4096

[notifications.mqtt]
host = "mqtt.example.com"
topic = "bulwark/devices/events"
ca_file = "/etc/bulwark/mqtt-ca.pem"

[notifications.webhook]
url = "https://hooks.example.com:8443/bulwark/events"
ca_file = "/etc/bulwark/hooks-ca.pem"

[[config_signers]]
name = "fleet-manager"
public_key_file = "/etc/bulwark/signers/fleet.pem"

[interfaces]
management_api = true
maintenance_api = true

[update]
compatible = "bw-100"
slot_a = "/dev/mmcblk0p2"
slot_b = "/dev/mmcblk0p3"
boot = "uboot:/etc/fw_env.config"
trusted_keys = ["/etc/bulwark/release-1.pem", "/etc/bulwark/release-2.pem"]
threshold = 2
booted_slot = "b"

[update.repository]
metadata_url = "http://updates.example.com/metadata/"
targets_url = "http://updates.example.com/targets/"
root_file = "/etc/bulwark/update-root.json"
"#;

    fn file_err(toml: &str) -> Error {
        AgentFile::from_toml(toml).unwrap_err()
    }

    fn field_of(err: &Error) -> &str {
        match err {
            Error::OutOfRange { field, .. }
            | Error::InvalidFormat { field, .. }
            | Error::Duplicate { field }
            | Error::TooManyEntries { field, .. }
            | Error::UnknownField { field, .. }
            | Error::InvalidField { field, .. } => field,
            other => panic!("no field in {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_the_embedded_defaults() {
        let file = AgentFile::from_toml("").unwrap();
        assert_eq!(file, AgentFile::default());
        assert_eq!(file.state_dir, PathBuf::from("./bulwark-state"));
        assert_eq!(file.keystore, "software");
        assert_eq!(file.api.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(file.api.max_body_bytes, 65536);
        assert_eq!(file.api.request_timeout_secs, 10);
        assert_eq!(file.api.max_concurrent_requests, 64);
        assert_eq!(
            (file.api.per_client_rps, file.api.per_client_burst),
            (20, 40)
        );
        assert_eq!(file.notifications.queue_capacity, 1024);
        assert!(file.interfaces.management_api && !file.interfaces.maintenance_api);
        AgentFile::default().validate().unwrap();
    }

    #[test]
    fn full_file_parses() {
        let file = AgentFile::from_toml(FULL).unwrap();
        assert_eq!(file.api.listen, "[::]:443".parse().unwrap());
        assert_eq!(file.services.len(), 2);
        let mqtt = file.notifications.mqtt.as_ref().unwrap();
        assert_eq!(mqtt.port, 8883);
        assert_eq!(file.config_signers[0].name, "fleet-manager");
        assert!(file.interfaces.maintenance_api);
    }

    #[test]
    fn api_ranges_at_their_boundaries() {
        let cases: [(&str, u64, u64); 5] = [
            ("max_body_bytes", 1024, 1_048_576),
            ("request_timeout_secs", 1, 120),
            ("max_concurrent_requests", 1, 4096),
            ("per_client_rps", 1, 10_000),
            ("per_client_burst", 1, 10_000),
        ];
        for (name, min, max) in cases {
            for ok in [min, max] {
                AgentFile::from_toml(&format!("[api]\n{name} = {ok}\n")).unwrap();
            }
            for bad in [min - 1, max + 1] {
                let err = file_err(&format!("[api]\n{name} = {bad}\n"));
                let Error::OutOfRange { field, allowed, .. } = &err else {
                    panic!("{err:?}")
                };
                assert_eq!(field, &format!("api.{name}"));
                assert_eq!(allowed, &format!("{min}..={max}"));
            }
        }
    }

    #[test]
    fn maintenance_listener_is_a_second_address() {
        let file =
            AgentFile::from_toml("[api]\nmaintenance_listen = \"192.0.2.1:8444\"\n").unwrap();
        assert_eq!(
            file.api.maintenance_listen,
            Some("192.0.2.1:8444".parse().unwrap())
        );
        let err = file_err(
            "[api]\nlisten = \"192.0.2.1:8444\"\nmaintenance_listen = \"192.0.2.1:8444\"\n",
        );
        assert_eq!(field_of(&err), "api.maintenance_listen");
        let err = file_err("[api]\nmaintenance_listen = \"nowhere\"\n");
        assert!(
            matches!(&err, Error::InvalidField { field, line: Some(2), .. } if field == "api.maintenance_listen"),
            "{err:?}"
        );
    }

    #[test]
    fn queue_capacity_range() {
        for ok in [16, 65536] {
            AgentFile::from_toml(&format!("[notifications]\nqueue_capacity = {ok}\n")).unwrap();
        }
        for bad in [15, 65537] {
            let err = file_err(&format!("[notifications]\nqueue_capacity = {bad}\n"));
            assert_eq!(field_of(&err), "notifications.queue_capacity");
        }
    }

    #[test]
    fn keystore_spec_checks() {
        AgentFile::from_toml(&format!("keystore = \"{}\"", "k".repeat(512))).unwrap();
        for bad in [
            "\"\"".to_owned(),
            format!("\"{}\"", "k".repeat(513)),
            "\"a\\nb\"".to_owned(),
        ] {
            assert_eq!(
                field_of(&file_err(&format!("keystore = {bad}"))),
                "keystore"
            );
        }
        assert_eq!(field_of(&file_err("state_dir = \"\"")), "state_dir");
    }

    #[test]
    fn services_identity_grants_and_anchors() {
        let anchors = "[tls]\nservice_anchors = [\"/ca.pem\"]\n";
        let svc = |identity: &str, grants: &str| {
            AgentFile::from_toml(&format!(
                "{anchors}[[services]]\nidentity = \"{identity}\"\ngrants = [{grants}]\n"
            ))
        };
        svc("a", "").unwrap();
        svc(&"a".repeat(64), "\"factory-reset\", \"manage-interfaces\"").unwrap();
        for bad in ["", "a b", "a/b", "a@b", &"a".repeat(65)] {
            assert_eq!(
                field_of(&svc(bad, "").unwrap_err()),
                "services[0].identity",
                "{bad}"
            );
        }
        let err = svc("a", "\"read-status\", \"root\"").unwrap_err();
        assert_eq!(field_of(&err), "services[0].grants[1]");
        assert!(err.to_string().contains("manage-users"), "{err}");
        let err = svc("a", "\"read-status\", \"read-status\"").unwrap_err();
        assert!(matches!(&err, Error::Duplicate { field } if field == "services[0].grants[1]"));
        let err = AgentFile::from_toml(&format!(
            "{anchors}[[services]]\nidentity = \"a\"\n[[services]]\nidentity = \"a\"\n"
        ))
        .unwrap_err();
        assert!(matches!(&err, Error::Duplicate { field } if field == "services[1].identity"));
        // Services with nothing to authenticate them are a configuration mistake.
        let err = file_err("[[services]]\nidentity = \"a\"\n");
        assert_eq!(field_of(&err), "tls.service_anchors");
        // A missing identity is a decode error naming the entry.
        let err = file_err(&format!("{anchors}[[services]]\ngrants = []\n"));
        assert!(
            matches!(&err, Error::InvalidField { field, .. } if field.starts_with("services[0]")),
            "{err:?}"
        );
    }

    #[test]
    fn mqtt_checks() {
        let mqtt = |host: &str, port: u32, topic: &str| {
            AgentFile::from_toml(&format!(
                "[notifications.mqtt]\nhost = \"{host}\"\nport = {port}\ntopic = \"{topic}\"\nca_file = \"/ca.pem\"\n"
            ))
        };
        mqtt("mqtt.example", 1, "a/b").unwrap();
        mqtt("192.0.2.7", 65535, "a").unwrap();
        mqtt("2001:db8::7", 8883, "a").unwrap();
        assert_eq!(
            field_of(&mqtt("bad host", 8883, "a").unwrap_err()),
            "notifications.mqtt.host"
        );
        assert_eq!(
            field_of(&mqtt("h", 0, "a").unwrap_err()),
            "notifications.mqtt.port"
        );
        let err = mqtt("h", 65536, "a").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { field, line: Some(3), .. } if field == "notifications.mqtt.port"),
            "{err:?}"
        );
        for bad in ["a/#", "a/+/b", "", "$SYS/x"] {
            assert_eq!(
                field_of(&mqtt("h", 1, bad).unwrap_err()),
                "notifications.mqtt.topic"
            );
        }
        let err = file_err("[notifications.mqtt]\nhost = \"h\"\ntopic = \"t\"\n");
        assert!(
            matches!(&err, Error::InvalidField { reason, .. } if reason.contains("ca_file")),
            "{err:?}"
        );
    }

    #[test]
    fn webhook_must_be_https() {
        let hook = |url: &str| {
            AgentFile::from_toml(&format!(
                "[notifications.webhook]\nurl = \"{url}\"\nca_file = \"/ca.pem\"\n"
            ))
        };
        hook("https://hooks.example/x").unwrap();
        for bad in [
            "http://hooks.example/x",
            "https://u@h/",
            "ftp://x",
            "https://h/?a",
        ] {
            assert_eq!(
                field_of(&hook(bad).unwrap_err()),
                "notifications.webhook.url",
                "{bad}"
            );
        }
    }

    #[test]
    fn config_signers_checks() {
        let signer = |name: &str| {
            format!("[[config_signers]]\nname = \"{name}\"\npublic_key_file = \"/k.pem\"\n")
        };
        AgentFile::from_toml(&signer("fleet-1")).unwrap();
        assert_eq!(
            field_of(&file_err(&signer("has space"))),
            "config_signers[0].name"
        );
        let err = file_err(&format!("{}{}", signer("x"), signer("x")));
        assert!(matches!(&err, Error::Duplicate { field } if field == "config_signers[1].name"));
    }

    #[test]
    fn parse_errors_carry_field_and_line() {
        let err = file_err("[api]\nmax_body_bytes = 2048\nlisten_addr = \"0.0.0.0:1\"\n");
        let Error::UnknownField { field, line, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "api.listen_addr");
        assert_eq!(*line, Some(3));

        let err = file_err("\n\n[api]\nmax_body_bytes = \"big\"\n");
        let Error::InvalidField { field, line, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "api.max_body_bytes");
        assert_eq!(*line, Some(4));
        assert!(err.to_string().contains("line 4"), "{err}");

        let err = file_err("[api]\nlisten = \"not an address\"\n");
        assert!(
            matches!(&err, Error::InvalidField { field, line: Some(2), .. } if field == "api.listen"),
            "{err:?}"
        );

        let err = file_err("[api\n");
        assert!(
            matches!(err, Error::Malformed { line: Some(1), .. }),
            "{err:?}"
        );

        let err = file_err("a = 1\nb = = 2\n");
        assert!(
            matches!(err, Error::Malformed { line: Some(2), .. }),
            "{err:?}"
        );

        let err = file_err("telnet = true\n");
        assert!(
            matches!(&err, Error::UnknownField { field, .. } if field == "telnet"),
            "{err:?}"
        );

        let err = file_err("[api]\n[api]\n");
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");

        let big = "#".repeat(MAX_AGENT_FILE_BYTES + 1);
        assert!(matches!(file_err(&big), Error::TooLarge { .. }));
    }

    const UPDATE: &str = "[update]\ncompatible = \"bw-100\"\nslot_a = \"/a\"\nslot_b = \"/b\"\nboot = \"file:/boot.json\"\ntrusted_keys = [\"/k.pem\"]\n";

    #[test]
    fn update_section_is_optional_and_parses() {
        assert_eq!(AgentFile::from_toml("").unwrap().update, None);
        let file = AgentFile::from_toml(UPDATE).unwrap();
        let update = file.update.unwrap();
        assert_eq!(update.threshold, 1);
        assert_eq!(update.repository, None);
        assert_eq!(update.booted_slot, None);
        assert_eq!(
            update.boot_loader().unwrap(),
            BootLoader::File(PathBuf::from("/boot.json"))
        );
        let full = AgentFile::from_toml(FULL).unwrap().update.unwrap();
        assert_eq!(full.threshold, 2);
        assert_eq!(
            full.boot_loader().unwrap(),
            BootLoader::UBoot(PathBuf::from("/etc/fw_env.config"))
        );
        assert_eq!(
            full.repository.unwrap().targets_url,
            "http://updates.example.com/targets/"
        );
        let grub =
            AgentFile::from_toml(&UPDATE.replace("file:/boot.json", "grub:/boot/grub/grubenv"))
                .unwrap();
        assert_eq!(
            grub.update.unwrap().boot_loader().unwrap(),
            BootLoader::Grub(PathBuf::from("/boot/grub/grubenv"))
        );
    }

    #[test]
    fn measure_pcr_is_optional_and_bounded() {
        assert_eq!(
            AgentFile::from_toml(UPDATE)
                .unwrap()
                .update
                .unwrap()
                .measure_pcr,
            None
        );
        let with = |pcr: &str| {
            AgentFile::from_toml(&format!("{UPDATE}measure_pcr = {pcr}\n"))
                .map(|f| f.update.unwrap().measure_pcr)
        };
        assert_eq!(with("8").unwrap(), Some(8));
        assert_eq!(with("15").unwrap(), Some(15));
        for bad in ["0", "7", "16", "23"] {
            let err = with(bad).unwrap_err();
            assert_eq!(field_of(&err), "update.measure_pcr", "{bad}: {err}");
        }
        assert!(with("-1").is_err() && with("256").is_err());
    }

    #[test]
    fn health_checks_parse_and_bad_ones_name_the_field() {
        let with = |checks: &str| {
            AgentFile::from_toml(&format!("{UPDATE}{checks}")).map(|f| f.update.unwrap())
        };
        let ok = with(
            "[[update.health_checks]]\nname = \"broker\"\ncommand = [\"/usr/bin/systemctl\", \"is-active\", \"--quiet\", \"mosquitto.service\"]\n",
        )
        .unwrap();
        assert_eq!(ok.health_checks.len(), 1);
        assert_eq!(ok.health_checks[0].timeout_secs, 60);
        let cases = [
            (
                "name = \"a b\"\ncommand = [\"/bin/true\"]",
                "update.health_checks[0].name",
            ),
            (
                "name = \"a\"\ncommand = []",
                "update.health_checks[0].command",
            ),
            (
                "name = \"a\"\ncommand = [\"true\"]",
                "update.health_checks[0].command",
            ),
            (
                "name = \"a\"\ncommand = [\"/bin/true\"]\ntimeout_secs = 0",
                "update.health_checks[0].timeout_secs",
            ),
            (
                "name = \"a\"\ncommand = [\"/bin/true\"]\ntimeout_secs = 601",
                "update.health_checks[0].timeout_secs",
            ),
        ];
        for (body, field) in cases {
            let err = with(&format!("[[update.health_checks]]\n{body}\n")).unwrap_err();
            assert_eq!(field_of(&err), field, "{body}: {err}");
        }
        let twice = "[[update.health_checks]]\nname = \"a\"\ncommand = [\"/bin/true\"]\n";
        let err = with(&format!("{twice}{twice}")).unwrap_err();
        assert!(
            matches!(&err, Error::Duplicate { field } if field == "update.health_checks[1].name"),
            "{err}"
        );
        let err = with(
            "[[update.health_checks]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nshell = true\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("shell"), "{err}");
    }

    #[test]
    fn hub_routes_name_known_kinds_and_severities() {
        let hub = |extra: &str| {
            AgentFile::from_toml(&format!(
                "[notifications.webhook]\nurl = \"https://hub.example.com/n\"\nca_file = \"/ca.pem\"\n{extra}"
            ))
        };
        let ok = hub(
            "kinds = [\"update_available\", \"restart_pending\"]\nmin_severity = \"warning\"\n",
        )
        .unwrap();
        let webhook = ok.notifications.webhook.unwrap();
        assert_eq!(webhook.kinds.len(), 2);
        assert_eq!(webhook.min_severity.as_deref(), Some("warning"));
        assert_eq!(
            field_of(&hub("kinds = [\"gossip\"]\n").unwrap_err()),
            "notifications.webhook.kinds[0]"
        );
        let twice = hub("kinds = [\"reset\", \"reset\"]\n").unwrap_err();
        assert!(
            matches!(&twice, Error::Duplicate { field } if field == "notifications.webhook.kinds[1]")
        );
        assert_eq!(
            field_of(&hub("min_severity = \"loud\"\n").unwrap_err()),
            "notifications.webhook.min_severity"
        );
    }

    #[test]
    fn update_section_checks_name_the_field() {
        let with = |extra: &str| AgentFile::from_toml(&format!("{UPDATE}{extra}"));
        let replaced = |from: &str, to: &str| AgentFile::from_toml(&UPDATE.replace(from, to));
        assert_eq!(
            field_of(&replaced("bw-100", "bw 100").unwrap_err()),
            "update.compatible"
        );
        assert_eq!(
            field_of(&replaced("\"bw-100\"", "\"\"").unwrap_err()),
            "update.compatible"
        );
        assert_eq!(
            field_of(&replaced("slot_b = \"/b\"", "slot_b = \"/a\"").unwrap_err()),
            "update.slot_b"
        );
        for bad in ["tftp:/x", "file:", "/boot.json", "uboot"] {
            let err = replaced("file:/boot.json", bad).unwrap_err();
            assert_eq!(field_of(&err), "update.boot", "{bad}");
            assert!(err.to_string().contains("grub:<grubenv>"), "{err}");
        }
        assert_eq!(
            field_of(&replaced("[\"/k.pem\"]", "[]").unwrap_err()),
            "update.trusted_keys"
        );
        let err = replaced("[\"/k.pem\"]", "[\"/k.pem\", \"/k.pem\"]").unwrap_err();
        assert!(matches!(&err, Error::Duplicate { field } if field == "update.trusted_keys[1]"));
        let seventeen: Vec<String> = (0..17).map(|i| format!("\"/k{i}.pem\"")).collect();
        let err = replaced("[\"/k.pem\"]", &format!("[{}]", seventeen.join(", "))).unwrap_err();
        assert!(
            matches!(&err, Error::TooManyEntries { field, max: 16, .. } if field == "update.trusted_keys")
        );
        for (threshold, ok) in [(0, false), (1, true), (2, false), (17, false)] {
            let result = with(&format!("threshold = {threshold}\n"));
            assert_eq!(result.is_ok(), ok, "threshold {threshold}: {result:?}");
            if let Err(err) = result {
                assert_eq!(field_of(&err), "update.threshold");
            }
        }
        for bad in ["c", "A", ""] {
            let err = with(&format!("booted_slot = \"{bad}\"\n")).unwrap_err();
            assert_eq!(field_of(&err), "update.booted_slot", "{bad}");
        }
        with("booted_slot = \"b\"\n").unwrap();
        let err = with("slot_c = \"/c\"\n").unwrap_err();
        assert!(
            matches!(&err, Error::UnknownField { field, .. } if field == "update.slot_c"),
            "{err:?}"
        );
        let err = AgentFile::from_toml("[update]\ncompatible = \"x\"\n").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { reason, .. } if reason.contains("slot_a")),
            "{err:?}"
        );
    }

    #[test]
    fn update_repository_urls() {
        let repo = |metadata: &str| {
            AgentFile::from_toml(&format!(
                "{UPDATE}[update.repository]\nmetadata_url = \"{metadata}\"\ntargets_url = \"http://h/t/\"\nroot_file = \"/root.json\"\n"
            ))
        };
        for good in [
            "http://updates.example.com/metadata/",
            "http://127.0.0.1:8080/m/",
            "http://[2001:db8::1]:80/",
            "file:///srv/repo/metadata/",
            "https://updates.example.com/metadata/",
            "https://127.0.0.1:8443/m/",
        ] {
            repo(good).unwrap();
        }
        for bad in [
            "https:/updates.example.com/metadata/",
            "https://u:p@h/m/",
            "http://updates.example.com/metadata",
            "http://u:p@h/m/",
            "http://h/m/?x=/",
            "file://relative/",
            "ftp://h/",
            "http://h:0/",
        ] {
            assert_eq!(
                field_of(&repo(bad).unwrap_err()),
                "update.repository.metadata_url",
                "{bad}"
            );
        }
        let ca = AgentFile::from_toml(&format!(
            "{UPDATE}[update.repository]\nmetadata_url = \"https://h/m/\"\ntargets_url = \"https://h/t/\"\nroot_file = \"/root.json\"\nca_file = \"/etc/bulwark/update-ca.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            ca.update.unwrap().repository.unwrap().ca_file,
            Some("/etc/bulwark/update-ca.pem".into())
        );
        let err = AgentFile::from_toml(&format!(
            "{UPDATE}[update.repository]\nmetadata_url = \"https://h/m/\"\ntargets_url = \"https://h/t/\"\nroot_file = \"/root.json\"\nca_file = \"\"\n"
        ))
        .unwrap_err();
        assert_eq!(field_of(&err), "update.repository.ca_file");
        let err = AgentFile::from_toml(&format!(
            "{UPDATE}[update.repository]\nmetadata_url = \"http://h/m/\"\ntargets_url = \"http://h/t/\"\n"
        ))
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { reason, .. } if reason.contains("root_file")),
            "{err:?}"
        );
    }

    #[test]
    fn https_urls() {
        for good in [
            "https://hooks.example.com/bulwark",
            "https://hooks.example.com",
            "https://hooks.example.com:8443/a/b-c_d.e~f%20",
            "https://192.0.2.1/x",
            "https://[2001:db8::1]/x",
            "https://[2001:db8::1]:8443/x",
        ] {
            assert!(is_https_url(good), "{good}");
        }
        let long = format!("https://h/{}", "a".repeat(2040));
        for bad in [
            "http://hooks.example.com/",
            "https://",
            "https://user:pw@h/",
            "https://h/x?q=1",
            "https://h/x#f",
            "https://h/a b",
            "https://h:0/",
            "https://h:99999/",
            "https://[nope]/",
            "HTTPS://h/",
            long.as_str(),
        ] {
            assert!(!is_https_url(bad), "{bad}");
        }
        assert!(is_https_url(&format!("https://h/{}", "a".repeat(2038))));
    }

    #[test]
    fn mqtt_topics() {
        assert!(is_mqtt_topic("bulwark/dev-1/events"));
        assert!(is_mqtt_topic(&"a".repeat(256)));
        for bad in ["", "a/+/b", "a/#", "a\0b", "$SYS/x"] {
            assert!(!is_mqtt_topic(bad), "{bad:?}");
        }
        assert!(!is_mqtt_topic(&"a".repeat(257)));
    }
}
