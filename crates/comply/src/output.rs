//! `build`: every output of a checked product, in memory first, so that
//! tests can compare two builds byte for byte and the CLI writes them in
//! one place.

use std::path::{Path, PathBuf};

use serde_json::Value;
use time::Date;

use crate::check::Product;
use crate::{Error, oscal, render, sbom};

/// Where to find what the product file refers to.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The product file's folder: relative paths in it start here.
    pub base_dir: PathBuf,
    /// `cargo metadata --format-version 1` output to use instead of running
    /// cargo on `[sbom] cargo_manifest`.
    pub cargo_metadata: Option<String>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Path relative to the output folder (`/`-separated).
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

fn json_bytes(v: &Value) -> Vec<u8> {
    // serde_json's map is ordered by key: output is stable.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s.into_bytes()
}

/// The date the standalone catalog carries (bump when the table changes).
const CATALOG_DATE: Date = time::macros::date!(2026 - 01 - 15);

/// The OSCAL catalog on its own (`bulwark comply catalog`).
pub fn catalog_json() -> Vec<u8> {
    json_bytes(&oscal::catalog(CATALOG_DATE, env!("CARGO_PKG_VERSION")))
}

/// Builds every output of a checked product.
pub fn build(product: &Product, options: &BuildOptions) -> Result<Vec<Output>, Error> {
    let mut out = Vec::new();
    let mut add = |path: &str, bytes: Vec<u8>| {
        out.push(Output {
            path: path.to_owned(),
            bytes,
        });
    };

    add("report.html", render::html_report(product)?.into_bytes());
    for (name, text) in render::markdown(product)? {
        add(&format!("docs/{name}"), text.into_bytes());
    }
    add(
        "docs/heatmap-initial.svg",
        render::heatmap(product, false).into_bytes(),
    );
    add(
        "docs/heatmap-residual.svg",
        render::heatmap(product, true).into_bytes(),
    );
    add(
        ".well-known/security.txt",
        render::security_txt(product).into_bytes(),
    );
    add("public/disclosure.json", json_bytes(&disclosure(product)));
    add(
        "oscal/catalog.json",
        json_bytes(&oscal::catalog(
            product.info.version_date,
            &product.info.version,
        )),
    );
    add("oscal/profile.json", json_bytes(&oscal::profile(product)));
    add("oscal/ssp.json", json_bytes(&oscal::ssp(product)));
    add("oscal/poam.json", json_bytes(&oscal::poam(product)));

    let tree = match &product.sbom {
        Some(source) => {
            let manifest = options.base_dir.join(&source.cargo_manifest);
            let json = match &options.cargo_metadata {
                Some(json) => json.clone(),
                None => sbom::run_cargo_metadata(&manifest, &source.target)?,
            };
            sbom::cargo_tree(&json, &source.root_package, &manifest)?
        }
        None => sbom::CargoTree::default(),
    };
    add(
        "sbom/bom.cdx.json",
        json_bytes(&sbom::cyclonedx(product, &tree)),
    );
    add(
        "sbom/bom.spdx.json",
        json_bytes(&sbom::spdx(product, &tree)),
    );
    Ok(out)
}

/// The documents a device serves to anyone (5.1.2.1.2): their stems
/// under `docs/`.
pub const PUBLIC_DOCUMENTS: [&str; 3] = [
    "security-features",
    "support-policy",
    "vulnerability-disclosure",
];

/// What a device publishes about itself without authentication: product,
/// version, the support end date and where the policies are.
fn disclosure(product: &Product) -> Value {
    serde_json::json!({
        "product": product.info.name,
        "model": product.info.model,
        "maker": product.info.maker,
        "version": product.info.version,
        "security_updates_until": product.support.security_updates_until.to_string(),
        "support_policy_url": product.support.policy_url,
        "documents": PUBLIC_DOCUMENTS,
    })
}

/// Writes outputs under `dir`, creating folders as needed.
pub fn write_outputs(dir: &Path, outputs: &[Output]) -> Result<(), Error> {
    for o in outputs {
        let path = dir.join(&o.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, &o.bytes).map_err(|source| Error::Write { path, source })?;
    }
    Ok(())
}
