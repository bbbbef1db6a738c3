//! The device agent (being written).
