//! Shared helpers: the example product, checked and built once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use comply::{BuildOptions, Output, Product, ProductFile};

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn example_path() -> PathBuf {
    repo_root().join("examples/smart-plug/product.toml")
}

pub(crate) fn example_text() -> String {
    std::fs::read_to_string(example_path()).unwrap()
}

pub(crate) fn example_product() -> Product {
    ProductFile::parse(&example_text())
        .unwrap()
        .check()
        .unwrap_or_else(|gaps| {
            let list: Vec<String> = gaps.iter().map(ToString::to_string).collect();
            panic!("the example has gaps:\n{}", list.join("\n"))
        })
}

pub(crate) fn options() -> BuildOptions {
    BuildOptions {
        base_dir: example_path().parent().unwrap().to_path_buf(),
        cargo_metadata: None,
    }
}

/// The example's outputs, built once per test binary.
pub(crate) fn example_outputs() -> &'static [Output] {
    static OUTPUTS: OnceLock<Vec<Output>> = OnceLock::new();
    OUTPUTS.get_or_init(|| comply::build(&example_product(), &options()).unwrap())
}

pub(crate) fn output(path: &str) -> &'static str {
    let o = example_outputs()
        .iter()
        .find(|o| o.path == path)
        .unwrap_or_else(|| panic!("no output {path}"));
    std::str::from_utf8(&o.bytes).unwrap()
}

/// Writes an output to a temporary file for an external validator.
pub(crate) fn output_file(dir: &Path, path: &str) -> PathBuf {
    let file = dir.join(path.replace('/', "_"));
    std::fs::write(&file, output(path)).unwrap();
    file
}

/// A Python 3 with `module` importable, or a failure that says what to
/// install. Never skips: a missing validator is a failed test.
pub(crate) fn python_with(module: &str, install: &str) -> &'static str {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3 with the `{module}` module is needed: pip install {install} (bash scripts/test.sh installs it)"
    );
    "python3"
}
