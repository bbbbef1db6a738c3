//! `bulwark comply`: the maker's clause 5.1 documents from a product file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum ComplyCommand {
    /// Write a commented product file template to fill in.
    Init {
        /// Where to write it.
        #[arg(default_value = "product.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run the ISO/IEC 27402 5.1.1.1.5 checks; print every gap as
    /// FILE:LINE:COLUMN and exit non-zero if there is any.
    Check {
        /// The product file.
        product: PathBuf,
    },
    /// Check, then write every document, OSCAL and SBOM into a folder.
    Build {
        /// The product file.
        product: PathBuf,
        /// Output folder.
        #[arg(long, short, default_value = "compliance")]
        out: PathBuf,
        /// Use this `cargo metadata --format-version 1` output instead of
        /// running cargo on the product file's `[sbom] cargo_manifest`.
        #[arg(long)]
        cargo_metadata: Option<PathBuf>,
    },
    /// Print (or write) the requirement catalog as OSCAL JSON.
    Catalog {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn run(command: ComplyCommand) -> Result<()> {
    match command {
        ComplyCommand::Init { path, force } => {
            if path.exists() && !force {
                bail!("{} exists (use --force to overwrite)", path.display());
            }
            std::fs::write(&path, comply::PRODUCT_TEMPLATE)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        ComplyCommand::Check { product } => {
            load(&product)?;
            println!("{}: no gaps", product.display());
        }
        ComplyCommand::Build {
            product,
            out,
            cargo_metadata,
        } => {
            let checked = load(&product)?;
            let options = comply::BuildOptions {
                base_dir: product.parent().map(Path::to_path_buf).unwrap_or_default(),
                cargo_metadata: cargo_metadata
                    .map(|p| {
                        std::fs::read_to_string(&p)
                            .with_context(|| format!("reading {}", p.display()))
                    })
                    .transpose()?,
            };
            let outputs = comply::build(&checked, &options)?;
            comply::write_outputs(&out, &outputs)?;
            for o in &outputs {
                println!("{}", out.join(&o.path).display());
            }
        }
        ComplyCommand::Catalog { out } => {
            let json = comply::catalog_json();
            match out {
                Some(path) => std::fs::write(&path, json)
                    .with_context(|| format!("writing {}", path.display()))?,
                // write_all, not print!: a closed pipe is an error, not a panic.
                None => std::io::Write::write_all(&mut std::io::stdout().lock(), &json)
                    .context("writing the catalog to standard output")?,
            }
        }
    }
    Ok(())
}

/// Reads and checks a product file; gaps go to standard output, one per
/// line, in the `FILE:LINE:COLUMN: kind [clause]: message` form editors
/// and CI annotate.
fn load(path: &Path) -> Result<comply::Product> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = comply::ProductFile::parse(&text).with_context(|| path.display().to_string())?;
    match file.check() {
        Ok(product) => Ok(product),
        Err(gaps) => {
            for gap in &gaps {
                println!("{}:{gap}", path.display());
            }
            bail!(
                "{}: {} gap(s) against ISO/IEC 27402 clause 5.1",
                path.display(),
                gaps.len()
            )
        }
    }
}
