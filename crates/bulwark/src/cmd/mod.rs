//! One module per subcommand.

pub(crate) mod agent;
#[cfg(feature = "maker")]
pub(crate) mod assess;
pub(crate) mod ca;
#[cfg(feature = "maker")]
pub(crate) mod comply;
pub(crate) mod dev;
pub(crate) mod device;
#[cfg(feature = "gateway")]
pub(crate) mod gateway;
pub(crate) mod identity;
pub(crate) mod keys;
pub(crate) mod log;
pub(crate) mod provision;
pub(crate) mod update;
#[cfg(feature = "maker")]
pub(crate) mod update_repo;
