//! Signed update bundles (being written).
