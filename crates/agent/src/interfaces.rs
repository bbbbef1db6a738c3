//! The registry of every interface the agent exposes (5.2.6.2): each
//! listener and uplink, whether it is enabled, and where it listens. A
//! disabled listener has no socket at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use store::Category;
use tokio::sync::Mutex;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::serve::{RunningListener, ServeContext, spawn_listener};

const RECORD: &str = "agent.interfaces";

/// The management API on its configured address.
pub const MANAGEMENT_API: &str = "management-api";
/// A second HTTPS listener for on-site service (e.g. on a USB or
/// maintenance link); off by default.
pub const MAINTENANCE_API: &str = "maintenance-api";

/// What kind of interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceKind {
    /// Accepts connections.
    Listener,
}

/// One interface as the API reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InterfaceInfo {
    /// Stable name.
    pub name: String,
    /// Listener or uplink.
    pub kind: InterfaceKind,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Configured address.
    pub address: String,
    /// Where it listens now, when enabled.
    pub listening_on: Option<String>,
    /// What it is for.
    pub description: String,
}

struct Entry {
    address: SocketAddr,
    description: &'static str,
    enabled: bool,
    running: Option<RunningListener>,
}

/// The registry. Changes are serialized by one lock, so two owners
/// toggling at once cannot leave a socket open that the registry calls
/// closed.
pub struct Interfaces {
    entries: Mutex<BTreeMap<&'static str, Entry>>,
    context: std::sync::Mutex<Option<Arc<ServeContext>>>,
}

impl std::fmt::Debug for Interfaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interfaces").finish_non_exhaustive()
    }
}

/// Persisted enablement: name → enabled.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted(BTreeMap<String, bool>);

impl Interfaces {
    /// The registry with the initial states from the boot file, overridden
    /// by what an owner last chose (kept in the store).
    pub(crate) fn new(
        file: &agent_config::AgentFile,
        store: &store::Store,
    ) -> anyhow::Result<Self> {
        let persisted: Persisted = match store.get(Category::Configuration, RECORD)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Persisted::default(),
        };
        let mut entries = BTreeMap::new();
        entries.insert(
            MANAGEMENT_API,
            Entry {
                address: file.api.listen,
                description: "HTTPS management API",
                enabled: persisted
                    .0
                    .get(MANAGEMENT_API)
                    .copied()
                    .unwrap_or(file.interfaces.management_api),
                running: None,
            },
        );
        if let Some(address) = file.api.maintenance_listen {
            entries.insert(
                MAINTENANCE_API,
                Entry {
                    address,
                    description: "HTTPS management API for on-site maintenance",
                    enabled: persisted
                        .0
                        .get(MAINTENANCE_API)
                        .copied()
                        .unwrap_or(file.interfaces.maintenance_api),
                    running: None,
                },
            );
        }
        Ok(Self {
            entries: Mutex::new(entries),
            context: std::sync::Mutex::new(None),
        })
    }

    /// Starts every enabled listener; in fail-safe mode only the
    /// management API, the recovery channel (even if an owner disabled
    /// it: a device that failed its integrity check must stay
    /// recoverable), and nothing else.
    pub(crate) async fn start(
        &self,
        context: Arc<ServeContext>,
        fail_safe: bool,
    ) -> anyhow::Result<()> {
        if let Ok(mut slot) = self.context.lock() {
            *slot = Some(context.clone());
        }
        let mut entries = self.entries.lock().await;
        for (name, entry) in entries.iter_mut() {
            let run = if fail_safe {
                *name == MANAGEMENT_API
            } else {
                entry.enabled
            };
            if run {
                let running = spawn_listener(context.clone(), name, entry.address)
                    .await
                    .map_err(|e| anyhow::anyhow!("{name} on {}: {e}", entry.address))?;
                entry.running = Some(running);
            }
        }
        Ok(())
    }

    /// Stops every listener (shutdown); drops the serving context.
    pub(crate) async fn stop_all(&self) {
        let mut entries = self.entries.lock().await;
        for entry in entries.values_mut() {
            if let Some(running) = entry.running.take() {
                running.stop().await;
            }
        }
        if let Ok(mut slot) = self.context.lock() {
            slot.take();
        }
    }

    /// Reloads what the store says (after a factory reset, the boot file's
    /// defaults) and applies it.
    pub(crate) async fn reload(
        &self,
        file: &agent_config::AgentFile,
        store: &store::Store,
    ) -> anyhow::Result<()> {
        let fresh = Self::new(file, store)?;
        let wanted: Vec<(&'static str, bool)> = fresh
            .entries
            .into_inner()
            .into_iter()
            .map(|(n, e)| (n, e.enabled))
            .collect();
        for (name, enabled) in wanted {
            self.apply(name, enabled).await?;
        }
        Ok(())
    }

    /// Every interface.
    pub async fn list(&self) -> Vec<InterfaceInfo> {
        let entries = self.entries.lock().await;
        entries
            .iter()
            .map(|(name, e)| InterfaceInfo {
                name: (*name).to_owned(),
                kind: InterfaceKind::Listener,
                enabled: e.enabled,
                address: e.address.to_string(),
                listening_on: e.running.as_ref().map(|r| r.addr.to_string()),
                description: e.description.to_owned(),
            })
            .collect()
    }

    /// Where a listener listens now.
    pub async fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let entries = self.entries.lock().await;
        entries.get(name)?.running.as_ref().map(|r| r.addr)
    }

    /// Enables or disables an interface and persists the choice. Refuses
    /// to disable the last enabled management listener: that would leave
    /// the device unmanageable from anywhere.
    pub(crate) async fn set(
        &self,
        name: &str,
        enabled: bool,
        store: &store::Store,
    ) -> Result<InterfaceInfo, ApiError> {
        // One lock from the check to the persisted result: two owners
        // disabling the last two listeners at once cannot both succeed.
        let mut entries = self.entries.lock().await;
        let Some(key) = entries.keys().find(|k| **k == name).copied() else {
            return Err(ApiError::NotFound(format!("no interface named {name:?}")));
        };
        let others_enabled = entries
            .iter()
            .filter(|(n, e)| **n != key && e.enabled)
            .count();
        if !enabled && others_enabled == 0 {
            return Err(ApiError::Conflict(
                "this is the last enabled management interface; enable another first".into(),
            ));
        }
        self.apply_locked(&mut entries, key, enabled)
            .await
            .map_err(|e| ApiError::internal("changing an interface", e))?;
        Self::persist_locked(&entries, store)?;
        drop(entries);
        self.list()
            .await
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ApiError::NotFound(name.to_owned()))
    }

    async fn apply(&self, name: &'static str, enabled: bool) -> anyhow::Result<()> {
        let mut entries = self.entries.lock().await;
        self.apply_locked(&mut entries, name, enabled).await
    }

    async fn apply_locked(
        &self,
        entries: &mut BTreeMap<&'static str, Entry>,
        name: &'static str,
        enabled: bool,
    ) -> anyhow::Result<()> {
        let context = self.context.lock().ok().and_then(|c| c.clone());
        let Some(entry) = entries.get_mut(name) else {
            return Ok(());
        };
        entry.enabled = enabled;
        match (enabled, entry.running.is_some(), context) {
            (true, false, Some(context)) => {
                entry.running = Some(spawn_listener(context, name, entry.address).await?);
            }
            (false, true, _) => {
                if let Some(running) = entry.running.take() {
                    // Stop in the background: the request that asked for
                    // this may be running on that very listener.
                    tokio::spawn(running.stop());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn persist_locked(
        entries: &BTreeMap<&'static str, Entry>,
        store: &store::Store,
    ) -> Result<(), ApiError> {
        let persisted = Persisted(
            entries
                .iter()
                .map(|(n, e)| ((*n).to_owned(), e.enabled))
                .collect(),
        );
        let bytes =
            serde_json::to_vec(&persisted).map_err(|e| ApiError::internal("interfaces", e))?;
        store
            .put(Category::Configuration, RECORD, &bytes)
            .map_err(|e| ApiError::internal("saving interfaces", e))
    }
}
