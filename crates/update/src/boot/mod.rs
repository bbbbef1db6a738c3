//! A/B slots and the boot loader's view of them.
//!
//! [`BootControl`] is what the installer and the agent need from a boot
//! loader: which slot is committed, mark the other one to be tried once
//! with a boot counter, commit it after a healthy boot, or fall back. The
//! backends: [`FileBootControl`] (a simulated boot loader in a JSON file,
//! for tests and development) and [`EnvBootControl`] over the U-Boot
//! environment ([`UBootEnv`], `fw_setenv`) or the GRUB environment block
//! ([`GrubEnv`], `grub-editenv`).

mod env;
mod file;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use env::{
    COMMITTED_ATTEMPTS, EnvBootControl, EnvStore, FwEnv, GrubEditenv, GrubEnv, UBootEnv,
    booted_from_cmdline,
};
pub use file::FileBootControl;

use crate::error::{Error, Result};

/// Boot attempts a slot marked "try once" gets before the boot loader
/// falls back to the committed slot.
pub const TRY_ATTEMPTS: u32 = 1;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// Slot `a`.
    A,
    /// Slot `b`.
    B,
}

impl SlotName {
    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// `"a"` or `"b"`: file names and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// `"A"` or `"B"`: the boot names RAUC's U-Boot and GRUB scripts use.
    pub fn boot_name(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
        }
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SlotName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "a" | "A" => Ok(Self::A),
            "b" | "B" => Ok(Self::B),
            other => Err(Error::inconsistent(format!(
                "slot name {:?} is not a or b",
                crate::error::truncate(other)
            ))),
        }
    }
}

/// A slot: a regular file (development, tests) or a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Which slot.
    pub name: SlotName,
    /// Its file or block device.
    pub path: PathBuf,
}

/// The two slots of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// Slot `a`.
    pub a: Slot,
    /// Slot `b`.
    pub b: Slot,
}

impl Slots {
    /// Slots `a` and `b` at these paths.
    pub fn new(a: impl Into<PathBuf>, b: impl Into<PathBuf>) -> Self {
        Self {
            a: Slot {
                name: SlotName::A,
                path: a.into(),
            },
            b: Slot {
                name: SlotName::B,
                path: b.into(),
            },
        }
    }

    /// The slot called `name`.
    pub fn get(&self, name: SlotName) -> &Slot {
        match name {
            SlotName::A => &self.a,
            SlotName::B => &self.b,
        }
    }
}

/// What the boot loader will do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// The committed slot: the one booted when no trial is pending, and
    /// the one the boot loader falls back to.
    pub active: SlotName,
    /// A slot marked "try once" and the boot attempts it has left (0: the
    /// trial failed and the boot loader falls back).
    pub tried: Option<(SlotName, u32)>,
}

/// What the installer and the agent need from a boot loader. Blocking:
/// async callers use `spawn_blocking`.
pub trait BootControl: fmt::Debug + Send + Sync {
    /// The committed slot.
    fn active(&self) -> Result<SlotName> {
        Ok(self.state()?.active)
    }

    /// The slot the running system booted from.
    fn booted(&self) -> Result<SlotName>;

    /// The boot loader's state.
    fn state(&self) -> Result<BootState>;

    /// Boots `slot` on the next boot(s), at most [`TRY_ATTEMPTS`] times;
    /// if it is not committed by then, the boot loader falls back.
    fn mark_try_once(&self, slot: SlotName) -> Result<()>;

    /// Makes `slot` the committed slot and ends any pending trial.
    fn commit(&self, slot: SlotName) -> Result<()>;

    /// Abandons a pending trial: the next boot uses the committed slot.
    fn fallback(&self) -> Result<()>;
}
