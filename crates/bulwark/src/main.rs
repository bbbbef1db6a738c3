//! `bulwark`: one multi-call binary over the Bulwark libraries.
//!
//! This file only parses the command line, sets up logging and process
//! hardening, and maps errors to exit codes; each subcommand lives in its
//! own module and the work itself in the library crates.

mod api_client;
mod cmd;
mod keystore;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Bulwark: ISO/IEC 27402 baseline security for Linux IoT devices.
///
/// With no subcommand, runs the device agent on embedded defaults: a
/// development unit in ./bulwark-state with a software keystore, the
/// management API on https://127.0.0.1:8443.
#[derive(Debug, Parser)]
#[command(name = "bulwark", version, about, long_about)]
struct Cli {
    /// State directory of this device.
    #[arg(
        long,
        global = true,
        env = "BULWARK_STATE_DIR",
        default_value = "./bulwark-state"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The device agent: HTTPS management API (the default).
    Agent(cmd::agent::AgentArgs),
    /// Provision (once) and show a development unit on embedded defaults.
    Dev,
    /// Manufacturer certificate authority.
    #[command(subcommand)]
    Ca(cmd::ca::CaCommand),
    /// Give one unit its identity: device key, certificate, setup secret.
    Provision(cmd::provision::ProvisionArgs),
    /// This device's identity.
    #[command(subcommand)]
    Identity(cmd::identity::IdentityCommand),
    /// Keys in a keystore (public information only).
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Maker-side ISO/IEC 27402 clause 5.1 documents from a product file.
    #[cfg(feature = "maker")]
    #[command(subcommand)]
    Comply(cmd::comply::ComplyCommand),
    /// Secure updates: this device's status, check, install with
    /// progress, restart and policy through its agent; the publisher's
    /// repository (maker builds).
    #[command(subcommand)]
    Update(cmd::update::UpdateCommand),
    /// Black-box ISO/IEC 27402 conformance assessment of a device over the
    /// network. Exit code 0: no check failed; 1: a check failed; 2: the
    /// device could not be assessed.
    #[cfg(feature = "maker")]
    Assess(cmd::assess::AssessArgs),
    /// The inline MQTT / Modbus TCP / CoAP gateway for device segments.
    #[cfg(feature = "gateway")]
    #[command(subcommand)]
    Gateway(cmd::gateway::GatewayCommand),
    /// The tamper-evident event log.
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
}

fn main() -> ExitCode {
    harden_process();
    init_logging();
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or(Command::Agent(cmd::agent::AgentArgs::default()));
    let result = match command {
        Command::Agent(args) => cmd::agent::run(&cli.state_dir, args),
        Command::Dev => cmd::dev::run(&cli.state_dir),
        Command::Ca(c) => cmd::ca::run(c),
        Command::Provision(args) => cmd::provision::run(&cli.state_dir, args),
        Command::Identity(c) => cmd::identity::run(&cli.state_dir, c),
        Command::Keys(c) => cmd::keys::run(&cli.state_dir, c),
        #[cfg(feature = "maker")]
        Command::Comply(c) => cmd::comply::run(c),
        Command::Log(c) => cmd::log::run(&cli.state_dir, c),
        #[cfg(feature = "gateway")]
        Command::Gateway(c) => cmd::gateway::run(&cli.state_dir, c),
        Command::Update(c) => cmd::update::run(&cli.state_dir, c),
        #[cfg(feature = "maker")]
        Command::Assess(args) => {
            return match cmd::assess::run(args) {
                Ok(cmd::assess::Outcome::NoFailure) => ExitCode::SUCCESS,
                Ok(cmd::assess::Outcome::Failure) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keys and setup secrets pass through this process's memory: never let
/// it be written to a core dump or read through ptrace by other users.
fn harden_process() {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let no_core = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, no_core) {
        eprintln!("warning: could not disable core dumps: {e}");
    }
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        eprintln!("warning: could not mark the process non-dumpable: {e}");
    }
}

/// Structured logs: to journald (with fields) when systemd started us and
/// connected our stderr to the journal, else to stderr.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_env("BULWARK_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}
