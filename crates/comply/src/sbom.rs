//! Machine-readable dependency information (5.1.2.2): the device binary's
//! Rust dependency tree from `cargo metadata` plus the components the
//! maker declares, as CycloneDX 1.6 and SPDX 2.3 JSON.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::check::{Product, fmt_date};
use crate::oscal::{timestamp, uuid_for};

/// One component of the SBOM.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Part {
    pub(crate) bom_ref: String,
    pub(crate) name: String,
    pub(crate) version: String,
    /// CycloneDX type.
    pub(crate) kind: String,
    pub(crate) purl: Option<String>,
    pub(crate) licence: Option<String>,
    pub(crate) sha256: Option<String>,
    pub(crate) supplier: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) download: Option<String>,
    /// bom-refs this part depends on.
    pub(crate) depends_on: BTreeSet<String>,
}

/// The Rust side: the root package and everything it links.
#[derive(Debug, Default)]
pub(crate) struct CargoTree {
    pub(crate) root: Option<String>,
    pub(crate) parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    resolve: Option<Resolve>,
    workspace_root: Option<String>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    source: Option<String>,
    license: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    #[serde(default)]
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    #[serde(default)]
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    checksum: Option<String>,
}

/// Runs `cargo metadata` on a manifest (the `CARGO` the caller runs under,
/// else `cargo` from `PATH`).
pub(crate) fn run_cargo_metadata(manifest: &Path, target: &str) -> Result<String, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--manifest-path",
    ])
    .arg(manifest);
    if !target.is_empty() {
        cmd.args(["--filter-platform", target]);
    }
    let out = cmd.output().map_err(|e| Error::CargoMetadata {
        manifest: manifest.to_owned(),
        message: format!("cannot run cargo: {e}"),
    })?;
    if !out.status.success() {
        return Err(Error::CargoMetadata {
            manifest: manifest.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| Error::CargoMetadata {
        manifest: manifest.to_owned(),
        message: "output is not UTF-8".into(),
    })
}

/// SPDX-style licence expression from Cargo's field (old crates use `/`).
fn licence_expression(s: &str) -> String {
    s.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
}

/// Walks the normal (non-dev, non-build) dependencies of `root`.
pub(crate) fn cargo_tree(
    metadata_json: &str,
    root: &str,
    manifest: &Path,
) -> Result<CargoTree, Error> {
    let err = |message: String| Error::CargoMetadata {
        manifest: manifest.to_owned(),
        message,
    };
    let meta: Metadata =
        serde_json::from_str(metadata_json).map_err(|e| err(format!("unexpected output: {e}")))?;
    let resolve = meta
        .resolve
        .ok_or_else(|| err("no dependency resolution in the output".into()))?;
    let packages: BTreeMap<&str, &Package> =
        meta.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    let nodes: BTreeMap<&str, &Node> = resolve.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let root_pkg = meta
        .packages
        .iter()
        .find(|p| p.name == root && p.source.is_none())
        .ok_or_else(|| err(format!("no workspace package named {root:?}")))?;

    // Checksums from Cargo.lock beside the workspace root, when present.
    let mut checksums = BTreeMap::new();
    if let Some(root_dir) = &meta.workspace_root
        && let Ok(text) = std::fs::read_to_string(PathBuf::from(root_dir).join("Cargo.lock"))
        && let Ok(lock) = toml::from_str::<Lock>(&text)
    {
        for p in lock.package {
            if let Some(c) = p.checksum {
                checksums.insert((p.name, p.version), c);
            }
        }
    }

    let bom_ref = |p: &Package| -> String {
        if p.source
            .as_deref()
            .is_some_and(|s| s.starts_with("registry+"))
        {
            format!("pkg:cargo/{}@{}", p.name, p.version)
        } else {
            format!("cargo-local:{}@{}", p.name, p.version)
        }
    };

    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([root_pkg.id.as_str()]);
    let mut parts = Vec::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        let Some(pkg) = packages.get(id) else {
            return Err(err(format!(
                "package {id} is in the resolution but not listed"
            )));
        };
        let mut depends_on = BTreeSet::new();
        if let Some(node) = nodes.get(id) {
            for d in &node.deps {
                let normal = d.dep_kinds.is_empty() || d.dep_kinds.iter().any(|k| k.kind.is_none());
                if !normal {
                    continue;
                }
                if let Some(dep) = packages.get(d.pkg.as_str()) {
                    depends_on.insert(bom_ref(dep));
                    queue.push_back(d.pkg.as_str());
                }
            }
        }
        let registry = pkg
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("registry+"));
        parts.push(Part {
            bom_ref: bom_ref(pkg),
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            kind: if id == root_pkg.id {
                "application"
            } else {
                "library"
            }
            .to_owned(),
            purl: registry.then(|| bom_ref(pkg)),
            licence: pkg.license.as_deref().map(licence_expression),
            sha256: if registry {
                checksums
                    .get(&(pkg.name.clone(), pkg.version.clone()))
                    .cloned()
            } else {
                None
            },
            supplier: None,
            description: pkg
                .description
                .as_deref()
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" ")),
            download: registry.then(|| {
                format!(
                    "https://crates.io/api/v1/crates/{}/{}/download",
                    pkg.name, pkg.version
                )
            }),
            depends_on,
        });
    }
    parts.sort();
    Ok(CargoTree {
        root: Some(bom_ref(root_pkg)),
        parts,
    })
}

fn product_ref(p: &Product) -> String {
    format!("product:{}@{}", p.info.id, p.info.version)
}

/// All parts: the Rust tree plus declared components, sorted.
fn all_parts(p: &Product, tree: &CargoTree) -> Vec<Part> {
    let mut parts = tree.parts.clone();
    for c in &p.components {
        parts.push(Part {
            bom_ref: if c.purl.is_empty() {
                format!("declared:{}@{}", c.name, c.version)
            } else {
                c.purl.clone()
            },
            name: c.name.clone(),
            version: c.version.clone(),
            kind: c.kind.clone(),
            purl: (!c.purl.is_empty()).then(|| c.purl.clone()),
            licence: (!c.licence.is_empty()).then(|| c.licence.clone()),
            sha256: (!c.sha256.is_empty()).then(|| c.sha256.clone()),
            supplier: Some(c.supplier.clone()),
            description: (!c.description.is_empty()).then(|| c.description.clone()),
            download: None,
            depends_on: BTreeSet::new(),
        });
    }
    parts.sort();
    parts.dedup_by(|a, b| a.bom_ref == b.bom_ref);
    parts
}

/// The product's direct parts: the root binary and declared components.
fn top_level(p: &Product, tree: &CargoTree) -> BTreeSet<String> {
    let mut top: BTreeSet<String> = tree.root.iter().cloned().collect();
    for c in &p.components {
        top.insert(if c.purl.is_empty() {
            format!("declared:{}@{}", c.name, c.version)
        } else {
            c.purl.clone()
        });
    }
    top
}

/// CycloneDX 1.6 JSON.
pub(crate) fn cyclonedx(p: &Product, tree: &CargoTree) -> Value {
    let parts = all_parts(p, tree);
    let components: Vec<Value> = parts
        .iter()
        .map(|c| {
            let mut v = json!({
                "type": c.kind,
                "bom-ref": c.bom_ref,
                "name": c.name,
                "version": c.version,
            });
            if let Some(o) = v.as_object_mut() {
                if let Some(purl) = &c.purl {
                    o.insert("purl".into(), json!(purl));
                }
                if let Some(l) = &c.licence {
                    o.insert("licenses".into(), json!([{"expression": l}]));
                }
                if let Some(h) = &c.sha256 {
                    o.insert("hashes".into(), json!([{"alg": "SHA-256", "content": h}]));
                }
                if let Some(s) = &c.supplier {
                    o.insert("supplier".into(), json!({"name": s}));
                }
                if let Some(d) = &c.description {
                    o.insert("description".into(), json!(d));
                }
            }
            v
        })
        .collect();
    let mut dependencies = vec![json!({
        "ref": product_ref(p),
        "dependsOn": top_level(p, tree).into_iter().collect::<Vec<_>>(),
    })];
    for c in &parts {
        dependencies.push(json!({
            "ref": c.bom_ref,
            "dependsOn": c.depends_on.iter().collect::<Vec<_>>(),
        }));
    }
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_for(&p.info.id, &format!("cyclonedx:{}", p.info.version))),
        "version": 1,
        "metadata": {
            "timestamp": timestamp(p.info.version_date),
            "tools": {"components": [{
                "type": "application",
                "name": "bulwark comply",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {
                "type": "device",
                "bom-ref": product_ref(p),
                "name": p.info.name,
                "version": p.info.version,
                "description": format!("{} (model {})", p.info.name, p.info.model),
                "manufacturer": {"name": p.info.maker},
            },
            "manufacturer": {"name": p.info.maker},
            "supplier": {"name": p.info.maker},
        },
        "components": components,
        "dependencies": dependencies,
    })
}

/// An SPDX id from an index and a name: `SPDXRef-` then letters, digits,
/// `.` and `-` only.
fn spdx_id(prefix: &str, i: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{prefix}-{i}-{clean}")
}

/// SPDX 2.3 JSON.
pub(crate) fn spdx(p: &Product, tree: &CargoTree) -> Value {
    let parts = all_parts(p, tree);
    let product_id = "SPDXRef-Product".to_owned();
    let ids: BTreeMap<&str, String> = parts
        .iter()
        .enumerate()
        .map(|(i, c)| (c.bom_ref.as_str(), spdx_id("Package", i + 1, &c.name)))
        .collect();
    let purpose = |kind: &str| match kind {
        "application" => "APPLICATION",
        "library" => "LIBRARY",
        "framework" => "FRAMEWORK",
        "operating-system" => "OPERATING-SYSTEM",
        "firmware" => "FIRMWARE",
        "container" => "CONTAINER",
        "device" => "DEVICE",
        "file" => "FILE",
        _ => "OTHER",
    };
    let mut packages = vec![json!({
        "SPDXID": product_id,
        "name": p.info.name,
        "versionInfo": p.info.version,
        "supplier": format!("Organization: {}", p.info.maker),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "DEVICE",
        "releaseDate": timestamp(p.info.version_date),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": product_id,
    })];
    for top in top_level(p, tree) {
        if let Some(id) = ids.get(top.as_str()) {
            relationships.push(json!({
                "spdxElementId": product_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
        }
    }
    for c in &parts {
        let Some(id) = ids.get(c.bom_ref.as_str()) else {
            continue;
        };
        let mut v = json!({
            "SPDXID": id,
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": c.download.clone().unwrap_or_else(|| "NOASSERTION".into()),
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": c.licence.clone().unwrap_or_else(|| "NOASSERTION".into()),
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": purpose(&c.kind),
            "supplier": c.supplier.as_ref().map_or_else(|| "NOASSERTION".to_owned(), |s| format!("Organization: {s}")),
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(purl) = &c.purl {
                o.insert(
                    "externalRefs".into(),
                    json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}]),
                );
            }
            if let Some(h) = &c.sha256 {
                o.insert(
                    "checksums".into(),
                    json!([{"algorithm": "SHA256", "checksumValue": h}]),
                );
            }
            if let Some(d) = &c.description {
                o.insert("summary".into(), json!(d));
            }
        }
        packages.push(v);
        for dep in &c.depends_on {
            if let Some(dep_id) = ids.get(dep.as_str()) {
                relationships.push(json!({
                    "spdxElementId": id,
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": dep_id,
                }));
            }
        }
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} {} SBOM", p.info.name, p.info.version),
        "documentNamespace": format!(
            "https://example.invalid/bulwark/spdx/{}/{}-{}",
            p.info.id,
            p.info.version,
            uuid_for(&p.info.id, &format!("spdx:{}", p.info.version))
        ),
        "creationInfo": {
            "created": timestamp(p.info.version_date),
            "creators": [
                format!("Organization: {}", p.info.maker),
                format!("Tool: bulwark-comply-{}", env!("CARGO_PKG_VERSION")),
            ],
            "comment": format!("Generated from the product file version {} of {}.", p.info.version, fmt_date(p.info.version_date)),
        },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_licences_become_expressions() {
        assert_eq!(licence_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(licence_expression("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
    }

    #[test]
    fn spdx_ids_hold_only_allowed_characters() {
        assert_eq!(
            spdx_id("Package", 3, "serde_json"),
            "SPDXRef-Package-3-serde-json"
        );
    }

    #[test]
    fn garbage_metadata_is_an_error_not_a_panic() {
        let m = Path::new("Cargo.toml");
        assert!(cargo_tree("", "x", m).is_err());
        assert!(cargo_tree("{\"packages\":[],\"resolve\":null}", "x", m).is_err());
        assert!(cargo_tree("{\"packages\":[],\"resolve\":{\"nodes\":[]}}", "x", m).is_err());
    }
}
