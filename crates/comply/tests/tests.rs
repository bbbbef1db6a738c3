//! Integration tests of `comply`, one module per concern:
//!
//! - `example`: the smart-plug example passes, builds every output, and
//!   builds byte-identically twice.
//! - `gaps`: every kind of gap injected into a copy is reported once, at
//!   its position; hostile input never panics.
//! - `oscal`: catalog, profile, SSP and POA&M validate against NIST's
//!   OSCAL JSON schemas (vendored in `tests/data/oscal`).
//! - `sbom`: CycloneDX validated by cyclonedx-python-lib, SPDX by
//!   spdx-tools (both from PyPI; `scripts/test.sh` installs them).
//! - `report`: heat map SVG structure, the HTML report, the user
//!   documentation and security.txt.
//! - `catalog`: the requirement catalog and its crosswalk.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

mod catalog;
mod example;
mod gaps;
mod oscal;
mod report;
mod sbom;
