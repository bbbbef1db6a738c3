//! `bulwark assess`: the black-box conformance assessor against a device
//! on the network (the checks live in the `assess` crate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

/// `bulwark assess --url URL --root root.pem ...`
#[derive(Debug, Args)]
pub(crate) struct AssessArgs {
    /// The device's management API: https://host:port.
    #[arg(long)]
    url: String,
    /// The manufacturer root certificate (PEM) the device certificate must
    /// chain to.
    #[arg(long)]
    root: PathBuf,
    /// The device identifier its certificate must carry (urn:uuid:ID).
    #[arg(long)]
    device_id: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the report as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Longest wait for one request, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// The openssl program for the TLS protocol and suite probes.
    #[arg(long, default_value = "openssl")]
    openssl: PathBuf,
}

/// What the assessment found, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No check failed (some may be not applicable or errors).
    NoFailure,
    /// At least one check failed.
    Failure,
}

pub(crate) fn run(args: AssessArgs) -> Result<Outcome> {
    let pem = std::fs::read(&args.root)
        .with_context(|| format!("reading the manufacturer root {}", args.root.display()))?;
    let roots = identity::x509::certs_from_pem("manufacturer root", &pem)
        .with_context(|| format!("reading the manufacturer root {}", args.root.display()))?;
    let target = assess::Target {
        url: args.url,
        manufacturer_root: roots,
        device_id: args.device_id,
    };
    let options = assess::Options::default()
        .with_openssl(args.openssl)
        .with_request_timeout(Duration::from_secs(args.timeout_secs.max(1)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(assess::run(&target, &options))
        .with_context(|| format!("assessing {}", target.url))?;
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.to_markdown())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for f in &report.findings {
        println!(
            "{:<6} {:<10} {:<20} {}",
            f.verdict.label(),
            f.clause,
            f.check,
            f.title
        );
    }
    println!(
        "{} pass, {} fail, {} not applicable, {} error",
        report.count(assess::Verdict::Pass),
        report.count(assess::Verdict::Fail),
        report.count(assess::Verdict::NotApplicable),
        report.count(assess::Verdict::Error),
    );
    Ok(if report.has_failures() {
        Outcome::Failure
    } else {
        Outcome::NoFailure
    })
}
