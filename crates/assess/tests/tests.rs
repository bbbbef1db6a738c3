//! The assessor against a real agent on loopback and against a
//! deliberately broken fake device.

// Test code: a panic is the failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

mod support;

/// A correctly configured device passes every check; broken ones fail the
/// checks they break.
#[path = "tests/device.rs"]
mod device;
/// Targets that cannot be assessed at all are errors, not reports; a
/// missing openssl is an error finding naming the package.
#[path = "tests/errors.rs"]
mod errors;
/// Markdown has one row per finding and cannot be broken by device text;
/// JSON round-trips.
#[path = "tests/report.rs"]
mod report;
