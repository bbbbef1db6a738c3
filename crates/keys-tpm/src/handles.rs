//! The persistent handles this crate uses, and the ones it must never touch.

use std::ops::RangeInclusive;

/// Where the storage primary key (SRK) lives: the handle the TCG
/// provisioning guidance and other TPM software (systemd, tpm2-tss-engine)
/// use for the owner's SRK, so a provisioned SRK is shared, not duplicated.
pub const STORAGE_KEY: u32 = 0x8100_0001;

/// Where signing keys are persisted: the rest of the owner's persistent
/// range from 0x81000100 on. The first free handle is taken; handles in
/// use by other software are skipped.
pub const KEYS: RangeInclusive<u32> = 0x8100_0100..=0x8100_FFFF;

/// Endorsement keys as `swtpm_setup` and TPM vendors provision them
/// (RSA and ECC EK). Destroying one breaks the device's attestation
/// identity for good, so no code path may ever pass them to EvictControl.
pub const ENDORSEMENT_KEYS: [u32; 2] = [0x8101_0001, 0x8101_0016];

/// The owner's NV index range in the TCG "Registry of Reserved TPM 2.0
/// Handles and Localities" (0x01000000.. is the TPM manufacturer's,
/// 0x01400000.. the platform manufacturer's, 0x01C00000.. holds the
/// endorsement certificates): indices an owner defines for its own use.
pub const OWNER_NV: RangeInclusive<u32> = 0x0180_0000..=0x01BF_FFFF;

/// The NV counter carrying the update security floor
/// ([`crate::counter::TpmCounter`]). NV indices and persistent objects
/// are different handle types (0x01.. and 0x81..), so it cannot collide
/// with the SRK or a key; `0B00` is an arbitrary, easy-to-grep value away
/// from the start of the range, where tools that pick the first free
/// index would put theirs.
pub const FLOOR_COUNTER: u32 = 0x0180_0B00;

/// The ordinary NV index beside [`FLOOR_COUNTER`] that records the
/// counter's value when it was bound (see [`crate::counter`]).
pub const FLOOR_COUNTER_BASE: u32 = FLOOR_COUNTER + 1;

// Invariant: the counter's indices are in the owner's NV range.
const _: () = {
    assert!(FLOOR_COUNTER >= *OWNER_NV.start() && FLOOR_COUNTER_BASE <= *OWNER_NV.end());
};

// Invariant: neither the SRK nor the key range can reach an endorsement key.
const _: () = {
    let mut i = 0;
    while i < ENDORSEMENT_KEYS.len() {
        let ek = ENDORSEMENT_KEYS[i];
        assert!(ek != STORAGE_KEY);
        assert!(ek < *KEYS.start() || ek > *KEYS.end());
        i += 1;
    }
};

/// Checks, at the single place where a handle becomes an EvictControl
/// target, that it is the SRK or in the key range.
///
/// # Panics
///
/// On any other handle, endorsement keys above all: that would be a bug
/// in this crate (index entries are range-checked when parsed), and
/// stopping is better than destroying a key we do not own.
pub(crate) fn assert_ours(handle: u32) {
    assert!(
        !ENDORSEMENT_KEYS.contains(&handle),
        "refusing to touch endorsement key handle {handle:#010x}"
    );
    assert!(
        handle == STORAGE_KEY || KEYS.contains(&handle),
        "refusing to touch persistent handle {handle:#010x} outside Bulwark's ranges"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "endorsement key")]
    fn endorsement_keys_are_refused() {
        assert_ours(0x8101_0001);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn foreign_handles_are_refused() {
        assert_ours(0x8100_0002);
    }

    #[test]
    fn our_handles_pass() {
        assert_ours(STORAGE_KEY);
        assert_ours(0x8100_0100);
    }
}
