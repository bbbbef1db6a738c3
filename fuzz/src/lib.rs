//! Fuzz harnesses for Bulwark's untrusted inputs: one function per
//! cargo-fuzz target (`fuzz_targets/<name>.rs` calls `bulwark_fuzz::<name>`).
//!
//! Each module is also compiled on its own, by `#[path]`, into its crate's
//! stable replay test, so CI checks every corpus seed without nightly:
//! - [`config`]: the agent's configuration inputs, replayed by
//!   `crates/agent-config/tests/fuzz_corpus.rs`;
//! - [`gateway`]: the gateway's MQTT, Modbus TCP and CoAP inspection,
//!   replayed by `crates/gateway/tests/fuzz_corpus.rs`.
//!
//! The modules depend on nothing here, so that each replay test needs
//! only its own crate.

pub mod config;
pub mod gateway;

pub use self::config::{FUZZ_NOW_UNIX, FUZZ_SIGNER_PEM, agent_file, bundle, device_settings};
pub use self::gateway::{coap_session, modbus_session, mqtt_session};
