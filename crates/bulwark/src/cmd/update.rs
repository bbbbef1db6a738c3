//! `bulwark update ...`: secure updates from the command line.
//!
//! On the device, `status`, `check`, `install`, `restart` and `policy`
//! are clients of the running agent's management API
//! ([`crate::api_client`]): the agent is the one writer of slots and
//! settings, and the same roles, password re-entry and audit log apply as
//! to any other client (5.2.7.1.2). `install` starts the install
//! asynchronously and draws its progress. The publisher's `repo`
//! commands are maker tools ([`super::update_repo`]).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::api_client::{ApiClient, ConnectArgs};

/// How often `install` asks for progress.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// `bulwark update ...`
#[derive(Debug, Subcommand)]
pub(crate) enum UpdateCommand {
    /// This device's update status: boot state, the release in each slot,
    /// the security floor, fail-safe mode, the last install.
    Status(Common),
    /// Ask the repository for a newer release now; the agent installs it
    /// only when the update policy would on its own.
    Check(Common),
    /// Install a release into the inactive slot, with progress. This does
    /// not interrupt the device: the release starts at the next restart
    /// (`bulwark update restart`, or the automatic restart the policy
    /// announces). Needs the owner's password.
    Install(InstallArgs),
    /// Restart the device into the installed release now (the confirmed
    /// restart of `restart = confirm`). Needs the owner's password.
    Restart(Common),
    /// Show the update policy (settings `updates`), or change it with
    /// --set.
    Policy(PolicyArgs),
    /// The publisher's update repository: keys, releases, signed metadata.
    #[cfg(feature = "maker")]
    #[command(subcommand)]
    Repo(super::update_repo::RepoCommand),
}

/// Options every device-side command takes.
#[derive(Debug, Args)]
pub(crate) struct Common {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Print the agent's JSON answer instead of a summary.
    #[arg(long)]
    json: bool,
}

/// `bulwark update install`
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The release's name in the repository.
    release: String,
    /// Return once the install started instead of following it.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    common: Common,
}

/// `bulwark update policy`
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Change one `updates` setting, e.g. `install=manual`,
    /// `restart=confirm`, `check_interval_secs=7200`, or `window={...}`
    /// (JSON); repeatable. The value is read as JSON, else as a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Acknowledge turning automatic updates off (`automatic=false` is a
    /// weakening the agent refuses without it).
    #[arg(long)]
    acknowledge_weakening: bool,
    #[command(flatten)]
    common: Common,
}

pub(crate) fn run(state_dir: &Path, command: UpdateCommand) -> Result<()> {
    #[cfg(feature = "maker")]
    if let UpdateCommand::Repo(command) = command {
        return super::update_repo::run(command);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(device_command(state_dir, command))
}

async fn device_command(state_dir: &Path, command: UpdateCommand) -> Result<()> {
    match command {
        UpdateCommand::Status(common) => {
            let mut api = ApiClient::login(state_dir, &common.connect).await?;
            let status = api
                .send(Method::GET, "/api/v1/update/status", &[], None)
                .await?
                .expect("update status", &[StatusCode::OK])?;
            print(&status, common.json, render_status)
        }
        UpdateCommand::Check(common) => {
            let mut api = ApiClient::login(state_dir, &common.connect).await?;
            let outcome = api
                .send(Method::POST, "/api/v1/update/check", &[], None)
                .await?
                .expect("update check", &[StatusCode::OK])?;
            print(&outcome, common.json, render_check)
        }
        UpdateCommand::Install(args) => install(state_dir, args).await,
        UpdateCommand::Restart(common) => {
            let password = common.connect.password()?;
            let mut api = ApiClient::login_with(state_dir, &common.connect, &password).await?;
            let body = password_body(None, &password)?;
            api.send(Method::POST, "/api/v1/update/restart", &[], Some(&body))
                .await?
                .expect("restart", &[StatusCode::ACCEPTED])?;
            println!("the device restarts into the installed release now");
            Ok(())
        }
        UpdateCommand::Policy(args) => policy(state_dir, args).await,
        #[cfg(feature = "maker")]
        UpdateCommand::Repo(_) => unreachable!("handled before the runtime starts"),
    }
}

/// `{"release"?, "current_password"}`, kept in zeroized memory.
fn password_body(release: Option<&str>, password: &str) -> Result<Zeroizing<Vec<u8>>> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        release: Option<&'a str>,
        current_password: &'a str,
    }
    Ok(Zeroizing::new(serde_json::to_vec(&Body {
        release,
        current_password: password,
    })?))
}

async fn install(state_dir: &Path, args: InstallArgs) -> Result<()> {
    let connect = &args.common.connect;
    let password = connect.password()?;
    let mut api = ApiClient::login_with(state_dir, connect, &password).await?;
    let body = password_body(Some(&args.release), &password)?;
    drop(password);
    let reply = api
        .send(
            Method::POST,
            "/api/v1/update/install",
            &[("prefer", "respond-async")],
            Some(&body),
        )
        .await?;
    drop(body);
    // An agent that does not honour the preference answers when done.
    if reply.status == StatusCode::OK {
        let summary = reply.expect("install", &[StatusCode::OK])?;
        return print(&summary, args.common.json, render_summary);
    }
    let started = reply.expect(
        &format!("installing {}", args.release),
        &[StatusCode::ACCEPTED],
    )?;
    let started_unix = started
        .get("started_unix")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if args.no_wait {
        return print(&started, args.common.json, |_| {
            format!(
                "installing {} on the device; follow it with `bulwark update status`",
                args.release
            )
        });
    }
    let summary = follow(&mut api, &args.release, started_unix, started).await?;
    print(&summary, args.common.json, render_summary)?;
    if summary.get("outcome").and_then(Value::as_str) == Some("installed") {
        Ok(())
    } else {
        let message = summary
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        Err(anyhow!(
            "release {} was not installed: {message}",
            args.release
        ))
    }
}

/// Follows the install's progress from `first` (the answer that started
/// it), polling until it ends, with a progress bar on a terminal (phase
/// changes as lines otherwise); returns its summary.
async fn follow(
    api: &mut ApiClient,
    release: &str,
    started_unix: i64,
    first: Value,
) -> Result<Value> {
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(0);
    if terminal {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:15} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .context("progress bar template")?
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_phase = String::new();
    let mut next = Some(first);
    loop {
        let view = match next.take() {
            Some(view) => view,
            None => {
                tokio::time::sleep(POLL_INTERVAL).await;
                api.send(Method::GET, "/api/v1/update/progress", &[], None)
                    .await?
                    .expect("install progress", &[StatusCode::OK])?
            }
        };
        let installing = view.get("installing").and_then(Value::as_bool) == Some(true);
        let ours = view.get("release").and_then(Value::as_str) == Some(release);
        if installing && ours {
            let progress = view.get("progress").cloned().unwrap_or_default();
            let number = |key: &str| progress.get(key).and_then(Value::as_u64).unwrap_or(0);
            let phase = progress
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("preparing")
                .to_owned();
            bar.set_length(number("bytes_total"));
            bar.set_position(if phase == "verifying_slot" {
                number("verified_bytes")
            } else {
                number("bytes_done")
            });
            if phase != last_phase {
                bar.set_message(phase.replace('_', " "));
                if !terminal {
                    eprintln!("{release}: {}", phase.replace('_', " "));
                }
                last_phase = phase;
            }
        } else {
            let last = view.get("last_install").cloned().unwrap_or_default();
            let finished = last.get("finished_unix").and_then(Value::as_i64);
            if last.get("release").and_then(Value::as_str) == Some(release)
                && finished.is_some_and(|f| f >= started_unix)
            {
                bar.finish_and_clear();
                return Ok(last);
            }
            bar.abandon();
            bail!("the install of {release} is no longer running and left no outcome");
        }
    }
}

async fn policy(state_dir: &Path, args: PolicyArgs) -> Result<()> {
    let mut api = ApiClient::login(state_dir, &args.common.connect).await?;
    let view = api
        .send(Method::GET, "/api/v1/config", &[], None)
        .await?
        .expect("reading the settings", &[StatusCode::OK])?;
    let mut settings = view
        .get("settings")
        .cloned()
        .ok_or_else(|| anyhow!("the agent's configuration has no settings"))?;
    if args.set.is_empty() {
        let shown = serde_json::json!({
            "updates": settings.get("updates"),
            "time": settings.get("time"),
        });
        return print(&shown, args.common.json, render_policy);
    }
    let updates = settings
        .get_mut("updates")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("the agent's settings have no updates section"))?;
    for assignment in &args.set {
        apply_assignment(updates, assignment)?;
    }
    if args.acknowledge_weakening
        && let Some(list) = settings
            .get_mut("danger_acknowledged")
            .and_then(Value::as_array_mut)
        && !list.iter().any(|v| v == "updates.automatic")
    {
        list.push(Value::from("updates.automatic"));
    }
    let etag = view
        .get("etag")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the agent's configuration has no etag"))?
        .to_owned();
    let body = serde_json::to_vec(&settings)?;
    let changed = api
        .send(
            Method::PUT,
            "/api/v1/config",
            &[("if-match", &etag)],
            Some(&body),
        )
        .await?
        .expect("changing the update policy", &[StatusCode::OK])?;
    print(&changed, args.common.json, |c| {
        format!(
            "update policy changed (settings version {})",
            c.get("version").and_then(Value::as_u64).unwrap_or_default()
        )
    })
}

/// Applies `key=value` to the `updates` settings: only keys they have.
fn apply_assignment(updates: &mut Map<String, Value>, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {assignment}: expected KEY=VALUE"))?;
    let key = key.trim().trim_start_matches("updates.");
    if !updates.contains_key(key) {
        let known: Vec<&str> = updates.keys().map(String::as_str).collect();
        bail!(
            "--set {assignment}: updates has no setting {key:?}; it has {}",
            known.join(", ")
        );
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
    updates.insert(key.to_owned(), value);
    Ok(())
}

fn print(value: &Value, json: bool, render: impl Fn(&Value) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", render(value));
    }
    Ok(())
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn yes(v: &Value, key: &str) -> &'static str {
    if v.get(key).and_then(Value::as_bool) == Some(true) {
        "yes"
    } else {
        "no"
    }
}

fn render_release(release: &Value) -> String {
    if release.is_null() {
        return "(no verified release)".into();
    }
    format!(
        "{} (version code {}, security version {}, {} bytes)",
        text(release, "version"),
        release["version_code"],
        release["security_version"],
        release["image_size"],
    )
}

fn render_status(s: &Value) -> String {
    if s.get("configured").and_then(Value::as_bool) != Some(true) {
        return "updates are not configured on this device ([update] in the boot file)".into();
    }
    let mut out = vec![format!(
        "repository configured: {}   fail-safe: {}",
        yes(s, "repository_configured"),
        yes(s, "fail_safe")
    )];
    if let Some(finding) = s.get("integrity_failure").and_then(Value::as_str) {
        out.push(format!("integrity failure: {finding}"));
    }
    let boot = &s["boot"];
    let trial = match boot.get("trial") {
        Some(t) if !t.is_null() => format!(
            "slot {} ({} attempts left)",
            text(t, "slot"),
            t["attempts_left"]
        ),
        _ => "none".into(),
    };
    out.push(format!(
        "boot: active {}, booted {}, trial {trial}",
        text(boot, "active"),
        text(boot, "booted")
    ));
    for slot in s["slots"].as_array().into_iter().flatten() {
        let mut line = format!(
            "slot {}: {}",
            text(slot, "slot"),
            render_release(&slot["release"])
        );
        if let Some(problem) = slot.get("record_problem").and_then(Value::as_str) {
            line.push_str(&format!(" — record does not verify: {problem}"));
        }
        out.push(line);
    }
    out.push(format!("security floor: {}", s["security_floor"]));
    out.push(format!(
        "restart pending: {} (agent can restart: {})",
        yes(s, "restart_pending"),
        yes(s, "restart_configured")
    ));
    if let Some(last) = s.get("last_install").filter(|l| !l.is_null()) {
        out.push(format!("last install: {}", render_summary(last)));
    }
    out.join("\n")
}

fn render_summary(summary: &Value) -> String {
    match text(summary, "outcome") {
        "installed" => format!(
            "release {} (version {}) installed into slot {}: {} bytes downloaded, {} reused from the active slot, {} ms; it starts at the next restart",
            text(summary, "release"),
            text(summary, "version"),
            text(summary, "slot"),
            summary["downloaded_bytes"],
            summary["reused_bytes"],
            summary["duration_ms"],
        ),
        _ => format!(
            "release {} not installed: {}",
            text(summary, "release"),
            text(summary, "message")
        ),
    }
}

fn render_check(outcome: &Value) -> String {
    let newest = &outcome["newest"];
    let mut out = vec![if newest.is_null() {
        "no release in the repository verifies for this device".to_owned()
    } else {
        format!(
            "newest release: {} = {}; installable: {}",
            text(newest, "release"),
            render_release(newest),
            yes(outcome, "available")
        )
    }];
    out.push(format!(
        "running version code: {}",
        outcome["installed_version_code"]
    ));
    if let Some(install) = outcome.get("automatic_install").filter(|i| !i.is_null()) {
        out.push(format!(
            "installed by the update policy: {}",
            render_summary(install)
        ));
    }
    out.join("\n")
}

fn render_policy(policy: &Value) -> String {
    let mut out = Vec::new();
    if let Some(updates) = policy["updates"].as_object() {
        for (key, value) in updates {
            out.push(format!("{key} = {value}"));
        }
    }
    out.push(format!(
        "(maintenance windows are read in time zone {})",
        policy["time"]["timezone"]
    ));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_change_only_known_update_settings() {
        let mut updates = serde_json::json!({
            "automatic": true, "install": "automatic", "check_interval_secs": 86400, "window": null
        })
        .as_object()
        .cloned()
        .unwrap();
        apply_assignment(&mut updates, "install=manual").unwrap();
        apply_assignment(&mut updates, "updates.automatic=false").unwrap();
        apply_assignment(&mut updates, "check_interval_secs=7200").unwrap();
        apply_assignment(&mut updates, r#"window={"days":["sat"]}"#).unwrap();
        assert_eq!(updates["install"], "manual");
        assert_eq!(updates["automatic"], false);
        assert_eq!(updates["check_interval_secs"], 7200);
        assert_eq!(updates["window"]["days"][0], "sat");
        let unknown = apply_assignment(&mut updates, "instal=manual").unwrap_err();
        assert!(unknown.to_string().contains("\"instal\""), "{unknown}");
        assert!(apply_assignment(&mut updates, "install").is_err());
    }
}
