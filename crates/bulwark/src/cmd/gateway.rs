//! `bulwark gateway`: the inline protocol gateway in front of MQTT, Modbus
//! TCP and CoAP services (issue 6).
//!
//! The gateway is itself a provisioned unit: its TLS certificate and key
//! are the identity in the state directory (`bulwark provision`, or a
//! development unit made on first run like the agent's). The boot file
//! ([`gateway::GatewayFile`]) says where to listen; the policy file says
//! what each device may do and is reloaded on SIGHUP without dropping
//! connections that are still allowed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gateway::{GatewayFile, Policy, PolicyHandle};
use identity::tls::TlsIdentity;

use super::device::Device;
use crate::signals::{Received, Signals};

/// `bulwark gateway ...`
#[derive(Debug, Subcommand)]
pub(crate) enum GatewayCommand {
    /// Run the gateway until SIGTERM; SIGHUP reloads the policy.
    Run(RunArgs),
    /// Validate a boot file and the policy it names, then exit: run it
    /// before sending SIGHUP.
    Check(RunArgs),
}

/// Arguments naming the boot file.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Boot file (TOML): listeners, upstreams, device CAs, policy path.
    #[arg(long, short = 'c')]
    config: PathBuf,
}

pub(crate) fn run(state_dir: &Path, command: GatewayCommand) -> Result<()> {
    match command {
        GatewayCommand::Check(args) => {
            let (file, policy) = load(&args.config)?;
            println!("{}: valid", args.config.display());
            println!(
                "{}: valid; {} MQTT, {} Modbus and {} CoAP devices",
                file.policy.display(),
                policy.devices().len(),
                policy.modbus.devices().len(),
                policy.coap.devices().len(),
            );
            Ok(())
        }
        GatewayCommand::Run(args) => {
            let (file, policy) = load(&args.config)?;
            let device = Device::open(state_dir).with_context(|| {
                format!(
                    "opening the gateway's identity in {} (provision it with `bulwark provision` or `bulwark dev`)",
                    state_dir.display()
                )
            })?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(device, file, policy))
        }
    }
}

fn load(config: &Path) -> Result<(GatewayFile, Policy)> {
    let file = GatewayFile::load(config)?;
    let policy = Policy::load(&file.policy)?;
    Ok((file, policy))
}

/// Where the gateway keeps its quarantine set, below the state directory.
const QUARANTINE_DIR: &str = "gateway";

async fn serve(device: Device, file: GatewayFile, policy: Policy) -> Result<()> {
    let policy = Arc::new(PolicyHandle::new(policy));
    // Shared by the proxies and the admin endpoint.
    let metrics = Arc::new(gateway::Metrics::default());
    let quarantine_dir = device.state_dir.join(QUARANTINE_DIR);
    let quarantine = Arc::new(gateway::Quarantine::open(&quarantine_dir).with_context(|| {
        format!(
            "opening the quarantine state in {}",
            quarantine_dir.display()
        )
    })?);
    // Events go to the tamper-evident log (5.2.5.2.2) and to the journal.
    let log = Arc::new(
        store::eventlog::EventLog::open(&device.store_dir(), device.store()?, device.key()?)
            .context("opening the event log")?,
    );
    let log_audit = Arc::new(
        gateway::EventLogAudit::start(log, gateway::event_log::DEFAULT_CAPACITY, metrics.clone())
            .context("starting the event log writer")?,
    );
    let audit: Arc<dyn gateway::Audit> = Arc::new(gateway::audit::Tee(
        log_audit.clone(),
        Arc::new(gateway::TracingAudit),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(mqtt) = &file.mqtt {
        let proxy = gateway::MqttProxy::new(gateway::ProxyConfig {
            tls: Arc::new(device_tls(&device, &mqtt.device_anchors)?),
            upstream: mqtt.upstream,
            policy: policy.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
        });
        let listener = bind("MQTT (TLS)", mqtt.listen, mqtt.upstream).await?;
        tasks.spawn(proxy.serve(listener));
    }
    if let Some(modbus) = &file.modbus {
        let proxy = gateway::ModbusProxy::new(gateway::ModbusProxyConfig {
            upstream: modbus.upstream,
            policy: policy.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
        });
        let listener = bind("Modbus TCP", modbus.listen, modbus.upstream).await?;
        tasks.spawn(proxy.serve(listener));
    }
    if let Some(coap) = &file.coap {
        let proxy = gateway::CoapProxy::new(gateway::CoapProxyConfig {
            upstream: coap.upstream,
            policy: policy.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
        });
        let socket = tokio::net::UdpSocket::bind(coap.listen)
            .await
            .with_context(|| format!("binding the CoAP socket {}", coap.listen))?;
        println!(
            "CoAP (UDP): devices on {}, upstream {}",
            socket.local_addr()?,
            coap.upstream
        );
        tasks.spawn(proxy.serve(socket));
    }
    if let Some(admin) = &file.admin {
        let listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("binding the admin listener {}", admin.listen))?;
        println!(
            "admin: http://{}/metrics and /quarantine (no authentication: keep it on loopback)",
            listener.local_addr()?
        );
        let admin = Arc::new(gateway::admin::Admin {
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
            audit: audit.clone(),
        });
        tasks.spawn(admin.serve(listener));
    }
    let signals = Signals::listen(true)?;
    println!("policy {}: reload with SIGHUP", file.policy.display());
    println!("stop with Ctrl-C or SIGTERM");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let stopped = wait_and_reload(signals, &file.policy, &policy).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tasks.shutdown().await;
    drop(audit);
    // Every proxy task is gone: this is the last reference, and closing it
    // writes what is queued and a final checkpoint.
    match Arc::try_unwrap(log_audit) {
        Ok(log_audit) => {
            tokio::task::spawn_blocking(move || log_audit.close())
                .await
                .context("closing the event log")?;
        }
        Err(_) => {
            tracing::warn!("event log writer still in use at shutdown; it finishes on its own")
        }
    }
    println!("Bulwark gateway stopped");
    stopped
}

/// Device-side TLS: the gateway's own identity, and client certificates
/// from the CAs in `anchor_files` (mutual TLS).
fn device_tls(device: &Device, anchor_files: &[PathBuf]) -> Result<rustls::ServerConfig> {
    let mut anchors = Vec::new();
    for path in anchor_files {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = identity::x509::certs_from_pem("device CA", &pem)
            .with_context(|| format!("parsing certificates in {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
        anchors.extend(certs);
    }
    let tls_identity = TlsIdentity {
        chain: std::iter::once(device.identity.certificate.clone())
            .chain(device.identity.chain.iter().cloned())
            .collect(),
        key: device.key()?,
    };
    identity::tls::server_config(&tls_identity, &anchors)
        .context("building the device-side TLS configuration")
}

/// Binds a TCP proxy's device-side listener and says where it forwards.
async fn bind(
    protocol: &str,
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the {protocol} listener {listen}"))?;
    println!(
        "{protocol}: devices on {}, upstream {upstream}",
        listener.local_addr()?
    );
    Ok(listener)
}

/// Reloads the policy on every SIGHUP until SIGTERM or Ctrl-C. A policy
/// that does not validate is refused and the one in force stays.
async fn wait_and_reload(mut signals: Signals, path: &Path, policy: &PolicyHandle) -> Result<()> {
    while signals.next().await == Received::Reload {
        match policy.reload(path) {
            Ok(()) => {
                tracing::warn!(policy = %path.display(), "policy reloaded");
                println!("policy {} reloaded", path.display());
            }
            Err(e) => {
                tracing::error!(policy = %path.display(), error = %e, "policy reload refused; the previous policy stays in force");
                eprintln!("policy reload refused, previous policy stays in force: {e}");
            }
        }
    }
    Ok(())
}
