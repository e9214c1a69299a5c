//! Tidy: repository invariants enforced by `cargo test` (core purity, `//!` headers, no `dbg!`/`todo!`).
//!
//! Each check is a thin `#[test]` over a pure detector; the `detectors` module at the bottom feeds the
//! detectors bad input to prove every check can fail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// Crates that must never be reachable from `duroxide-core` through normal dependencies: async
/// runtimes, database drivers and Python bindings belong to the layers above (design.md, invariant 1).
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "rusqlite",
    "sqlx",
    "tokio-postgres",
    "deadpool",
    "deadpool-postgres",
    "pyo3",
];

const CORE: &str = "duroxide-core";

/// Directories, relative to the workspace root, whose Rust sources the tidy checks cover.
const SOURCE_DIRS: &[&str] = &["crates", "xtask"];

/// Macros that mark unfinished or debugging code; clippy denies them too, but only in crates that opt
/// into the workspace lints and only in code that gets compiled.
const FORBIDDEN_MACROS: &[&str] = &["dbg!(", "todo!("];

/// This file spells out the forbidden macros, so the macro check skips it.
const THIS_FILE: &str = "xtask/tests/tidy.rs";

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
}

#[test]
fn core_has_no_forbidden_dependencies() {
    // `--all-features` so a forbidden crate hidden behind an optional feature of the core is caught too.
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(workspace_root())
        .output()
        .expect("could not run `cargo metadata`");
    assert!(
        output.status.success(),
        "`cargo metadata` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let graph = DepGraph::from_metadata_json(&output.stdout).expect("unreadable `cargo metadata` output");
    let violations = graph
        .forbidden_paths(CORE, FORBIDDEN_IN_CORE)
        .expect("duroxide-core is in the workspace");
    assert!(
        violations.is_empty(),
        "{CORE} must stay pure, but its normal dependency tree contains:\n{}",
        violations
            .iter()
            .map(|path| format!("  {} (via {})", path[path.len() - 1], path.join(" -> ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_source_file_starts_with_a_doc_line() {
    let offenders: Vec<String> = rust_sources(workspace_root())
        .into_iter()
        .filter(|(_, source)| !has_doc_header(source))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "these files do not start with a `//!` line saying what they are for:\n  {}",
        offenders.join("\n  ")
    );
}

#[test]
fn no_debugging_or_unfinished_macros() {
    let offenders: Vec<String> = rust_sources(workspace_root())
        .into_iter()
        .filter(|(path, _)| path != THIS_FILE)
        .flat_map(|(path, source)| {
            forbidden_macro_uses(&source)
                .into_iter()
                .map(move |(line, mac)| format!("{path}:{line}: {mac}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "forbidden macros in sources:\n  {}",
        offenders.join("\n  ")
    );
}

/// The resolved packages of a workspace, keyed by package id, with only their normal dependency edges.
#[derive(Debug, Default)]
struct DepGraph {
    packages: BTreeMap<String, GraphPackage>,
}

#[derive(Debug, Default)]
struct GraphPackage {
    name: String,
    normal_deps: Vec<String>,
}

/// The few fields of `cargo metadata --format-version 1` the purity check reads.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetadataPackage>,
    resolve: Option<Resolve>,
}

#[derive(Deserialize)]
struct MetadataPackage {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<ResolveNode>,
}

#[derive(Deserialize)]
struct ResolveNode {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    /// `null` for a normal dependency, otherwise `"dev"` or `"build"`.
    kind: Option<String>,
}

impl DepGraph {
    fn from_metadata_json(json: &[u8]) -> serde_json::Result<Self> {
        let metadata: Metadata = serde_json::from_slice(json)?;
        let mut graph = DepGraph::default();
        for package in metadata.packages {
            graph.packages.insert(
                package.id,
                GraphPackage {
                    name: package.name,
                    normal_deps: Vec::new(),
                },
            );
        }
        for node in metadata.resolve.map(|r| r.nodes).unwrap_or_default() {
            // A dependency listed both as normal and as dev counts as normal: it ships with the crate.
            let normal_deps = node
                .deps
                .into_iter()
                .filter(|dep| dep.dep_kinds.iter().any(|k| k.kind.is_none()))
                .map(|dep| dep.pkg)
                .collect();
            if let Some(package) = graph.packages.get_mut(&node.id) {
                package.normal_deps = normal_deps;
            }
        }
        Ok(graph)
    }

    /// For each package named in `forbidden` that `root` reaches, the shortest chain of package names
    /// from `root` to it. `None` if no package is called `root`.
    fn forbidden_paths(&self, root: &str, forbidden: &[&str]) -> Option<Vec<Vec<String>>> {
        let start = self
            .packages
            .iter()
            .find(|(_, p)| p.name == root)
            .map(|(id, _)| id.as_str())?;
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen = BTreeSet::from([start]);
        let mut queue = VecDeque::from([start]);
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            let Some(package) = self.packages.get(id) else {
                continue;
            };
            if forbidden.contains(&package.name.as_str()) {
                let mut path = vec![package.name.clone()];
                let mut at = id;
                while let Some(&up) = parent.get(at) {
                    path.push(self.packages[up].name.clone());
                    at = up;
                }
                path.reverse();
                found.push(path);
            }
            for dep in &package.normal_deps {
                if seen.insert(dep.as_str()) {
                    parent.insert(dep.as_str(), id);
                    queue.push_back(dep.as_str());
                }
            }
        }
        Some(found)
    }
}

/// Whether a source file opens with a `//!` line, as the style guide asks of every file.
fn has_doc_header(source: &str) -> bool {
    source.lines().next().is_some_and(|line| line.starts_with("//!"))
}

/// Every use of a forbidden macro in `source`, as (1-based line number, macro).
fn forbidden_macro_uses(source: &str) -> Vec<(usize, &'static str)> {
    source
        .lines()
        .enumerate()
        .flat_map(|(index, line)| {
            FORBIDDEN_MACROS
                .iter()
                .filter(move |mac| line.contains(*mac))
                .map(move |mac| (index + 1, *mac))
        })
        .collect()
}

/// All `.rs` files under `SOURCE_DIRS` of `root`, tracked by git or not, skipping build output, as
/// (path relative to `root` with `/` separators, contents), sorted by path.
fn rust_sources(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        collect_rust_files(&root.join(dir), &mut files);
    }
    let mut sources: Vec<(String, String)> = files
        .into_iter()
        .map(|file| {
            let source = std::fs::read_to_string(&file)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
            let relative = file.strip_prefix(root).expect("collected under root");
            let relative: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            (relative.join("/"), source)
        })
        .collect();
    sources.sort();
    sources
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    // A directory that does not exist (yet) has no sources to check.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
        let path = entry.path();
        let file_type = entry
            .file_type()
            .unwrap_or_else(|err| panic!("cannot stat {}: {err}", path.display()));
        if file_type.is_dir() {
            if entry.file_name() != "target" {
                collect_rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The detectors above, shown to fail on bad input.
mod detectors {
    use super::*;

    /// A graph whose package ids are their names; edges are normal dependencies.
    fn graph(edges: &[(&str, &[&str])]) -> DepGraph {
        let mut graph = DepGraph::default();
        for (name, deps) in edges {
            graph.packages.insert(
                (*name).to_owned(),
                GraphPackage {
                    name: (*name).to_owned(),
                    normal_deps: deps.iter().map(|d| (*d).to_owned()).collect(),
                },
            );
        }
        graph
    }

    #[test]
    fn finds_a_forbidden_crate_and_the_path_to_it() {
        let graph = graph(&[
            ("duroxide-core", &["serde", "helper"]),
            ("serde", &[]),
            ("helper", &["inner"]),
            ("inner", &["tokio"]),
            ("tokio", &["mio"]),
            ("mio", &[]),
        ]);
        let found = graph.forbidden_paths(CORE, FORBIDDEN_IN_CORE).unwrap();
        assert_eq!(found, vec![vec!["duroxide-core", "helper", "inner", "tokio"]]);
    }

    #[test]
    fn reports_every_forbidden_crate() {
        let graph = graph(&[
            ("duroxide-core", &["deadpool-postgres", "pyo3"]),
            ("deadpool-postgres", &["tokio-postgres"]),
            ("tokio-postgres", &[]),
            ("pyo3", &[]),
        ]);
        let found = graph.forbidden_paths(CORE, FORBIDDEN_IN_CORE).unwrap();
        let ends: Vec<&str> = found.iter().map(|path| path[path.len() - 1].as_str()).collect();
        assert_eq!(ends, ["deadpool-postgres", "pyo3", "tokio-postgres"]);
    }

    #[test]
    fn a_clean_tree_passes_even_when_forbidden_crates_exist_elsewhere() {
        let graph = graph(&[
            ("duroxide-core", &["serde"]),
            ("serde", &[]),
            ("duroxide-runtime", &["duroxide-core", "tokio"]),
            ("tokio", &[]),
        ]);
        assert_eq!(graph.forbidden_paths(CORE, FORBIDDEN_IN_CORE), Some(vec![]));
        assert_eq!(graph.forbidden_paths("missing", FORBIDDEN_IN_CORE), None);
    }

    #[test]
    fn only_normal_edges_of_cargo_metadata_count() {
        let json = r#"{
            "packages": [
                {"id": "core 0.1", "name": "duroxide-core"},
                {"id": "tokio 1", "name": "tokio"},
                {"id": "rusqlite 0.32", "name": "rusqlite"},
                {"id": "pyo3 0.22", "name": "pyo3"}
            ],
            "resolve": {"nodes": [
                {"id": "core 0.1", "deps": [
                    {"pkg": "tokio 1", "dep_kinds": [{"kind": "dev", "target": null}]},
                    {"pkg": "rusqlite 0.32", "dep_kinds": [{"kind": "build", "target": null}]},
                    {"pkg": "pyo3 0.22", "dep_kinds": [{"kind": "dev", "target": null}, {"kind": null, "target": "cfg(unix)"}]}
                ]},
                {"id": "tokio 1", "deps": []},
                {"id": "rusqlite 0.32", "deps": []},
                {"id": "pyo3 0.22", "deps": []}
            ]}
        }"#;
        let graph = DepGraph::from_metadata_json(json.as_bytes()).unwrap();
        let found = graph.forbidden_paths(CORE, FORBIDDEN_IN_CORE).unwrap();
        assert_eq!(found, vec![vec!["duroxide-core", "pyo3"]]);
    }

    #[test]
    fn doc_header_must_be_the_first_line() {
        assert!(has_doc_header("//! What this file is for.\n\nfn main() {}\n"));
        assert!(!has_doc_header("fn main() {}\n"));
        assert!(!has_doc_header("// A plain comment.\n//! Too late.\n"));
        assert!(!has_doc_header("\n//! After a blank line.\n"));
        assert!(!has_doc_header(""));
    }

    #[test]
    fn finds_forbidden_macros_with_line_numbers() {
        let source = "//! Example.\nfn f() {\n    dbg!(1);\n    let _ = 2;\n    todo!()\n}\n";
        assert_eq!(forbidden_macro_uses(source), [(3, "dbg!("), (5, "todo!(")]);
        assert!(forbidden_macro_uses("//! Clean.\nfn f() -> u8 { 1 }\n").is_empty());
    }

    #[test]
    fn source_walk_covers_untracked_files_and_skips_target() {
        let root = tempfile::tempdir().unwrap();
        let write = |relative: &str, contents: &str| {
            let path = root.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        };
        write("crates/a/src/lib.rs", "//! Fine.\n");
        write("crates/a/src/bare.rs", "fn f() {}\n");
        write("crates/a/target/debug/build/out.rs", "fn generated() {}\n");
        write("xtask/src/main.rs", "//! Fine.\n");
        write("elsewhere/skipped.rs", "fn f() {}\n");
        write("crates/a/README.md", "not rust\n");

        let paths: Vec<String> = rust_sources(root.path())
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            paths,
            ["crates/a/src/bare.rs", "crates/a/src/lib.rs", "xtask/src/main.rs"]
        );
        let headerless: Vec<String> = rust_sources(root.path())
            .into_iter()
            .filter(|(_, source)| !has_doc_header(source))
            .map(|(path, _)| path)
            .collect();
        assert_eq!(headerless, ["crates/a/src/bare.rs"]);
    }
}
