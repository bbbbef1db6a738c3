//! Modbus TCP: the MBAP frame codec, the per-request policy check and the
//! response matcher (none of which touch a socket), and the proxy that
//! wires them between devices and a Modbus server.
//!
//! Modbus TCP has no TLS and no authentication, so devices are identified
//! by their source address (see [`crate::policy::modbus`]).

pub mod codec;
pub mod inspect;
pub mod proxy;
