//! `bulwark log`: verify and export the tamper-evident event log.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;
use store::eventlog::{self, Finding};

use super::device::Device;

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Check the hash chain and signed checkpoints; report every change.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every event as a JSON line to standard output.
    Export,
}

pub(crate) fn run(state_dir: &Path, command: LogCommand) -> Result<()> {
    let device = Device::open(state_dir)?;
    let store = device.store()?;
    match command {
        LogCommand::Verify { json } => {
            let key = device.key()?;
            let report = eventlog::verify(&device.store_dir(), key.public_key(), Some(&store))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} records, {} signed checkpoints, {} records covered by the last one",
                    report.records, report.checkpoints, report.protected_records
                );
                for finding in &report.findings {
                    println!("{}", describe(finding));
                }
            }
            if !report.is_intact() {
                bail!(
                    "the event log was tampered with or damaged ({} findings)",
                    report.findings.len()
                );
            }
            println!("event log intact");
            Ok(())
        }
        LogCommand::Export => {
            let mut out = std::io::stdout().lock();
            for event in eventlog::export(&device.store_dir(), &store)? {
                writeln!(out, "{}", serde_json::to_string(&event)?)?;
            }
            Ok(())
        }
    }
}

fn describe(finding: &Finding) -> String {
    match finding {
        Finding::Modified { record, offset } => {
            format!("record {record} was modified (byte offset {offset})")
        }
        Finding::Deleted {
            first,
            last,
            offset,
        } => format!("records {first} to {last} were deleted (byte offset {offset})"),
        Finding::Reordered {
            record,
            expected,
            offset,
        } => format!(
            "record {record} stands where record {expected} should (reordered, byte offset {offset})"
        ),
        Finding::Truncated {
            offset,
            unprotected_records,
        } => format!(
            "the log is truncated or damaged from byte offset {offset}; {unprotected_records} records after the last signed checkpoint are unprotected"
        ),
        Finding::BadSignature { count, offset } => format!(
            "the checkpoint over {count} records has a bad signature (byte offset {offset})"
        ),
        Finding::CheckpointMismatch {
            count,
            found,
            offset,
        } => format!(
            "the checkpoint at byte offset {offset} covers {count} records but {found} precede it"
        ),
        Finding::RolledBack {
            expected_at_least,
            found,
        } => format!(
            "the log holds {found} records but was signed at {expected_at_least}: replaced by an older copy or truncated"
        ),
    }
}
