//! `bulwark agent`: the device daemon.
//!
//! With no configuration file it runs on embedded defaults: state in
//! `./bulwark-state` (a development unit is provisioned on first run, its
//! setup secret printed once), the API on https://127.0.0.1:8443. On a
//! device, systemd starts it with `--config /etc/bulwark/agent.toml`
//! (packaging/bulwark-agent.service) and gets readiness and watchdog
//! pings through `sd_notify`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::device::Device;
use crate::signals::Signals;

/// Arguments of `bulwark agent`.
#[derive(Debug, Default, Args)]
pub(crate) struct AgentArgs {
    /// Boot configuration (TOML); without it, embedded defaults and a
    /// development unit in the state directory.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

pub(crate) fn run(state_dir: &Path, args: AgentArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            agent_config::AgentFile::from_toml(&text)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => {
            let file = agent_config::AgentFile {
                state_dir: state_dir.to_path_buf(),
                ..Default::default()
            };
            if identity::provision::load(state_dir).is_err() {
                super::dev::run(state_dir)?;
                println!();
            }
            file
        }
    };
    let device = Device::open(&file.state_dir)
        .with_context(|| format!("opening the device in {}", file.state_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(device, file))
}

async fn serve(device: Device, file: agent_config::AgentFile) -> Result<()> {
    let development = device.identity.record.development;
    // Only the update engine uses the counter: without `[update]` the TPM
    // is left as it is.
    let (floor_counter, measurement) = match &file.update {
        Some(update) => (
            device.spec.floor_counter()?,
            device.spec.measurement(update.measure_pcr)?,
        ),
        None => (None, None),
    };
    let parts = agent::AgentParts {
        file,
        identity: device.identity,
        keystore: device.keystore,
        hash_params: access::HashParams::default(),
        floor_counter,
        measurement,
    };
    let running = agent::Agent::start(parts).await?;
    let mut signals = Signals::listen(false)?;
    match running.local_addr(agent::MANAGEMENT_API).await {
        Some(addr) => {
            println!("Bulwark agent: management API on https://{addr}/api/v1/");
            println!("  API document: https://{addr}/api/v1/openapi.json");
            println!(
                "  a new device has no account: claim it with POST /api/v1/setup/claim and the setup secret from its label"
            );
        }
        None => println!("Bulwark agent: management API disabled (see /api/v1/interfaces)"),
    }
    if development {
        println!("  DEVELOPMENT UNIT: development CA and software keys, not for production");
    }
    println!("  stop with Ctrl-C or SIGTERM");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let watchdog = tokio::spawn(watchdog());
    signals.next().await;
    watchdog.abort();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    running.shutdown().await;
    println!("Bulwark agent stopped");
    Ok(())
}

/// Pings systemd's watchdog at half its interval, when it has one.
async fn watchdog() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        interval.tick().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
}
