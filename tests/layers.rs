//! The shape of the crate, checked: `src/lib.rs`'s map lists every
//! top-level module bottom first, and every `crate::` path in a module's
//! code (tests excluded) names a module listed before it. So dependencies
//! point one way and there is no cycle; a new `use` that breaks the map
//! fails here with the file and line.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The module names of the map, in the order they are first mentioned
/// (`[`name`]` links in the `//!` lines of src/lib.rs).
fn map_order(lib: &str) -> Vec<String> {
    let mut order = Vec::new();
    for line in lib.lines().take_while(|l| !l.starts_with("pub mod")) {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let mut rest = doc;
        while let Some(start) = rest.find("[`") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find("`]") else { break };
            let name = &rest[..end];
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !order.iter().any(|n| n == name)
            {
                order.push(name.to_string());
            }
            rest = &rest[end + 2..];
        }
    }
    order
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // Test modules and the binary are not part of the layering.
            if name != "tests" && name != "bin" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// `crate::name` paths in `code`, with their line numbers.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            // `sensor_hub_crate::` or `$crate::` are not ours.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn every_module_depends_only_on_modules_listed_before_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let order = map_order(&lib);
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();

    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let mapped: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(
        declared, mapped,
        "src/lib.rs's map must list exactly the modules it declares"
    );

    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut edges = 0;
    for file in &files {
        let relative = file.strip_prefix(root.join("src")).unwrap();
        let first = relative.components().next().unwrap();
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Code only: a file's unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let Some(&own) = rank.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` is not in the map",
                relative.display()
            ));
            continue;
        };
        for (line, dep) in crate_paths(code) {
            if dep == module {
                continue;
            }
            edges += 1;
            match rank.get(dep.as_str()) {
                Some(&d) if d < own => {}
                Some(_) => violations.push(format!(
                    "src/{}:{line}: `{module}` uses `{dep}`, which the map lists after it",
                    relative.display()
                )),
                None => violations.push(format!(
                    "src/{}:{line}: `{module}` uses `crate::{dep}`, which is not a module of the map",
                    relative.display()
                )),
            }
        }
    }
    assert!(edges > 50, "the scan found the crate's uses ({edges})");
    assert!(
        violations.is_empty(),
        "dependencies that break src/lib.rs's layering:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_what_it_must() {
    let lib =
        "//! * [`clock`]: time.\n//! * [`core`]: [`core::Core`] and [`clock`].\npub mod clock;\n";
    assert_eq!(map_order(lib), ["clock", "core"]);
    let code = "use crate::clock::Now;\nlet x = $crate::y; // crate::views::x\nfoo_crate::z";
    assert_eq!(
        crate_paths(code),
        [(1, "clock".to_string()), (2, "views".to_string())]
    );
}
