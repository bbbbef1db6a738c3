//! The signals a long-running command (agent, gateway) acts on, listened
//! for before it announces readiness: a stop or reload that comes right
//! after the announcement (systemd, a test) must meet a handler, not the
//! signal's default action, which terminates the process without a clean
//! shutdown.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// SIGTERM or SIGINT: shut down.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// SIGTERM and SIGINT, and SIGHUP when the command reloads on it.
#[derive(Debug)]
pub(crate) struct Signals {
    term: Signal,
    interrupt: Signal,
    hangup: Option<Signal>,
}

impl Signals {
    /// Starts listening; with `reload`, SIGHUP too (otherwise it keeps
    /// its default action).
    pub(crate) fn listen(reload: bool) -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            hangup: if reload {
                Some(signal(SignalKind::hangup()).context("listening for SIGHUP")?)
            } else {
                None
            },
        })
    }

    /// The next signal.
    pub(crate) async fn next(&mut self) -> Received {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => Received::Stop,
            _ = self.interrupt.recv() => Received::Stop,
            _ = hangup => Received::Reload,
        }
    }
}
