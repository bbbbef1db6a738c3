//! A TPM NV counter for the update security floor (anti-rollback).
//!
//! An old copy of the device's state can be put back on its flash; a TPM
//! NV counter cannot be put back: it only counts up, and the TPM keeps its
//! value. [`TpmCounter`] is such a counter, counting from 0 at binding, so
//! that the update crate's `CounterBackedFloor` keeps the floor at least at
//! its value.
//!
//! Two NV indices in the owner range ([`handles::OWNER_NV`]):
//! - [`handles::FLOOR_COUNTER`], type counter (TPM_NT_COUNTER), 8 bytes.
//!   A counter is not 0 after its first increment: the TPM starts it at
//!   the highest value any counter on this TPM ever had, so that undefining
//!   and redefining one never moves it back. Until that first increment it
//!   cannot even be read (TPM_RC_NV_UNINITIALIZED), so it is incremented
//!   once right after definition.
//! - [`handles::FLOOR_COUNTER_BASE`], ordinary, 8 bytes: the counter's
//!   value right after that first increment, written once. [`TpmCounter::read`]
//!   is the counter minus this base. The base lives in the TPM rather than
//!   in the device's store, so that putting back a store from before the
//!   binding (or deleting it) cannot rebind the counter at a higher base.
//!
//! Both are owner-authorized (ownerread | ownerwrite, no authread/authwrite,
//! no policy): they are read, incremented and written with the owner
//! hierarchy's authorization, the empty one this crate already uses for
//! the storage key. Without TPMA_NV_POLICY_DELETE and TPMA_NV_PLATFORMCREATE,
//! only TPM2_NV_UndefineSpace with owner authorization (or a TPM2_Clear)
//! removes them, and a TPM2_Clear also destroys the storage key, which the
//! keystore reports. A device that must resist someone running their own
//! code on it sets an owner password; this crate does not handle one yet.
//!
//! An index that exists at either handle with other attributes was made
//! by other software: it is reported and left alone, never undefined.
//! Each operation connects, works and disconnects, as the keystore does.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use keys::{Error, Result};
use tss_esapi::attributes::NvIndexAttributes;
use tss_esapi::constants::NvIndexType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{MaxNvBuffer, NvPublic, NvPublicBuilder};
use tss_esapi::tcti_ldr::TctiNameConf;

use crate::BACKEND;
use crate::handles;
use crate::tpm::{Tpm, kind};

/// Size of both indices: a UINT64, big-endian as the TPM reads counters.
const SIZE: usize = 8;

/// A monotonic counter in TPM NV memory, counting from 0 at binding.
pub struct TpmCounter {
    tcti: String,
    index: u32,
    base_index: u32,
    /// The counter's value at binding (read from the base index at open).
    base: u64,
    /// Holding the lock is the right to talk to the TPM.
    tpm: Mutex<TctiNameConf>,
}

impl fmt::Debug for TpmCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmCounter")
            .field("tcti", &self.tcti)
            .field("index", &format_args!("{:#010x}", self.index))
            .field("base", &self.base)
            .finish()
    }
}

/// The two kinds of index this module defines.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Base,
}

impl TpmCounter {
    /// Opens the floor counter at [`handles::FLOOR_COUNTER`] through the
    /// TCTI `tcti`, defining and binding it on first use.
    ///
    /// Errors: as [`TpmCounter::open_or_define_at`].
    pub fn open_or_define(tcti: &str) -> Result<Self> {
        Self::open_or_define_at(tcti, handles::FLOOR_COUNTER)
    }

    /// Opens the counter at NV index `index` (its base at `index + 1`),
    /// defining whichever of the two is missing and finishing a binding
    /// that a crash interrupted.
    ///
    /// Errors: [`Error::InvalidInput`] for a malformed TCTI or an index
    /// outside [`handles::OWNER_NV`], [`Error::Unavailable`] if the TPM
    /// cannot be reached, [`Error::Corrupt`] if an index there was made by
    /// other software or the base is above the counter.
    pub fn open_or_define_at(tcti: &str, index: u32) -> Result<Self> {
        let conf = TctiNameConf::from_str(tcti).map_err(|_| Error::InvalidInput {
            what: "TPM TCTI",
            reason: format!("{tcti:?} is not a TCTI string such as device:/dev/tpmrm0"),
        })?;
        let base_index = index.wrapping_add(1);
        if !handles::OWNER_NV.contains(&index) || !handles::OWNER_NV.contains(&base_index) {
            return Err(Error::InvalidInput {
                what: "TPM NV counter index",
                reason: format!(
                    "{index:#010x} and the next index must be in the owner range {:#010x}..={:#010x}",
                    handles::OWNER_NV.start(),
                    handles::OWNER_NV.end()
                ),
            });
        }
        let mut tpm = Tpm::connect(&conf, tcti)?;
        let (counter, _) = open_or_define_index(&mut tpm, index, Kind::Counter)?;
        let value = read_u64(&mut tpm, index, counter)?;
        let (base_handle, written) = open_or_define_index(&mut tpm, base_index, Kind::Base)?;
        let base = if written {
            read_u64(&mut tpm, base_index, base_handle)?
        } else {
            write_u64(&mut tpm, base_index, base_handle, value)?;
            tracing::info!(
                index = %format!("{index:#010x}"),
                base = value,
                "bound the TPM NV counter for the security floor"
            );
            value
        };
        if base > value {
            return Err(Error::Corrupt {
                location: format!("TPM NV index {base_index:#010x}"),
                reason: format!(
                    "the recorded base {base} is above the counter's value {value} at \
                     {index:#010x}: the counter was redefined or the base rewritten"
                ),
            });
        }
        drop(tpm);
        Ok(Self {
            tcti: tcti.to_owned(),
            index,
            base_index,
            base,
            tpm: Mutex::new(conf),
        })
    }

    /// Increments since binding (0 right after it).
    pub fn read(&self) -> Result<u64> {
        let value = self.with_index(|tpm, handle| read_u64(tpm, self.index, handle))?;
        self.since_base(value)
    }

    /// Increments the counter by one and returns [`TpmCounter::read`]'s new
    /// value.
    pub fn increment(&self) -> Result<u64> {
        let value = self.with_index(|tpm, handle| {
            tpm.context()
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.nv_increment(NvAuth::Owner, handle)
                })
                .map_err(|e| tpm.fail("TPM2_NV_Increment", &target(self.index), e))?;
            read_u64(tpm, self.index, handle)
        })?;
        self.since_base(value)
    }

    /// The NV index holding the counter, for diagnostics (`tpm2_nvread`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The counter's raw value at binding, as recorded at `index + 1`.
    pub fn base(&self) -> u64 {
        self.base
    }

    fn since_base(&self, value: u64) -> Result<u64> {
        value.checked_sub(self.base).ok_or_else(|| Error::Corrupt {
            location: target(self.index),
            reason: format!(
                "the counter reads {value}, below its base {} recorded at {:#010x}: it was \
                 redefined since it was bound",
                self.base, self.base_index
            ),
        })
    }

    /// Runs `f` on a fresh connection with the counter's index, checked to
    /// still be ours.
    fn with_index<T>(&self, f: impl FnOnce(&mut Tpm<'_>, NvIndexHandle) -> Result<T>) -> Result<T> {
        // The lock guards no data that a panic could leave half-updated.
        let conf = self.tpm.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tpm = Tpm::connect(&conf, &self.tcti)?;
        let (handle, public) = find(&mut tpm, self.index)?.ok_or_else(|| Error::Corrupt {
            location: target(self.index),
            reason: "the floor counter disappeared (TPM cleared or index undefined?)".to_owned(),
        })?;
        check(self.index, &public, Kind::Counter)?;
        f(&mut tpm, handle)
    }
}

fn target(index: u32) -> String {
    format!("TPM NV index {index:#010x}")
}

/// The attributes this module defines its indices with.
fn attributes(kind: Kind) -> tss_esapi::Result<NvIndexAttributes> {
    NvIndexAttributes::builder()
        .with_nv_index_type(match kind {
            Kind::Counter => NvIndexType::Counter,
            Kind::Base => NvIndexType::Ordinary,
        })
        .with_owner_read(true)
        .with_owner_write(true)
        .build()
}

fn public(index: u32, kind: Kind) -> tss_esapi::Result<NvPublic> {
    NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(index)?)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes(kind)?)
        .with_data_area_size(SIZE)
        .build()
}

/// The index at `index` and its public area; `None` if it is not defined.
fn find(tpm: &mut Tpm<'_>, index: u32) -> Result<Option<(NvIndexHandle, NvPublic)>> {
    let handle =
        NvIndexTpmHandle::new(index).map_err(|e| tpm.fail("handle check", &target(index), e))?;
    let object = match tpm
        .context()
        .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(handle)))
    {
        Ok(object) => object,
        Err(e) if kind(&e) == Some(Tss2ResponseCodeKind::Handle) => return Ok(None),
        Err(e) => return Err(tpm.fail("TPM2_NV_ReadPublic", &target(index), e)),
    };
    let handle = NvIndexHandle::from(object);
    let (public, _name) = tpm
        .context()
        .execute_without_session(|ctx| ctx.nv_read_public(handle))
        .map_err(|e| tpm.fail("TPM2_NV_ReadPublic", &target(index), e))?;
    Ok(Some((handle, public)))
}

/// Checks that an existing index is one this module defined: same type,
/// size, name algorithm, attributes (but for TPMA_NV_WRITTEN) and no
/// policy.
fn check(index: u32, public: &NvPublic, kind: Kind) -> Result<()> {
    let foreign = |reason: String| Error::Corrupt {
        location: target(index),
        reason: format!("{reason}: it was defined by other software and is left alone"),
    };
    let expected = attributes(kind)
        .map_err(|e| foreign(format!("cannot build the expected attributes: {e}")))?;
    let raw = |a: NvIndexAttributes| -> u32 {
        // TPMA_NV_WRITTEN (bit 29) is the TPM's to set.
        tss_esapi::tss2_esys::TPMA_NV::try_from(a).unwrap_or(u32::MAX) & !(1 << 29)
    };
    if raw(public.attributes()) != raw(expected) {
        return Err(foreign(format!(
            "attributes {:#010x}, expected {:#010x}",
            raw(public.attributes()),
            raw(expected)
        )));
    }
    if public.data_size() != SIZE
        || public.name_algorithm() != HashingAlgorithm::Sha256
        || !public.authorization_policy().value().is_empty()
    {
        return Err(foreign(format!(
            "size {}, name algorithm {:?} or a policy differ from ours",
            public.data_size(),
            public.name_algorithm()
        )));
    }
    Ok(())
}

/// Finds or defines the index; returns its handle and whether it has been
/// written. A counter is incremented once if it never was, so that it can
/// be read.
fn open_or_define_index(
    tpm: &mut Tpm<'_>,
    index: u32,
    kind: Kind,
) -> Result<(NvIndexHandle, bool)> {
    let (handle, written) = match find(tpm, index)? {
        Some((handle, public)) => {
            check(index, &public, kind)?;
            (handle, public.attributes().written())
        }
        None => {
            let public = public(index, kind)
                .map_err(|e| tpm.fail("building the NV public area", &target(index), e))?;
            let handle = tpm
                .context()
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.nv_define_space(Provision::Owner, None, public)
                })
                .map_err(|e| tpm.fail("TPM2_NV_DefineSpace", &target(index), e))?;
            tracing::info!(index = %format!("{index:#010x}"), "defined a TPM NV index");
            (handle, false)
        }
    };
    if written {
        return Ok((handle, true));
    }
    match kind {
        Kind::Counter => {
            tpm.context()
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.nv_increment(NvAuth::Owner, handle)
                })
                .map_err(|e| tpm.fail("TPM2_NV_Increment", &target(index), e))?;
            Ok((handle, true))
        }
        Kind::Base => Ok((handle, false)),
    }
}

fn read_u64(tpm: &mut Tpm<'_>, index: u32, handle: NvIndexHandle) -> Result<u64> {
    let data = tpm
        .context()
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.nv_read(NvAuth::Owner, handle, SIZE as u16, 0)
        })
        .map_err(|e| tpm.fail("TPM2_NV_Read", &target(index), e))?;
    let bytes = <[u8; SIZE]>::try_from(data.value()).map_err(|_| Error::Backend {
        backend: BACKEND,
        operation: "TPM2_NV_Read",
        detail: format!(
            "{} answered {} bytes instead of {SIZE}",
            target(index),
            data.value().len()
        ),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn write_u64(tpm: &mut Tpm<'_>, index: u32, handle: NvIndexHandle, value: u64) -> Result<()> {
    let data = MaxNvBuffer::try_from(value.to_be_bytes().to_vec())
        .map_err(|e| tpm.fail("building the NV buffer", &target(index), e))?;
    tpm.context()
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.nv_write(NvAuth::Owner, handle, data, 0)
        })
        .map_err(|e| tpm.fail("TPM2_NV_Write", &target(index), e))
}
