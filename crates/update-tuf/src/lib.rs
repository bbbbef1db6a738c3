//! TUF repositories for update bundles (being written).
