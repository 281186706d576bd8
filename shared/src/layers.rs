//! The layering rule of the crate (see lib.rs): a module may import from
//! its own layer and the layers below it, never from one above. Checked
//! on the source text, so a new upward import fails here with the file
//! and line that made it.

use std::path::{Path, PathBuf};

/// Layers, lowest first, by the top-level module a path starts with.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("layout", 0),
    ("sys", 0),
    ("testing", 0),
    ("format", 1),
    ("store", 2),
    ("ops", 3),
    ("cli", 4),
];

fn layer_of_module(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == name).map(|(_, l)| *l)
}

/// The layer a source file belongs to, from its path under src/.
fn layer_of_file(rel: &Path) -> Option<u8> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    layer_of_module(first.strip_suffix(".rs").unwrap_or(first))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::NAME` in code (comments and doc links aside), with its
/// line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let preceded = rest[..i].chars().last();
            if !matches!(preceded, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':')
            {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn imports_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        let Some(own) = layer_of_file(&rel) else {
            continue; // lib.rs and this test
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name) in crate_paths(&text) {
            // Error and Result are re-exported at the root from error.rs.
            let target = match name.as_str() {
                "Error" | "Result" | "ExitCode" => Some(0),
                n => layer_of_module(n),
            };
            match target {
                Some(t) if t <= own => {}
                Some(_) => upward.push(format!("{}:{line}: crate::{name}", rel.display())),
                None => upward.push(format!(
                    "{}:{line}: crate::{name} is a root alias; use its layered path",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_and_skips_comments() {
    let found = crate_paths("use crate::ops::put; // crate::cli\nlet x = $crate::y; a::crate::z;");
    assert_eq!(found, vec![(1, "ops".to_string())]);
}
