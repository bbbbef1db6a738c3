//! Health checks that decide whether a trial boot is committed: a release
//! whose image verifies can still be broken (a service that no longer
//! starts), and only the device can tell.
//!
//! A check is a program run with no shell and no standard input; exit
//! status 0 within its timeout means healthy. A systemd unit is checked
//! with `systemctl is-active --quiet <unit>`, which needs no code of its
//! own here.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a failing check's standard error is kept as evidence.
const EVIDENCE_BYTES: u64 = 2048;

/// How often a running check is polled.
const POLL: Duration = Duration::from_millis(20);

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Name used in findings and the event log.
    pub name: String,
    /// The program (an absolute path: no `PATH` lookup).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long it may run before it counts as failed (and is killed).
    pub timeout: Duration,
}

/// Runs `checks` in order and stops at the first failure, whose
/// description (name, exit status or timeout, the start of its standard
/// error) is the error.
pub fn run_all(checks: &[HealthCheck]) -> Result<(), String> {
    checks.iter().try_for_each(run)
}

/// Runs one check.
pub fn run(check: &HealthCheck) -> Result<(), String> {
    let mut child = Command::new(&check.program)
        .args(&check.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too
        // (a shell's children would otherwise hold the pipe open).
        .process_group(0)
        .spawn()
        .map_err(|e| {
            format!(
                "health check `{}`: cannot start {}: {e}",
                check.name,
                check.program.display()
            )
        })?;
    // Read standard error on the side so a chatty check cannot block on a
    // full pipe; keep only its start.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(EVIDENCE_BYTES).read_to_end(&mut kept);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            kept
        })
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= check.timeout => {
                kill_group(&mut child);
                break None;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("health check `{}`: waiting: {e}", check.name));
            }
        }
    };
    let evidence = stderr
        .and_then(|t| t.join().ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "health check `{}` failed ({s}){evidence}",
            check.name
        )),
        None => Err(format!(
            "health check `{}` did not finish within {} s{evidence}",
            check.name,
            check.timeout.as_secs_f32()
        )),
    }
}

/// Kills the check and everything in its process group, then reaps it.
fn kill_group(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            name: name.to_owned(),
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".to_owned(), script.to_owned()],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn exit_zero_is_healthy_and_stops_at_the_first_failure() {
        run_all(&[sh("a", "exit 0", 5000), sh("b", "true", 5000)]).unwrap();
        let marker = tempfile::NamedTempFile::new().unwrap();
        let after = format!("rm {}", marker.path().display());
        let e = run_all(&[
            sh("db", "echo 'database refused' >&2; exit 3", 5000),
            sh("never", &after, 5000),
        ])
        .unwrap_err();
        assert!(e.contains("`db` failed"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("database refused"), "{e}");
        assert!(marker.path().exists(), "the check after a failure ran");
    }

    #[test]
    fn a_check_past_its_timeout_is_killed_and_fails() {
        let started = Instant::now();
        let e = run(&sh("slow", "sleep 30", 300)).unwrap_err();
        assert!(e.contains("did not finish within 0.3 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_names_it() {
        let e = run(&HealthCheck {
            name: "x".into(),
            program: PathBuf::from("/nonexistent/check"),
            args: vec![],
            timeout: Duration::from_secs(1),
        })
        .unwrap_err();
        assert!(e.contains("/nonexistent/check"), "{e}");
    }

    #[test]
    fn evidence_is_bounded() {
        let e = run(&sh(
            "loud",
            "head -c 1000000 /dev/zero | tr '\\0' x >&2; exit 1",
            10_000,
        ))
        .unwrap_err();
        assert!(e.len() < EVIDENCE_BYTES as usize + 200, "{}", e.len());
    }
}
