//! The shape of the source tree, kept from decaying (issue 17): files small enough to
//! read in one sitting, and top-level modules that depend on each other one way (no
//! circle of any length).
//!
//! Reads `src/` as text; starts no server.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest a source file may grow before it is split by job.
const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    files_under("src")
}

fn files_under(dir: &str) -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
            (rel, text)
        })
        .collect()
}

/// The top-level module a file belongs to: `cdc/apply.rs` → `cdc`, `check.rs` → `check`.
fn top_module(rel: &str) -> String {
    let first = rel.split('/').next().unwrap_or(rel);
    first.trim_end_matches(".rs").to_string()
}

/// `crate::x` references in code (comments, doc links included, do not count).
fn dependencies(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let from = top_module(&rel);
        let deps = graph.entry(from.clone()).or_default();
        deps.extend(dependencies(&text).into_iter().filter(|to| *to != from));
    }
    graph
}

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|(rel, text)| {
            let lines = text.lines().count();
            (lines > MAX_LINES).then(|| format!("{rel}: {lines} lines"))
        })
        .collect();
    assert!(long.is_empty(), "split these by job: {long:?}");
}

#[test]
fn no_test_file_is_longer_than_800_lines() {
    let long: Vec<String> = files_under("tests")
        .into_iter()
        .filter_map(|(rel, text)| {
            let lines = text.lines().count();
            (lines > MAX_LINES).then(|| format!("tests/{rel}: {lines} lines"))
        })
        .collect();
    assert!(long.is_empty(), "split these by job: {long:?}");
}

/// A path of dependencies from `from` back to `from`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty path");
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(from.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_depend_one_way() {
    let graph = module_graph();
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import circles between top-level modules of src/ (cut them): {cycles:#?}"
    );
}

#[test]
fn the_cut_dependencies_stay_cut() {
    let graph = module_graph();
    let forbidden = [
        // The copy decides shape changes with crate::schema, not the stream's module.
        ("snapshot", "cdc"),
        ("snapshot", "resync"),
        // Preflight checks return crate::check_result; the report lives above them.
        ("source", "check"),
        ("sink", "check"),
        // The metrics endpoint serves status pages through a trait it owns.
        ("metrics", "status"),
        // The pure type decisions do not reach the stream or the copy.
        ("schema", "cdc"),
        ("schema", "snapshot"),
        // A resync uses the slot and membership records, not the stream that calls it.
        ("resync", "cdc"),
        ("slot", "cdc"),
        ("membership", "cdc"),
    ];
    for (from, to) in forbidden {
        let deps = graph
            .get(from)
            .unwrap_or_else(|| panic!("no module {from}"));
        assert!(!deps.contains(to), "{from} depends on {to} again");
    }
    // And the scan sees real edges, so the checks above are not vacuous.
    assert!(graph["snapshot"].contains("sink"));
    assert!(graph["cdc"].contains("resync"));
}

/// The README's Layout block: the lines between its ``` fences.
fn readme_layout() -> String {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Layout")
        .nth(1)
        .expect("README.md has a Layout section");
    section
        .split("```")
        .nth(1)
        .expect("the Layout section has a code block")
        .to_string()
}

#[test]
fn readme_layout_names_every_top_level_module_and_nothing_gone() {
    let layout = readme_layout();
    let named: BTreeSet<String> = layout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("src/"))
        .map(str::to_string)
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("src")).expect("src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let shown = if path.is_dir() {
            format!("src/{name}/")
        } else if name.ends_with(".rs") {
            format!("src/{name}")
        } else {
            continue;
        };
        if !named.contains(&shown) {
            missing.push(shown);
        }
    }
    let gone: Vec<&String> = named
        .iter()
        .filter(|p| !root.join(p.as_str()).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "README Layout does not name {missing:?}"
    );
    assert!(
        gone.is_empty(),
        "README Layout names what is not there: {gone:?}"
    );
}
