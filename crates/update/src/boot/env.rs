//! Boot control through a boot loader's environment: U-Boot
//! (`fw_printenv`/`fw_setenv` from libubootenv) or GRUB (`grub-editenv`).
//!
//! The variables are those of RAUC's U-Boot and GRUB integration, so its
//! boot scripts work unchanged: `BOOT_ORDER` (`"A B"`: try in this order)
//! and `BOOT_A_LEFT` / `BOOT_B_LEFT` (attempts left; the script decrements
//! before booting and skips a slot at 0). One variable of our own,
//! `BULWARK_TRY`, names a slot on trial, so the committed slot can be told
//! apart from it; boot scripts ignore it.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{BootControl, BootState, SlotName, TRY_ATTEMPTS};
use crate::error::{Error, Result};

/// Attempts a committed slot gets (RAUC's default for `BOOT_x_LEFT`).
pub const COMMITTED_ATTEMPTS: u32 = 3;

const ORDER: &str = "BOOT_ORDER";
const TRY: &str = "BULWARK_TRY";

fn left_var(slot: SlotName) -> String {
    format!("BOOT_{}_LEFT", slot.boot_name())
}

/// A boot loader environment: read all variables, set or unset several
/// in one write.
pub trait EnvStore: fmt::Debug + Send + Sync {
    /// Every variable.
    fn read(&self) -> Result<HashMap<String, String>>;
    /// Sets (`Some`) or unsets (`None`) each variable, in one write where
    /// the tool allows.
    fn write(&self, vars: &[(String, Option<String>)]) -> Result<()>;
}

/// The U-Boot environment through libubootenv's `fw_printenv` and
/// `fw_setenv` (Debian: `libubootenv-tool`).
#[derive(Debug, Clone)]
pub struct FwEnv {
    /// `fw_env.config` to use instead of `/etc/fw_env.config`.
    pub config: Option<PathBuf>,
}

/// The GRUB environment block through `grub-editenv` (Debian:
/// `grub2-common`).
#[derive(Debug, Clone)]
pub struct GrubEditenv {
    /// The environment block file, e.g. `/boot/grub/grubenv`.
    pub file: PathBuf,
}

/// Boot control over the U-Boot environment.
pub type UBootEnv = EnvBootControl<FwEnv>;

/// Boot control over the GRUB environment block.
pub type GrubEnv = EnvBootControl<GrubEditenv>;

/// [`BootControl`] over any [`EnvStore`].
#[derive(Debug)]
pub struct EnvBootControl<S> {
    store: S,
    booted: SlotName,
}

impl UBootEnv {
    /// U-Boot environment described by `config` (default
    /// `/etc/fw_env.config`); `booted` is the running slot, which the agent
    /// reads from the kernel command line (see [`booted_from_cmdline`]).
    pub fn uboot(config: Option<PathBuf>, booted: SlotName) -> Self {
        Self::new(FwEnv { config }, booted)
    }
}

impl GrubEnv {
    /// GRUB environment block `file`; `booted` as for [`UBootEnv::uboot`].
    pub fn grub(file: PathBuf, booted: SlotName) -> Self {
        Self::new(GrubEditenv { file }, booted)
    }
}

impl<S: EnvStore> EnvBootControl<S> {
    /// Boot control over `store`; the system runs from `booted`.
    pub fn new(store: S, booted: SlotName) -> Self {
        Self { store, booted }
    }

    fn order(vars: &HashMap<String, String>) -> Result<Vec<SlotName>> {
        let mut order = Vec::new();
        for word in vars
            .get(ORDER)
            .map(String::as_str)
            .unwrap_or("A B")
            .split_whitespace()
        {
            let slot: SlotName = word.parse().map_err(|_| bad_env(ORDER, word))?;
            if !order.contains(&slot) {
                order.push(slot);
            }
        }
        Ok(order)
    }

    fn left(vars: &HashMap<String, String>, slot: SlotName) -> Result<u32> {
        let var = left_var(slot);
        match vars.get(&var) {
            None => Ok(COMMITTED_ATTEMPTS),
            Some(v) => v.trim().parse().map_err(|_| bad_env(&var, v)),
        }
    }

    fn set_order(first: SlotName) -> (String, Option<String>) {
        (
            ORDER.to_owned(),
            Some(format!(
                "{} {}",
                first.boot_name(),
                first.other().boot_name()
            )),
        )
    }
}

fn bad_env(var: &str, value: &str) -> Error {
    Error::BootEnv {
        tool: "environment".to_owned(),
        reason: format!(
            "{var}={:?} is not understood",
            crate::error::truncate(value)
        ),
    }
}

impl<S: EnvStore> BootControl for EnvBootControl<S> {
    fn booted(&self) -> Result<SlotName> {
        Ok(self.booted)
    }

    fn state(&self) -> Result<BootState> {
        let vars = self.store.read()?;
        let tried = match vars.get(TRY).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => {
                let slot: SlotName = v.parse().map_err(|_| bad_env(TRY, v))?;
                Some((slot, Self::left(&vars, slot)?))
            }
        };
        let active = match tried {
            Some((slot, _)) => slot.other(),
            None => Self::order(&vars)?.first().copied().unwrap_or(SlotName::A),
        };
        Ok(BootState { active, tried })
    }

    fn mark_try_once(&self, slot: SlotName) -> Result<()> {
        self.store.write(&[
            Self::set_order(slot),
            (left_var(slot), Some(TRY_ATTEMPTS.to_string())),
            (left_var(slot.other()), Some(COMMITTED_ATTEMPTS.to_string())),
            (TRY.to_owned(), Some(slot.boot_name().to_owned())),
        ])
    }

    fn commit(&self, slot: SlotName) -> Result<()> {
        self.store.write(&[
            Self::set_order(slot),
            (left_var(slot), Some(COMMITTED_ATTEMPTS.to_string())),
            (TRY.to_owned(), None),
        ])
    }

    fn fallback(&self) -> Result<()> {
        let Some((slot, _)) = self.state()?.tried else {
            return Ok(());
        };
        self.store.write(&[
            Self::set_order(slot.other()),
            (left_var(slot), Some("0".to_owned())),
            (TRY.to_owned(), None),
        ])
    }
}

/// The slot named by `bulwark.slot=a|b` (or RAUC's `rauc.slot=A|B`) on a
/// kernel command line such as `/proc/cmdline`.
pub fn booted_from_cmdline(cmdline: &str) -> Option<SlotName> {
    cmdline.split_whitespace().find_map(|arg| {
        arg.strip_prefix("bulwark.slot=")
            .or_else(|| arg.strip_prefix("rauc.slot="))
            .and_then(|v| v.parse().ok())
    })
}

fn run(tool: &str, command: &mut Command, stdin: Option<&[u8]>) -> Result<String> {
    let failed = |reason: String| Error::BootEnv {
        tool: tool.to_owned(),
        reason,
    };
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .map_err(|e| failed(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| failed("output is not UTF-8".to_owned()))
}

fn parse_list(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl FwEnv {
    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        if let Some(config) = &self.config {
            c.arg("-c").arg(config);
        }
        c
    }
}

impl EnvStore for FwEnv {
    fn read(&self) -> Result<HashMap<String, String>> {
        run("fw_printenv", &mut self.command("fw_printenv"), None).map(|t| parse_list(&t))
    }

    fn write(&self, vars: &[(String, Option<String>)]) -> Result<()> {
        // libubootenv's script format: `NAME=value` per line, `NAME=`
        // unsets; all lines are applied in one environment write.
        let script: String = vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", v.as_deref().unwrap_or("")))
            .collect();
        let mut command = self.command("fw_setenv");
        command.args(["-s", "/dev/stdin"]);
        run("fw_setenv", &mut command, Some(script.as_bytes())).map(drop)
    }
}

impl GrubEditenv {
    fn command(&self) -> Command {
        let mut c = Command::new("grub-editenv");
        c.arg(&self.file);
        c
    }

    /// Creates an empty environment block file if there is none.
    pub fn ensure_exists(&self) -> Result<()> {
        if Path::new(&self.file).exists() {
            return Ok(());
        }
        run("grub-editenv", self.command().arg("create"), None).map(drop)
    }
}

impl EnvStore for GrubEditenv {
    fn read(&self) -> Result<HashMap<String, String>> {
        run("grub-editenv", self.command().arg("list"), None).map(|t| parse_list(&t))
    }

    fn write(&self, vars: &[(String, Option<String>)]) -> Result<()> {
        self.ensure_exists()?;
        let set: Vec<String> = vars
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        let unset: Vec<&str> = vars
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        // grub-editenv rewrites its 1 KiB block in place; sets come first
        // so that a crash between the two leaves at worst a stale
        // BULWARK_TRY, which `fallback` and `commit` clear.
        if !set.is_empty() {
            run("grub-editenv", self.command().arg("set").args(&set), None)?;
        }
        if !unset.is_empty() {
            run(
                "grub-editenv",
                self.command().arg("unset").args(&unset),
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An in-memory environment: checks the state logic without the tools
    /// (the real tools are exercised in tests/tests.rs).
    #[derive(Debug, Default)]
    struct Memory(Mutex<HashMap<String, String>>);

    impl EnvStore for Memory {
        fn read(&self) -> Result<HashMap<String, String>> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn write(&self, vars: &[(String, Option<String>)]) -> Result<()> {
            let mut env = self.0.lock().unwrap();
            for (k, v) in vars {
                match v {
                    Some(v) => env.insert(k.clone(), v.clone()),
                    None => env.remove(k),
                };
            }
            Ok(())
        }
    }

    #[test]
    fn trial_commit_and_fallback_use_raucs_variables() {
        let boot = EnvBootControl::new(Memory::default(), SlotName::A);
        assert_eq!(
            boot.state().unwrap(),
            BootState {
                active: SlotName::A,
                tried: None
            }
        );
        boot.mark_try_once(SlotName::B).unwrap();
        let env = boot.store.read().unwrap();
        assert_eq!(env["BOOT_ORDER"], "B A");
        assert_eq!(env["BOOT_B_LEFT"], "1");
        assert_eq!(
            boot.state().unwrap(),
            BootState {
                active: SlotName::A,
                tried: Some((SlotName::B, 1))
            }
        );
        boot.fallback().unwrap();
        let env = boot.store.read().unwrap();
        assert_eq!(env["BOOT_ORDER"], "A B");
        assert_eq!(env["BOOT_B_LEFT"], "0");
        assert_eq!(boot.state().unwrap().tried, None);
        boot.mark_try_once(SlotName::B).unwrap();
        boot.commit(SlotName::B).unwrap();
        assert_eq!(
            boot.state().unwrap(),
            BootState {
                active: SlotName::B,
                tried: None
            }
        );
        assert_eq!(boot.store.read().unwrap()["BOOT_B_LEFT"], "3");
    }

    #[test]
    fn garbage_in_the_environment_is_named() {
        let boot = EnvBootControl::new(Memory::default(), SlotName::A);
        boot.store
            .write(&[("BOOT_ORDER".to_owned(), Some("C A".to_owned()))])
            .unwrap();
        let err = boot.state().unwrap_err();
        assert!(err.to_string().contains("BOOT_ORDER"), "{err}");
    }

    #[test]
    fn booted_slot_comes_from_the_command_line() {
        assert_eq!(
            booted_from_cmdline("root=/dev/mmcblk0p2 rauc.slot=B quiet"),
            Some(SlotName::B)
        );
        assert_eq!(booted_from_cmdline("bulwark.slot=a"), Some(SlotName::A));
        assert_eq!(booted_from_cmdline("quiet"), None);
    }
}
