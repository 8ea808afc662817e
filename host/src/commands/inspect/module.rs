//! `inspect` on a core module: a Kubewarden policy (its metadata section,
//! with Kubewarden's names), or a module this host cannot run and why.

use std::path::Path;

use portcullis::digest::Digest;
use portcullis::runtime::kubewarden::metadata::{Metadata as KubewardenMetadata, PolicyType};
use portcullis::{CompiledCache, Engine, bindings};
use serde::Serialize;

use super::{Export, Report, World, convert};

/// What a Kubewarden module declares, with Kubewarden's names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Kubewarden {
    /// `waPC` or `WASI`.
    pub(super) protocol: &'static str,
    pub(super) execution_mode: &'static str,
    pub(super) protocol_version: Option<String>,
    pub(super) policy_type: &'static str,
    pub(super) mutating: bool,
    pub(super) background_audit: bool,
    pub(super) context_aware_resources: Vec<String>,
    pub(super) host_capabilities: Vec<String>,
    pub(super) annotations: std::collections::BTreeMap<String, String>,
    pub(super) minimum_kubewarden_version: Option<String>,
}

/// The report on a core module: a Kubewarden policy, or a module this host
/// cannot run (and why).
pub(super) async fn report(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    digest: Digest,
    cache: Option<&CompiledCache>,
) -> anyhow::Result<Report> {
    let module = wasmtime::Module::new(engine.wasmtime(), bytes)
        .map_err(|e| anyhow::anyhow!("{}: cannot compile the module: {e:#}", path.display()))?;
    let imports = module
        .imports()
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    let exports = module
        .exports()
        .map(|e| Export {
            name: e.name().to_owned(),
            kind: match e.ty() {
                wasmtime::ExternType::Func(_) => "function",
                wasmtime::ExternType::Memory(_) => "memory",
                wasmtime::ExternType::Table(_) => "table",
                wasmtime::ExternType::Global(_) => "global",
                wasmtime::ExternType::Tag(_) => "tag",
            },
            functions: Vec::new(),
        })
        .collect();
    let prepared = engine.prepare(path, bytes, digest, cache).await;
    let declared = KubewardenMetadata::from_module(bytes).ok();
    let kind = match &prepared {
        Ok(code) => code.kind(),
        Err(_) => "core module",
    };
    let kubewarden = declared.as_ref().map(|m| Kubewarden {
        protocol: match m.execution_mode.as_str() {
            "wasi" => "WASI",
            "kubewarden-wapc" => "waPC",
            _ => "Rego",
        },
        execution_mode: m.execution_mode.as_str(),
        protocol_version: m.protocol_version.clone(),
        policy_type: match m.policy_type {
            PolicyType::Raw => "raw",
            _ => "kubernetes",
        },
        mutating: m.mutating,
        background_audit: m.background_audit,
        context_aware_resources: m
            .context_aware_resources
            .iter()
            .map(|r| format!("{}/{}", r.api_version, r.kind))
            .collect(),
        host_capabilities: m.host_capabilities.clone().unwrap_or_default(),
        annotations: m.annotations.clone(),
        minimum_kubewarden_version: m.minimum_kubewarden_version.clone(),
    });
    Ok(Report {
        // Where it came from is the caller's to say.
        source: None,
        manifest: None,
        path: path.to_owned(),
        digest: digest.to_string(),
        size: bytes.len(),
        kind,
        world: World {
            targets: None,
            version: None,
            interface: None,
            host: bindings::WORLD,
        },
        runnable: prepared.is_ok(),
        reason: prepared.as_ref().err().map(ToString::to_string),
        imports,
        exports,
        metadata: match (&prepared, &declared) {
            (Ok(_), Some(m)) => Some(convert(m.to_policy_metadata())),
            _ => None,
        },
        kubewarden,
    })
}
