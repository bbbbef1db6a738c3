//! The agent configuration (being written).
