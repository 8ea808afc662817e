//! `portcullis new`: scaffolds a policy crate that builds for `wasm32-wasip2`
//! and passes its tests as generated.
//!
//! The files are templates under `host/templates/policy/`, compiled into the
//! binary, with `{{name}}`, `{{crate_name}}`, `{{type_name}}` and
//! `{{sdk_dependency}}` filled in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

/// Arguments of `portcullis new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The policy's crate name: lower-case letters, digits and `-`, starting
    /// with a letter (e.g. `no-latest-tag`).
    pub name: String,
    /// The directory to create [default: ./NAME]. It must not exist or be empty.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Depend on the SDK at this path (the `guest-sdk` directory of a Portcullis
    /// checkout) [default: the SDK of the checkout this binary was built from,
    /// if it is still there].
    #[arg(long, conflicts_with = "sdk_git")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on the SDK from this git repository instead (cargo finds the
    /// `portcullis-sdk` package in it).
    #[arg(long)]
    pub sdk_git: Option<String>,
    /// The branch, tag or commit of --sdk-git to use [default: its default branch].
    #[arg(long, requires = "sdk_git")]
    pub sdk_rev: Option<String>,
}

/// One file of the scaffold: where it goes, and its template.
struct Template {
    path: &'static str,
    text: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        path: "Cargo.toml",
        text: include_str!("../../templates/policy/Cargo.toml.tmpl"),
    },
    Template {
        path: "src/lib.rs",
        text: include_str!("../../templates/policy/lib.rs.tmpl"),
    },
    Template {
        path: "src/tests.rs",
        text: include_str!("../../templates/policy/tests.rs.tmpl"),
    },
    Template {
        path: "README.md",
        text: include_str!("../../templates/policy/README.md.tmpl"),
    },
    Template {
        path: ".gitignore",
        text: include_str!("../../templates/policy/gitignore.tmpl"),
    },
    Template {
        path: "test_data/pod_latest_tag.json",
        text: include_str!("../../templates/policy/test_data/pod_latest_tag.json"),
    },
    Template {
        path: "test_data/pod_fixed_tag.json",
        text: include_str!("../../templates/policy/test_data/pod_fixed_tag.json"),
    },
    Template {
        path: "test_data/review_latest_tag.json",
        text: include_str!("../../templates/policy/test_data/review_latest_tag.json"),
    },
    Template {
        path: "test_data/settings.json",
        text: include_str!("../../templates/policy/test_data/settings.json"),
    },
];

/// Where the generated crate gets `portcullis-sdk` from.
#[derive(Debug, PartialEq, Eq)]
enum SdkSource {
    Path(PathBuf),
    Git { url: String, rev: Option<String> },
}

impl SdkSource {
    /// The value of `portcullis-sdk = …` in the generated Cargo.toml.
    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(path) => {
                format!("{{ path = {} }}", toml_string(&path.to_string_lossy()))
            }
            SdkSource::Git { url, rev: None } => format!("{{ git = {} }}", toml_string(url)),
            SdkSource::Git {
                url,
                rev: Some(rev),
            } => format!(
                "{{ git = {}, rev = {} }}",
                toml_string(url),
                toml_string(rev)
            ),
        }
    }
}

/// Runs `portcullis new`.
pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = sdk_source(&args)?;
    ensure_empty(&dir)?;

    let crate_name = args.name.replace('-', "_");
    let values = [
        ("{{name}}", args.name.as_str()),
        ("{{crate_name}}", crate_name.as_str()),
        ("{{type_name}}", &type_name(&args.name)),
        ("{{sdk_dependency}}", &sdk.dependency()),
    ];
    for template in TEMPLATES {
        let text = values
            .iter()
            .fold(template.text.to_owned(), |text, (key, value)| {
                text.replace(key, value)
            });
        let path = dir.join(template.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let SdkSource::Path(sdk) = &sdk {
        seed_lockfile(sdk, &dir)?;
    }
    println!(
        "Created policy `{}` in {}\n\
         \n\
         cd {}\n\
         cargo test                                            # unit tests, natively\n\
         cargo build --target wasm32-wasip2 --profile policy   # the component\n\
         \n\
         The component is ${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/policy/{crate_name}.wasm; \
         see README.md.",
        args.name,
        dir.display(),
        dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// A name cargo accepts as a package name and that makes a Rust type name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !valid {
        bail!(
            "invalid policy name `{name}`: use lower-case letters, digits and single `-`, \
             starting with a letter (e.g. `no-latest-tag`)"
        );
    }
    Ok(())
}

/// `no-latest-tag` → `NoLatestTag`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn sdk_source(args: &NewArgs) -> anyhow::Result<SdkSource> {
    if let Some(url) = &args.sdk_git {
        return Ok(SdkSource::Git {
            url: url.clone(),
            rev: args.sdk_rev.clone(),
        });
    }
    let (path, origin) = match &args.sdk_path {
        Some(path) => (path.clone(), "--sdk-path"),
        // The checkout this binary was built from: right for a developer
        // running `cargo run`/`target/debug/portcullis`; a binary moved
        // elsewhere needs --sdk-path or --sdk-git.
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"),
            "the checkout portcullis was built from",
        ),
    };
    let manifest = path.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .is_ok_and(|text| text.contains("name = \"portcullis-sdk\""));
    if !is_sdk {
        bail!(
            "no portcullis-sdk at {} ({origin}): pass --sdk-path DIR (a checkout's guest-sdk) \
             or --sdk-git URL",
            path.display()
        );
    }
    // Absolute, so the generated crate can be moved within the machine.
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(SdkSource::Path(path))
}

fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} already exists and is not empty", dir.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Copies the SDK workspace's `Cargo.lock`, when there is one, so the new
/// policy builds with the dependency versions the SDK is tested with (cargo
/// drops the entries it does not need on the first build) — and, sharing a
/// `CARGO_TARGET_DIR` with that workspace, reuses its compiled dependencies.
fn seed_lockfile(sdk: &Path, dir: &Path) -> anyhow::Result<()> {
    let Some(workspace) = sdk.parent() else {
        return Ok(());
    };
    let lockfile = workspace.join("Cargo.lock");
    if lockfile.is_file() {
        std::fs::copy(&lockfile, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lockfile.display()))?;
    }
    Ok(())
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_type_names() {
        assert_eq!(type_name("no-latest-tag"), "NoLatestTag");
        assert_eq!(type_name("policy2"), "Policy2");
    }

    #[test]
    fn only_cargo_friendly_names_are_accepted() {
        for good in ["a", "no-latest-tag", "p2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2fa", "Upper", "a_b", "a-", "a--b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dependencies_are_valid_toml_strings() {
        let path = SdkSource::Path(PathBuf::from("/a \"b\"\\c"));
        assert_eq!(path.dependency(), r#"{ path = "/a \"b\"\\c" }"#);
        let git = SdkSource::Git {
            url: "https://example.invalid/portcullis".into(),
            rev: Some("v0.1.0".into()),
        };
        assert_eq!(
            git.dependency(),
            r#"{ git = "https://example.invalid/portcullis", rev = "v0.1.0" }"#
        );
    }

    /// A file added under host/templates/policy but not to `TEMPLATES` would
    /// silently not be generated.
    #[test]
    fn every_template_file_is_generated() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/policy");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path.strip_prefix(&root).unwrap().to_owned());
                }
            }
        }
        let generated = |file: &Path| {
            let name = file.to_string_lossy().replace("gitignore", ".gitignore");
            let name = name.strip_suffix(".tmpl").unwrap_or(&name).to_owned();
            let name = name
                .replace("lib.rs", "src/lib.rs")
                .replace("tests.rs", "src/tests.rs");
            TEMPLATES.iter().any(|t| t.path == name)
        };
        for file in &files {
            assert!(generated(file), "{} is not in TEMPLATES", file.display());
        }
        assert_eq!(files.len(), TEMPLATES.len());
    }

    #[test]
    fn every_placeholder_is_known() {
        let known = [
            "{{name}}",
            "{{crate_name}}",
            "{{type_name}}",
            "{{sdk_dependency}}",
        ];
        for template in TEMPLATES {
            let mut rest = template.text;
            while let Some(at) = rest.find("{{") {
                let end = rest[at..].find("}}").expect("closed placeholder") + at + 2;
                assert!(
                    known.contains(&&rest[at..end]),
                    "{}: {}",
                    template.path,
                    &rest[at..end]
                );
                rest = &rest[end..];
            }
        }
    }
}
