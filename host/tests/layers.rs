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

/// The rules of the runtime seam (issue 21), each as written there: a
/// module under the first may not use any of the second. [`LAYERS`] implies
/// them; they are stated again so that a change of the rows that would
/// break one fails here, by name.
const SEAM_RULES: &[(&[&str], &[&str])] = &[
    (
        &["store", "cache", "limits"],
        &["engine", "runtime", "evaluation", "environment", "server"],
    ),
    (
        &["runtime"],
        &["evaluation", "environment", "server", "audit", "commands"],
    ),
];

#[test]
fn no_layer_uses_a_higher_one() {
    let crate_uses = uses();
    let mut violations = Vec::new();
    for used in &crate_uses {
        let row = row_of(&used.top)
            .unwrap_or_else(|| panic!("{}: `{}` is in no row of LAYERS", used.at, used.top));
        if row_of(&used.target).is_some_and(|target_row| target_row > row) {
            violations.push(format!(
                "{}: `{}` uses `{}`, a higher layer",
                used.at, used.top, used.target
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_rules_of_the_runtime_seam_hold() {
    let crate_uses = uses();
    let mut violations = Vec::new();
    for (lower, higher) in SEAM_RULES {
        for used in crate_uses
            .iter()
            .filter(|u| lower.contains(&u.top.as_str()))
        {
            if higher.contains(&used.target.as_str()) {
                violations.push(format!(
                    "{}: `{}` uses `{}`",
                    used.at, used.top, used.target
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// `environment/` reaches the capabilities only through the engine's
/// `Capabilities` and their hooks: it names no capability's module, no type
/// declared in one, and looks none up by type (`Capabilities::find::<C>`).
#[test]
fn environment_names_no_capability() {
    let src = src();
    let names = capability_names(&src);
    assert!(
        ["kubernetes", "Kubernetes", "LiveCluster", "tracing_log"]
            .iter()
            .all(|name| names.contains(&name.to_string())),
        "the capabilities are not where this test looks for them: {names:?}"
    );
    let mut violations = Vec::new();
    for file in rust_files(&src.join("environment")) {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (number, line) in code.lines().enumerate() {
            let at = format!("{}:{}", file.display(), number + 1);
            let words: Vec<&str> = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .collect();
            for name in names.iter().filter(|name| words.contains(&name.as_str())) {
                violations.push(format!(
                    "{at}: names the capability `{name}`: {}",
                    line.trim()
                ));
            }
            if line.contains("find::<") {
                violations.push(format!(
                    "{at}: looks a capability up by type: {}",
                    line.trim()
                ));
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
    let seen = |code: &str, module: &[String]| -> Vec<String> {
        used_modules(&code_only(code), module, &reexports)
            .into_iter()
            .map(|(_, target)| target)
            .collect()
    };
    assert_eq!(seen("use crate::engine::Engine;", &store), ["engine"]);
    assert_eq!(seen("let e: crate::Engine = x;", &store), ["engine"]);
    assert_eq!(
        seen("use crate::{Environment, limits};", &store),
        ["environment", "limits"]
    );
    // Groups as rustfmt writes them: over several lines, nested.
    assert_eq!(
        seen(
            "use crate::{\n    limits::{Limits, X},\n    runtime::{self, Call},\n    Engine,\n};",
            &store
        ),
        ["limits", "runtime", "engine"]
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
    assert_eq!(
        seen(
            "use super::{\n    host_call,\n};\nuse super::super::super::{\n    evaluation::evaluate,\n};",
            &wapc
        ),
        ["runtime", "evaluation"]
    );
    // Paths in comments and literals are not uses.
    let code = code_only(concat!(
        "// crate::engine\n",
        "let a = 1; /* crate::server */ let b = \"crate::audit \\\" Kubernetes\";\n",
        "let c = r#\"crate::evaluation\"#; let d = '\"'; let e = '\\''; fn f<'a>(x: &'a str) {}\n",
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
    // A use is placed on the line that names the module.
    let uses = uses_in(
        "store.rs",
        "use crate::{\n    engine::Engine,\n};",
        &reexports,
    );
    assert_eq!(uses.len(), 1);
    assert_eq!(
        (uses[0].top.as_str(), uses[0].target.as_str()),
        ("store", "engine")
    );
    assert!(uses[0].at.ends_with("store.rs:2"), "{}", uses[0].at);
}

/// One use of a top-level module by a file of another.
struct Use {
    /// `file:line`.
    at: String,
    /// The top-level module of the file.
    top: String,
    /// The top-level module it uses.
    target: String,
}

/// The host crate's sources.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every use of one top-level module by another in the host crate.
fn uses() -> Vec<Use> {
    let src = src();
    let reexports = reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut uses = Vec::new();
    for file in rust_files(&src) {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        uses.extend(uses_in(
            &relative,
            &std::fs::read_to_string(&file).unwrap(),
            &reexports,
        ));
    }
    uses
}

/// The uses of other top-level modules in `text`, the file at `relative`
/// (to `src/`).
fn uses_in(relative: &str, text: &str, reexports: &BTreeMap<String, String>) -> Vec<Use> {
    let module = module_path(Path::new(relative));
    let Some(top) = module.first().cloned() else {
        // The crate roots.
        return Vec::new();
    };
    let code = code_only(text);
    used_modules(&code, &module, reexports)
        .into_iter()
        .filter(|(_, target)| *target != top)
        .map(|(offset, target)| Use {
            at: format!("{relative}:{}", code[..offset].matches('\n').count() + 1),
            top: top.clone(),
            target,
        })
        .collect()
}

/// The names `environment/` may not use: every module that implements a
/// capability (`impl Capability for …`) below `capabilities/`, and every
/// type such a module declares for others.
fn capability_names(src: &Path) -> Vec<String> {
    let capabilities = src.join("capabilities");
    let mut names = Vec::new();
    for file in rust_files(&capabilities) {
        let module = module_path(file.strip_prefix(src).unwrap());
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        // `capabilities/mod.rs` is the surface every layer may use; its own
        // placeholder capability is private.
        if module.len() < 2 || !code.contains("impl Capability for") {
            continue;
        }
        let room = &module[..2];
        if !names.contains(&room[1]) {
            names.push(room[1].clone());
        }
        for file in rust_files(&src.join(room.join("/"))).into_iter().chain(
            std::iter::once(src.join(format!("{}.rs", room.join("/")))).filter(|f| f.exists()),
        ) {
            let code = code_only(&std::fs::read_to_string(&file).unwrap());
            for line in code.lines() {
                // What it declares for the rest of the crate: `pub struct
                // X`, `pub(crate) trait Y`, … (the compiler keeps the rest
                // out of `environment/`'s reach).
                let words: Vec<&str> = line.split_whitespace().collect();
                for item in words.windows(3) {
                    if ["pub", "pub(crate)"].contains(&item[0])
                        && ["struct", "enum", "trait", "type"].contains(&item[1])
                    {
                        let name: String = item[2]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() && !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
            }
        }
    }
    names
}

/// The row of `module` in [`LAYERS`].
fn row_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// Every `.rs` file under `dir`, but for crates of their own nested there
/// (an interpreter's guest, `runtime/rego/guest`: its `crate::` is its own).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.join("Cargo.toml").exists() {
                files.extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The module a file is, as path segments below the crate root, from its
/// path relative to `src/` (`lib.rs` and `main.rs` are the root: empty).
fn module_path(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative
        .with_extension("")
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
            // A character literal ('x', '\n', '\'', '\u{41}'), not a
            // lifetime: after a backslash, the closing quote comes after the
            // escaped character.
            let (from, skip) = if rest[1] == '\\' { (3, 4) } else { (2, 3) };
            let end = rest[from.min(rest.len())..]
                .iter()
                .position(|&c| c == '\'')
                .map_or(rest.len(), |p| p + skip);
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

/// The top-level modules `code` (of the module at `module`, comments and
/// literals blanked) names, each with the offset of the path that names it.
fn used_modules(
    code: &str,
    module: &[String],
    reexports: &BTreeMap<String, String>,
) -> Vec<(usize, String)> {
    let mut used = Vec::new();
    let mut from = 0;
    while let Some(at) = find_path_start(&code[from..]).map(|at| from + at) {
        let (names, taken) = resolve(&code[at..], module);
        from = at + taken;
        for (offset, name) in names {
            let name = reexports.get(&name).cloned().unwrap_or(name);
            if name.starts_with(|c: char| c.is_ascii_lowercase()) && name != "self" {
                used.push((at + offset, name));
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
/// top-level modules (or root items) it reaches, each with its offset in
/// `path`, and how much of `path` it took.
fn resolve(path: &str, module: &[String]) -> (Vec<(usize, String)>, usize) {
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
        return (vec![(0, module[0].clone())], at);
    }
    let rest = &path[at..];
    if rest.starts_with('{') {
        // A group, perhaps over several lines, perhaps nested: the first
        // segment of each of its items.
        let (mut depth, mut item_start, mut items) = (0, 1, Vec::new());
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    let item = &rest[item_start..i];
                    let first = first_segment(item);
                    if !first.is_empty() {
                        let indent = item.len() - item.trim_start().len();
                        items.push((at + item_start + indent, first));
                    }
                    item_start = i + 1;
                    if c == '}' {
                        return (items, at + i + 1);
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        return (items, path.len());
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (vec![(at, rest[..end].to_owned())], at + end)
}

/// The first segment of a path (`limits` of ` limits::{Limits, X}`).
fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}
