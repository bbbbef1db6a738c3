//! MQTT 3.1.1 and 5: the frame codec and the per-session inspection layer
//! over it. Neither touches a socket.

pub mod codec;
pub mod inspect;
