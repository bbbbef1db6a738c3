//! Integration tests of the `bulwark` binary and of the repository's own
//! promises. Modules:
//! - `cli`: the command line end to end on the software keystore;
//! - `tpm`, `pkcs11`, `mtls`: the same against swtpm, SoftHSM2 and
//!   tpm2-pkcs11 (compiled with `--all-features`, as scripts/test.sh does);
//! - `gateway`: `bulwark gateway` with a real libcoap server, SIGHUP reload;
//! - `update`: `bulwark update` on the device against a real agent process;
//! - `docs`: ARCHITECTURE.md matches `crates/`, docs/traceability.md names
//!   only tests and files that exist.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

mod cli;
mod docs;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(all(feature = "tpm", feature = "pkcs11"))]
mod mtls;
#[cfg(feature = "pkcs11")]
mod pkcs11;
#[cfg(feature = "tpm")]
mod tpm;
#[cfg(feature = "maker")]
mod update;

/// Without both hardware backends compiled in, their tests do not exist:
/// fail loudly instead of passing with less coverage than claimed.
#[cfg(not(all(feature = "tpm", feature = "pkcs11")))]
#[test]
fn hardware_backends_are_compiled_in() {
    panic!(
        "the TPM and PKCS#11 tests need `--all-features` (libtss2-dev installed): \
         run `bash scripts/test.sh`"
    );
}
