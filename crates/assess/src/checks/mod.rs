//! The checks, one function per check, each naming its clause; each
//! returns a [`Finding`](crate::Finding) and never fails: what went wrong
//! becomes evidence.

pub(crate) mod credentials;
pub(crate) mod disclosure;
pub(crate) mod input;
pub(crate) mod routes;
pub(crate) mod tls;

use time::OffsetDateTime;

use crate::client::{Http, ProbeError, quote};
use crate::{Options, Target};

/// The header of a JSON request body.
pub(crate) const JSON: (&str, &str) = ("content-type", "application/json");

/// What every check works with.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) target: &'a Target,
    pub(crate) options: &'a Options,
    pub(crate) http: Http,
    /// When the assessment started: dates the device publishes must lie
    /// after it.
    pub(crate) now: OffsetDateTime,
}

/// A probe that got no HTTP answer, as evidence.
pub(crate) fn describe_failure(e: &ProbeError) -> String {
    format!("no answer: {}", quote(&e.to_string()))
}
