//! `portcullis inspect`: what a policy is — a component, and which version of
//! the contract it targets, or a Kubewarden module, and what its metadata
//! declares —, whether this host can run it (and if not, why), and what it
//! says about itself: like `kwctl inspect`, from the file alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use portcullis::bindings::{self, Operation, PolicyMetadata};
use portcullis::digest::Digest;
use portcullis::evaluation::evaluate;
use portcullis::runtime::component::{self, ComponentError, ComponentInterface, PolicyComponent};
use portcullis::runtime::{self, Call, CodeError, PolicyCode, PolicyContext, Returned};
use portcullis::{Engine, Limits};
use serde::Serialize;

use crate::cli::{CacheArgs, FetchArgs};

mod module;

use self::module::Kubewarden;

/// Arguments of `portcullis inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The policy (a component or a Kubewarden module): a `.wasm` file, or a `registry://`,
    /// `https://` or `file://` URI.
    pub policy: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// How `inspect` prints its report.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// Aligned lines for people.
    Text,
    /// One JSON document for machines.
    Json,
}

/// Everything `inspect` learns. Field names are the JSON output's.
#[derive(Debug, Serialize)]
struct Report {
    /// Where the policy came from, when it was fetched (a URI).
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The OCI manifest digest, for a policy from a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<String>,
    path: PathBuf,
    digest: String,
    size: usize,
    /// Its kind's name (`component`, `kubewarden-wapc`, `kubewarden-wasi`,
    /// ...), or `core module` (one without Kubewarden metadata).
    kind: &'static str,
    world: World,
    /// Whether this host can load and call the policy.
    runnable: bool,
    /// Why not, when it cannot.
    reason: Option<String>,
    imports: Vec<String>,
    exports: Vec<Export>,
    /// What the policy's `metadata` export returned (only when runnable),
    /// or a Kubewarden module's metadata in the same terms.
    metadata: Option<Metadata>,
    /// A Kubewarden module's metadata, as its section holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    kubewarden: Option<Kubewarden>,
}

#[derive(Debug, Serialize)]
struct World {
    /// The world the component targets, read from the version of the policy
    /// interface it exports; absent when it exports none.
    targets: Option<String>,
    /// That version alone.
    version: Option<String>,
    /// The exported policy interface, fully qualified.
    interface: Option<String>,
    /// The world this host implements.
    host: &'static str,
}

#[derive(Debug, Serialize)]
struct Export {
    name: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    functions: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Metadata {
    description: String,
    mutating: bool,
    rules: Vec<Rule>,
}

/// A rule with Kubernetes' field names and operation spelling, as it would
/// appear in a `ValidatingWebhookConfiguration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    api_versions: Vec<String>,
    resources: Vec<String>,
    operations: Vec<&'static str>,
}

/// Runs `portcullis inspect`. Exits 0 whenever it could read the policy,
/// runnable or not: the report says which.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let report = report(&args).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(args: &InspectArgs) -> anyhow::Result<Report> {
    let (source, path, fetch) =
        super::fetch_arg(&args.policy, &args.fetch, args.cache.cache_dir.as_deref()).await?;
    let path = &path;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let digest = Digest::of(&bytes);
    let engine = Engine::new(Limits::default())?;
    let cache = super::cache(&args.cache);
    if runtime::is_core_module(&bytes) {
        let mut report = module::report(&engine, path, &bytes, digest, cache.as_ref()).await?;
        report.source = fetch.as_ref().map(|_| source.to_string());
        report.manifest = fetch.and_then(|fetch| fetch.manifest);
        return Ok(report);
    }
    // Through the path `serve` takes; a component it refuses after compiling
    // it (not a policy, an import the host lacks) is compiled again here for
    // its interface, which is what the report shows.
    let (interface, runnable, reason, metadata) =
        match engine.prepare(path, &bytes, digest, cache.as_ref()).await {
            Ok(code) => {
                let Some(component) = code.downcast_ref::<PolicyComponent>() else {
                    // Another kind (a room under runtime/ with no report of
                    // its own here): what every prepared policy has.
                    let mut report = other_kind(&engine, &code, path).await;
                    report.source = fetch.as_ref().map(|_| source.to_string());
                    report.manifest = fetch.and_then(|fetch| fetch.manifest);
                    return Ok(report);
                };
                let interface = ComponentInterface::of(component.component());
                match read_metadata(&engine, &code, path).await {
                    Ok(metadata) => (interface, true, None, Some(metadata)),
                    Err(reason) => (interface, false, Some(reason), None),
                }
            }
            Err(CodeError::Refused(error)) if !compile_failed(error.as_ref()) => {
                let compiled = component::compile(engine.wasmtime(), &bytes)
                    .with_context(|| path.display().to_string())?;
                let interface = ComponentInterface::of(&compiled);
                (interface, false, Some(error.to_string()), None)
            }
            Err(error) => return Err(error).with_context(|| path.display().to_string()),
        };
    let version = interface.policy_version().map(str::to_owned);
    // A component that imports the Kubernetes interface targets the
    // context-aware world, and reads only what the operator grants it.
    let world_name = match interface
        .imports
        .iter()
        .any(|i| i.starts_with(bindings::KUBERNETES_UNVERSIONED))
    {
        true => "context-aware-policy",
        false => "policy",
    };
    Ok(Report {
        source: fetch.as_ref().map(|_| source.to_string()),
        manifest: fetch.and_then(|fetch| fetch.manifest),
        path: path.clone(),
        digest: digest.to_string(),
        size: bytes.len(),
        world: World {
            targets: version
                .as_ref()
                .map(|v| format!("portcullis:policy/{world_name}@{v}")),
            interface: interface.policy_interface().map(|i| i.name.clone()),
            version,
            host: bindings::WORLD,
        },
        kind: "component",
        runnable,
        reason,
        imports: interface.imports.clone(),
        exports: interface
            .exports
            .iter()
            .map(|e| Export {
                name: e.name.clone(),
                kind: e.kind,
                functions: e.functions.clone(),
            })
            .collect(),
        metadata,
        kubewarden: None,
    })
}

/// The report on prepared code of a kind `inspect` knows no details of:
/// its kind, file and metadata, read through the evaluation like any
/// policy's.
async fn other_kind(engine: &Engine, code: &PolicyCode, path: &Path) -> Report {
    let facts = code.facts();
    let (metadata, reason) = match read_metadata(engine, code, path).await {
        Ok(metadata) => (Some(metadata), None),
        Err(reason) => (None, Some(reason)),
    };
    Report {
        source: None,
        manifest: None,
        path: path.to_owned(),
        digest: facts.digest.to_string(),
        size: facts.size,
        kind: code.kind(),
        world: World {
            targets: None,
            version: None,
            interface: None,
            host: bindings::WORLD,
        },
        runnable: reason.is_none(),
        reason,
        imports: Vec::new(),
        exports: Vec::new(),
        metadata,
        kubewarden: None,
    }
}

/// Whether the component could not even be compiled (or is not wasm): then
/// there is no interface to report.
fn compile_failed(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<ComponentError>(),
        Some(ComponentError::NotWasm | ComponentError::Compile(_))
    )
}

async fn read_metadata(
    engine: &Engine,
    code: &PolicyCode,
    path: &Path,
) -> Result<Metadata, String> {
    let id = path
        .file_stem()
        .map_or_else(|| "policy".into(), |s| s.to_string_lossy());
    let context = PolicyContext {
        id: &id,
        grants: Default::default(),
        capabilities: engine.capabilities().clone(),
    };
    let evaluation = evaluate(engine, code, &context, engine.limits(), Call::Metadata)
        .await
        .map_err(|e| format!("metadata failed: {e}"))?;
    match evaluation.returned {
        Returned::Metadata(metadata) => Ok(convert(metadata)),
        other => unreachable!("metadata returned {other:?}"),
    }
}

fn convert(metadata: PolicyMetadata) -> Metadata {
    Metadata {
        description: metadata.description,
        mutating: metadata.mutating,
        rules: metadata
            .rules
            .into_iter()
            .map(|rule| Rule {
                api_groups: rule.api_groups,
                api_versions: rule.api_versions,
                resources: rule.resources,
                operations: rule.operations.into_iter().map(operation).collect(),
            })
            .collect(),
    }
}

fn operation(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// The human-readable report.
fn text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<10} {value}");
    };
    if let Some(source) = &report.source {
        line("source", source);
    }
    if let Some(manifest) = &report.manifest {
        line("manifest", manifest);
    }
    line("path", &report.path.display().to_string());
    line("digest", &report.digest);
    line("size", &format!("{} bytes", report.size));
    line("kind", report.kind);
    if report.kind == "component" {
        line(
            "world",
            report
                .world
                .targets
                .as_deref()
                .unwrap_or("none (exports no portcullis:policy/admission interface)"),
        );
    }
    line(
        "runnable",
        &match (&report.reason, report.kind) {
            (None, "component") => format!("yes (this host implements {})", report.world.host),
            (None, kind) if kind.starts_with("kubewarden") => {
                "yes (a Kubewarden policy this host runs unchanged)".to_owned()
            }
            (None, kind) => format!("yes (a {kind} policy)"),
            (Some(reason), _) => format!("no: {reason}"),
        },
    );
    if let Some(kw) = &report.kubewarden {
        let _ = writeln!(out, "kubewarden");
        let mut kv = |label: &str, value: &str| {
            let _ = writeln!(out, "  {label:<24} {value}");
        };
        kv("protocol", kw.protocol);
        kv("executionMode", kw.execution_mode);
        kv(
            "protocolVersion",
            kw.protocol_version.as_deref().unwrap_or("(none)"),
        );
        kv("policyType", kw.policy_type);
        kv("mutating", &kw.mutating.to_string());
        kv("backgroundAudit", &kw.background_audit.to_string());
        kv(
            "contextAwareResources",
            &list_or_none(&kw.context_aware_resources),
        );
        kv("hostCapabilities", &list_or_none(&kw.host_capabilities));
        if let Some(version) = &kw.minimum_kubewarden_version {
            kv("minimumKubewardenVersion", version);
        }
        if !kw.annotations.is_empty() {
            let _ = writeln!(out, "  annotations");
            for (key, value) in &kw.annotations {
                let value = value.lines().next().unwrap_or_default();
                let _ = writeln!(out, "    {key}: {value}");
            }
        }
    }
    let _ = writeln!(out, "imports");
    for import in &report.imports {
        if import.starts_with(bindings::KUBERNETES_UNVERSIONED) {
            let _ = writeln!(
                out,
                "  {import}  (reads the cluster: needs contextAwareResources in policies.yml)"
            );
        } else {
            let _ = writeln!(out, "  {import}");
        }
    }
    let _ = writeln!(out, "exports");
    for export in &report.exports {
        if export.functions.is_empty() {
            let _ = writeln!(out, "  {} ({})", export.name, export.kind);
        } else {
            let _ = writeln!(out, "  {}: {}", export.name, export.functions.join(", "));
        }
    }
    if let Some(metadata) = &report.metadata {
        let _ = writeln!(out, "metadata");
        let _ = writeln!(out, "  description  {}", metadata.description);
        let _ = writeln!(out, "  mutating     {}", metadata.mutating);
        let _ = writeln!(out, "  rules");
        for rule in &metadata.rules {
            let groups: Vec<String> = rule
                .api_groups
                .iter()
                .map(|g| {
                    if g.is_empty() {
                        "\"\"".into()
                    } else {
                        g.clone()
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "    {} {}/{} {}",
                rule.operations.join(","),
                groups.join(","),
                rule.api_versions.join(","),
                rule.resources.join(","),
            );
        }
    }
    out
}
