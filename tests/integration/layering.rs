//! Guards the crate's layering (docs/ARCHITECTURE.md): a top-level module of `src/` may import
//! only modules of lower layers, never one above it nor a peer of its own layer, so the
//! top-level modules form a DAG. It reads every `crate::` (and `$crate::`, `super::` reaching the
//! crate root) path in the code of `src/` — comments and doc comments excluded, test modules
//! included — and fails naming the file, the line and the import.
//!
//! It also guards the size of the source files: no file holds more than 800 lines of non-test
//! code.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["core"],
    &["metrics", "traces"],
    &["context", "db"],
    &["logging", "sentry", "client"],
    &["layer"],
    &["obs"],
    &["axum", "macros", "monitoring", "reqwest"],
];

/// Items the crate root re-exports, and the module that defines each (a path through the root
/// is an import of that module).
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Obs", "obs"),
    ("ObsBuilder", "obs"),
    ("ObsGuard", "obs"),
    ("layer", "obs"),
    ("client_layer", "obs"),
    ("ClientLayer", "client"),
    ("ClientService", "client"),
    ("ClientFuture", "client"),
    ("ClientBody", "client"),
    ("metrics_service", "obs"),
    ("Error", "core"),
    ("CorrelationId", "core"),
    ("Outcome", "core"),
    ("GrpcCode", "core"),
    ("Severity", "core"),
    ("names", "core"),
    ("env", "core"),
    ("DEFAULT_SENSITIVE", "core"),
    ("correlation_id", "context"),
    ("ObsLayer", "layer"),
    ("ObsService", "layer"),
    ("Principal", "layer"),
    ("ResponseBody", "layer"),
    ("ResponseFuture", "layer"),
    ("Route", "layer"),
    ("RouteExtractor", "layer"),
    ("DEFAULT_LOG_HEADERS", "layer"),
    ("LogFormat", "logging"),
    ("Counter", "metrics"),
    ("Gauge", "metrics"),
    ("Histogram", "metrics"),
    ("HistogramTimer", "metrics"),
    ("MetricsService", "metrics"),
    ("DEFAULT_DURATION_BUCKETS", "metrics"),
    ("OtlpProtocol", "traces"),
    // The macros' support module re-exports business-metric internals.
    ("__private", "metrics"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/`: `src/traces/export.rs` → `["traces", "export"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a line: without a `//` comment and with string literals blanked. Doc comments,
/// comments and strings are not imports.
fn code_of(line: &str) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return String::new();
    }
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
            }
            '"' => {
                in_str = !in_str;
                out.push('"');
            }
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            // The character literal `'"'` opens no string.
            '\'' if !in_str && chars.peek() == Some(&'"') => {
                chars.next();
                out.push_str("'\"");
            }
            _ if in_str => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// The first segments named after `crate::` in `code` (`crate::a::b` → `a`,
/// `crate::{a, b::c}` → `a`, `b`), and `!` appended for a macro (`crate::m!` → `m!`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `foo_crate::`, not the crate root
        }
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of a brace group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first_segment(&item, &mut out);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            push_first_segment(&item, &mut out);
        } else {
            push_first_segment(after, &mut out);
        }
    }
    out
}

fn push_first_segment(path: &str, out: &mut Vec<String>) {
    let path = path.trim();
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || name == "self" {
        return;
    }
    let is_macro = path[name.len()..].starts_with('!');
    out.push(if is_macro { format!("{name}!") } else { name });
}

/// The top-level module a path's first segment lands in.
fn target_module(first: &str, modules: &[String]) -> Result<String, String> {
    if first.ends_with('!') {
        return Ok("macros".into());
    }
    if modules.iter().any(|m| m == first) {
        return Ok(first.to_string());
    }
    ROOT_ITEMS
        .iter()
        .find(|(item, _)| *item == first)
        .map(|(_, module)| module.to_string())
        .ok_or_else(|| {
            format!("`crate::{first}` is neither a module nor a known root re-export: add it to ROOT_ITEMS in tests/integration/layering.rs")
        })
}

struct Violation {
    file: String,
    line: usize,
    text: String,
    why: String,
}

fn violations(src: &Path) -> Vec<Violation> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: Vec<String> = files
        .iter()
        .filter_map(|f| module_path(f.strip_prefix(src).unwrap()).first().cloned())
        .collect();
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(src).unwrap();
        let path = module_path(rel);
        let Some(own) = path.first() else {
            continue; // lib.rs: the crate root may use anything
        };
        let own_layer = layer_of(own).unwrap_or_else(|| {
            panic!("src/{}: module `{own}` is in no layer of tests/integration/layering.rs; add it to LAYERS and docs/ARCHITECTURE.md", rel.display())
        });
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            let code = code.as_str();
            let mut firsts = crate_paths(code);
            // `super::` chains that climb to the crate root.
            let chain = "super::".repeat(path.len());
            if let Some(at) = code.find(&chain) {
                push_first_segment(&code[at + chain.len()..], &mut firsts);
            }
            for first in firsts {
                let target = match target_module(&first, &modules) {
                    Ok(t) => t,
                    Err(why) => {
                        found.push(Violation {
                            file: format!("src/{}", rel.display()),
                            line: n + 1,
                            text: line.trim().to_string(),
                            why,
                        });
                        continue;
                    }
                };
                if &target == own {
                    continue;
                }
                let Some(target_layer) = layer_of(&target) else {
                    continue;
                };
                if target_layer >= own_layer {
                    let kind = if target_layer == own_layer {
                        "a peer in the same layer"
                    } else {
                        "a module above it"
                    };
                    found.push(Violation {
                        file: format!("src/{}", rel.display()),
                        line: n + 1,
                        text: line.trim().to_string(),
                        why: format!("`{own}` (layer {own_layer}) imports `{target}` (layer {target_layer}), {kind}"),
                    });
                }
            }
        }
    }
    found
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_one_above_it_or_a_peer() {
    // The walk reaches every module of the table (no vacuous pass on a wrong directory).
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            files.iter().any(|f| {
                module_path(f.strip_prefix(src_dir()).unwrap()).first() == Some(&module.to_string())
            }),
            "no file of module `{module}` under src/"
        );
    }
    let found = violations(&src_dir());
    let report: Vec<String> = found
        .iter()
        .map(|v| format!("{}:{}: {}\n    {}", v.file, v.line, v.why, v.text))
        .collect();
    assert!(
        found.is_empty(),
        "layering violations (see docs/ARCHITECTURE.md):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_guard_catches_upward_and_peer_imports() {
    // A scratch tree with one import of each kind the guard must catch, and allowed ones.
    let dir = std::env::temp_dir().join(format!("mercenary-layering-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("core")).unwrap();
    fs::create_dir_all(dir.join("metrics")).unwrap();
    fs::create_dir_all(dir.join("traces")).unwrap();
    fs::write(dir.join("lib.rs"), "use crate::obs::Obs;\n").unwrap();
    fs::write(
        dir.join("obs.rs"),
        "use crate::{core::error::Error, metrics};\n",
    )
    .unwrap();
    fs::write(
        dir.join("core/mod.rs"),
        "// use crate::obs::Obs; (a comment)\nlet s = \"crate::obs\";\nuse crate::Obs;\n",
    )
    .unwrap();
    fs::write(
        dir.join("metrics/mod.rs"),
        "use crate::{core::names, traces::{a, b}};\nfn f() { crate::audit!(x); }\n",
    )
    .unwrap();
    fs::write(
        dir.join("traces/sampler.rs"),
        "use super::super::layer::Thing;\nuse super::record::Span;\n",
    )
    .unwrap();
    fs::write(dir.join("layer.rs"), "use crate::Unknown;\n").unwrap();
    let found = violations(&dir);
    let _ = fs::remove_dir_all(&dir);
    let summary: Vec<(String, usize, String)> = found
        .iter()
        .map(|v| (v.file.clone(), v.line, v.why.clone()))
        .collect();
    let has = |file: &str, line: usize, word: &str| {
        summary
            .iter()
            .any(|(f, l, w)| f.ends_with(file) && *l == line && w.contains(word))
    };
    assert!(has("core/mod.rs", 3, "a module above it"), "{summary:#?}");
    assert!(has("metrics/mod.rs", 1, "a peer"), "{summary:#?}");
    assert!(has("metrics/mod.rs", 2, "`macros`"), "{summary:#?}");
    assert!(has("traces/sampler.rs", 1, "`layer`"), "{summary:#?}");
    assert!(has("layer.rs", 1, "known root re-export"), "{summary:#?}");
    assert_eq!(found.len(), 5, "only those five: {summary:#?}");
}

/// Lines of a file outside `#[cfg(test)]` modules.
fn non_test_lines(text: &str) -> usize {
    let mut count = 0;
    let mut skipping = false;
    let mut depth = 0i64;
    let mut pending_cfg = false;
    for line in text.lines() {
        let t = line.trim();
        if skipping {
            depth += t.matches('{').count() as i64 - t.matches('}').count() as i64;
            if depth <= 0 && t.contains('}') {
                skipping = false;
            }
            continue;
        }
        if t.starts_with("#[cfg(") && t.contains("test") {
            pending_cfg = true;
            continue;
        }
        if pending_cfg && t.starts_with("mod ") && t.ends_with('{') {
            skipping = true;
            depth = 1;
            pending_cfg = false;
            continue;
        }
        pending_cfg = false;
        count += 1;
    }
    count
}

#[test]
fn no_source_file_holds_over_800_lines_of_non_test_code() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let big: BTreeMap<String, usize> = files
        .iter()
        .map(|f| {
            let text = fs::read_to_string(f).unwrap();
            (
                f.strip_prefix(&src).unwrap().display().to_string(),
                non_test_lines(&text),
            )
        })
        .filter(|(_, n)| *n > 800)
        .collect();
    assert!(big.is_empty(), "split these along their concerns: {big:?}");
    assert_eq!(
        non_test_lines("fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() {\n    }\n}\nfn c() {}\n"),
        2
    );
}
