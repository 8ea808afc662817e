//! The library's layers (docs/architecture.md): a lower layer never uses a
//! higher one, so a new kind of policy is a folder under `runtime/` and
//! nothing below it learns of it. Read from the sources: every path a module
//! names (`crate::…`, `super::…`, or a re-export of the crate root) is
//! resolved to the top-level module it reaches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rows of the host crate, lowest first (docs/architecture.md): a
/// module may use its own row and those below it, never one above. Every
/// top-level module is in one row, so a new one must be placed.
const LAYERS: &[&[&str]] = &[
    // What an evaluation's store is and links, the compiled cache, limits,
    // digests, the WIT contract and its JSON forms.
    &[
        "store",
        "cache",
        "limits",
        "digest",
        "bindings",
        "admission",
        "logging",
    ],
    // Host calls, gated by grants.
    &["capabilities"],
    // One room per kind of policy.
    &["runtime"],
    // The composition root: links every runtime and capability.
    &["engine"],
    // One call under the limits.
    &["evaluation"],
    // Policies declared, fetched, loaded, combined, enforced.
    &[
        "environment",
        "group",
        "enforcement",
        "policy",
        "config",
        "source",
    ],
    // The edges: HTTP(S), the background audit, the CLI.
    &["server", "audit", "commands", "cli"],
];

/// What `environment/` may not name in its code: a capability (it reaches
/// them through the engine's `Capabilities` and their hooks only), or a
/// lookup of one by type (`Capabilities::find`).
const CAPABILITY_TYPES: &[&str] = &[
    "kubernetes",
    "Kubernetes",
    "LiveCluster",
    "ResourcesFile",
    "TracingLog",
    "tracing_log",
    "find",
];

#[test]
fn no_layer_uses_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexports = reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut violations = Vec::new();
    for file in rust_files(&src) {
        let module = module_path(&src, &file);
        let Some(top) = module.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let row = row_of(&top)
            .unwrap_or_else(|| panic!("{}: `{top}` is in no row of LAYERS", file.display()));
        for (number, line) in code_lines(&text) {
            for used in used_modules(&line, &module, &reexports) {
                if row_of(&used).is_some_and(|used_row| used_row > row) {
                    violations.push(format!(
                        "{}:{number}: `{top}` uses `{used}`, a higher layer: {}",
                        file.display(),
                        line.trim()
                    ));
                }
            }
            if top == "environment" {
                let words: Vec<&str> = line
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .collect();
                for name in CAPABILITY_TYPES.iter().filter(|name| words.contains(name)) {
                    violations.push(format!(
                        "{}:{number}: `environment` names a capability (`{name}`): {}",
                        file.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The checker itself sees each way a module can reach another.
#[test]
fn every_way_of_naming_a_module_is_seen() {
    let reexports =
        reexports("pub use engine::Engine;\npub use environment::{Environment, Policy};");
    let store = vec!["store".to_owned()];
    let wapc = ["runtime", "kubewarden", "wapc"]
        .map(str::to_owned)
        .to_vec();
    let seen = |line: &str, module: &[String]| used_modules(line, module, &reexports);
    assert_eq!(seen("use crate::engine::Engine;", &store), ["engine"]);
    assert_eq!(seen("let e: crate::Engine = x;", &store), ["engine"]);
    assert_eq!(
        seen("use crate::{Environment, limits};", &store),
        ["environment", "limits"]
    );
    assert_eq!(seen("use super::engine::Engine;", &store), ["engine"]);
    assert_eq!(
        seen("use super::super::is_core_module;", &wapc),
        ["runtime"]
    );
    assert_eq!(
        seen("use super::super::super::evaluation;", &wapc),
        ["evaluation"]
    );
    assert_eq!(seen("use super::host_call;", &wapc), ["runtime"]);
    let code = code_only(concat!(
        "// crate::engine\n",
        "let a = 1; /* crate::server */ let b = \"crate::audit \\\" Kubernetes\";\n",
        "let c = r#\"crate::evaluation\"#; let d = '\"'; fn f<'a>(x: &'a str) {}\n",
    ));
    assert!(
        !["crate::", "Kubernetes"]
            .iter()
            .any(|name| code.contains(name)),
        "{code}"
    );
    assert!(
        code.contains("let a = 1;") && code.contains("fn f<'a>(x: &'a str) {}"),
        "{code}"
    );
    assert_eq!(code.lines().count(), 3);
}

/// The row of `module` in [`LAYERS`].
fn row_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The module a file is, as path segments below the crate root (`lib.rs`
/// and `main.rs` are the root: empty).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut segments: Vec<String> = relative
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        segments.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segments.pop();
    }
    segments
}

/// The lines of `text` with comments and the contents of string and
/// character literals blanked, numbered from 1: what is left is code.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    code_only(text)
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.to_owned()))
        .collect()
}

/// `text` with comments and literals' contents replaced by spaces (newlines
/// kept, so lines keep their numbers).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"…", r#"…"#, br#"…"#: ends at a quote followed by as many #.
            let open = rest.iter().position(|&c| c == '"').unwrap() + 1;
            out.extend(std::iter::repeat_n(' ', open));
            i += open;
            while i < chars.len() {
                if chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&c| c == '#')
                        .count()
                        == hashes
                {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if chars[i] == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let skip = if chars[i] == '\\' { 2 } else { 1 };
                for c in chars[i..].iter().take(skip) {
                    out.push(blank(*c));
                }
                i += skip;
            }
            out.push(' ');
            i += 1;
        } else if chars[i] == '\'' && (rest.get(1) == Some(&'\\') || rest.get(2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''), not a lifetime.
            let end = rest[2..]
                .iter()
                .position(|&c| c == '\'')
                .map_or(rest.len(), |p| p + 3);
            out.extend(std::iter::repeat_n(' ', end));
            i += end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The number of `#` of a raw string literal starting `rest`, if one does.
fn raw_string_start(rest: &[char]) -> Option<usize> {
    let after_prefix = match rest {
        ['b', 'r', ..] => 2,
        ['r', ..] => 1,
        _ => return None,
    };
    let hashes = rest[after_prefix..]
        .iter()
        .take_while(|&&c| c == '#')
        .count();
    (rest.get(after_prefix + hashes) == Some(&'"')).then_some(hashes)
}

/// Names the crate root re-exports, and the module each comes from
/// (`pub use engine::Engine;` → `Engine` → `engine`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.trim_end_matches(';').split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or_default();
            if !name.is_empty() {
                names.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    names
}

/// The top-level modules `line` (of the module at `module`) names.
fn used_modules(
    line: &str,
    module: &[String],
    reexports: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut used: Vec<String> = Vec::new();
    let mut rest = line;
    while let Some(at) = find_path_start(rest) {
        let (names, taken) = resolve(&rest[at..], module);
        rest = &rest[at + taken..];
        for name in names {
            let name = reexports.get(&name).cloned().unwrap_or(name);
            if name.starts_with(|c: char| c.is_ascii_lowercase()) && !used.contains(&name) {
                used.push(name);
            }
        }
    }
    used
}

/// Where the next `crate::` or `super::` path starts in `text`.
fn find_path_start(text: &str) -> Option<usize> {
    let candidates = ["crate::", "super::"].map(|prefix| {
        text.match_indices(prefix).map(|(i, _)| i).find(|&i| {
            // A whole word: not `my_crate::`, not `supersuper::`.
            !text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    });
    candidates.into_iter().flatten().min()
}

/// Resolves the path at the start of `path`, written in `module`: the
/// top-level modules (or root items) it reaches, and how much of `path` it
/// took.
fn resolve(path: &str, module: &[String]) -> (Vec<String>, usize) {
    let mut depth = module.len();
    let mut at = 0;
    if path.starts_with("crate::") {
        depth = 0;
        at = "crate::".len();
    } else {
        while path[at..].starts_with("super::") {
            depth = depth.saturating_sub(1);
            at += "super::".len();
        }
    }
    if depth > 0 {
        // Still inside its own top-level module.
        return (module[..1].to_vec(), at);
    }
    let rest = &path[at..];
    if let Some(group) = rest.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        let items = group[..end]
            .split(',')
            .map(|item| {
                item.trim()
                    .split("::")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .filter(|item| !item.is_empty())
            .collect();
        return (items, at + 1 + end);
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (vec![rest[..end].to_owned()], at + end)
}
