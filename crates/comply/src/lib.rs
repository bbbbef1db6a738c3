//! Maker-side compliance with clause 5.1 of ISO/IEC 27402:2023: one
//! reviewed, versioned product file in; the risk assessment, Statement of
//! Applicability, treatment plan, user security documentation, support
//! and disclosure policies, `security.txt`, OSCAL and SBOMs out.
//!
//! # How the parts fit
//!
//! - [`catalog`]: every SHALL and SHOULD of clause 5 in our own words,
//!   with a crosswalk to ETSI EN 303 645 and NIST IR 8259A and what
//!   Bulwark itself does for each clause (read from
//!   `docs/traceability.md`).
//! - [`ProductFile`]: the product file as written (TOML, every value with
//!   its position). [`ProductFile::check`] runs the 5.1.1.1.5 process
//!   (steps a–i) and returns either a [`Product`] or every [`Gap`] at once.
//! - [`build`] turns a [`Product`] into [`Output`] files: Markdown and a
//!   self-contained HTML report for people, OSCAL (catalog, profile,
//!   system security plan, plan of action and milestones), CycloneDX 1.6
//!   and SPDX 2.3 JSON for machines.
//!
//! ```no_run
//! let text = std::fs::read_to_string("product.toml")?;
//! let product = comply::ProductFile::parse(&text)?
//!     .check()
//!     .map_err(comply::Error::Gaps)?;
//! let outputs = comply::build(&product, &comply::BuildOptions::default())?;
//! comply::write_outputs(std::path::Path::new("out"), &outputs)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design decisions
//!
//! - **Parse, then check, then build.** The generators take a [`Product`],
//!   which only [`ProductFile::check`] can make: no document is ever built
//!   from a file with a gap, so an SoA the standard would refuse cannot be
//!   produced.
//! - **All gaps at once, with positions.** Every key of the product file is
//!   optional at parse time and carries its span (`serde_spanned`), so a
//!   missing key becomes a gap at its table's line and column rather than a
//!   parse error that hides the rest. Unknown keys are refused at parse time
//!   (a typo must not silently drop a control).
//! - **Deterministic output.** Every timestamp is the product file's
//!   `version_date`, every UUID is a name-based (v5) UUID derived from the
//!   product id, version and the object, JSON objects have sorted keys and
//!   lists a fixed order: two builds of one file are byte-identical, so the
//!   documents can be reviewed as diffs and reproduced by a test lab.
//! - **One source for text.** Each document is a Markdown template
//!   (minijinja); the HTML report is that Markdown rendered with
//!   `pulldown-cmark` plus inline SVG heat maps, so the two never disagree.
//!   Maker text is escaped for Markdown and HTML before it enters either.
//! - **Catalog in code, features from the traceability table.** The
//!   catalog is a `const` table (checked by the compiler, no parsing at run
//!   time); Bulwark's own coverage is `docs/traceability.md`, compiled in
//!   with `include_str!`, the same file the repository's docs test checks.
//! - **Crosswalks only where sure.** A mapping is `equivalent`, `subset`
//!   (ours asks for less) or `intersects`; provisions we are not sure of are
//!   left out rather than guessed.

mod check;
mod oscal;
mod output;
mod product;
mod render;
mod sbom;

pub mod catalog;

use std::path::PathBuf;

pub use check::{
    Assessment, Asset, Component, Constraints, Control, DeviceKind, Feature, Gap, GapKind, Info,
    OtherStandard, Party, Product, Risk, RiskOwner, SbomSource, Scales, SoaEntry, SoaStatus,
    Support, System, Treatment, UseCase, Vdp,
};
pub use output::{BuildOptions, Output, PUBLIC_DOCUMENTS, build, catalog_json, write_outputs};
pub use product::ProductFile;

/// The commented product file template `bulwark comply init` writes.
pub const PRODUCT_TEMPLATE: &str = include_str!("../templates/product.toml");

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The product file is not valid TOML or has a value of the wrong type.
    #[error("{line}:{column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The product file has gaps against the standard.
    #[error("{} gap(s) against ISO/IEC 27402 clause 5.1", .0.len())]
    Gaps(Vec<Gap>),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `cargo metadata` failed or gave something unexpected.
    #[error("cargo metadata for {manifest}: {message}")]
    CargoMetadata {
        /// The manifest it ran on.
        manifest: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A document template failed to render (a bug in a template).
    #[error("rendering {document}: {message}")]
    Render {
        /// Which document.
        document: String,
        /// The template engine's message.
        message: String,
    },
}
