//! CoAP (RFC 7252) over UDP: the datagram codec, the per-request policy
//! check with duplicate and amplification guards, block-wise transfer
//! caps (none of which touch a socket), and the proxy that wires them
//! between devices and a CoAP server.
//!
//! CoAP here runs without DTLS, so devices are identified by their source
//! address (see [`crate::policy::coap`]).

pub mod blockwise;
pub mod codec;
pub mod inspect;
pub mod proxy;
