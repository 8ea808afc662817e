//! The two ways a wasm module is packaged as an OCI artifact, recognised on
//! pull and written on push:
//!
//! | | config media type | layer media type | manifest `mediaType` |
//! |---|---|---|---|
//! | CNCF Wasm OCI artifact (`wkg`, wasm-pkg-tools) | `application/vnd.wasm.config.v0+json` | `application/wasm` | `application/vnd.oci.image.manifest.v1+json` |
//! | Kubewarden (`kwctl push`) | `application/vnd.wasm.config.v1+json` (config `{}`) | `application/vnd.wasm.content.layer.v1+wasm` | absent |
//!
//! Both carry the module as their single layer, so the layer digest is the
//! module's sha256: the digest the compiled cache is keyed by.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use serde::Serialize;

use super::FetchError;

/// The CNCF Wasm OCI artifact's layer media type.
pub const CNCF_LAYER: &str = "application/wasm";
/// The CNCF Wasm OCI artifact's config media type.
pub const CNCF_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Kubewarden's layer media type.
pub const KUBEWARDEN_LAYER: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
/// Kubewarden's config media type.
pub const KUBEWARDEN_CONFIG: &str = oci_client::manifest::WASM_CONFIG_MEDIA_TYPE;
/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;

/// How `portcullis push` packages a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The CNCF Wasm OCI artifact (`application/wasm`), what `wkg` reads.
    Cncf,
    /// Kubewarden's layout (`application/vnd.wasm.content.layer.v1+wasm`),
    /// what `kwctl` and policy-server read.
    Kubewarden,
}

/// A manifest, its config blob and its one layer, ready to upload.
pub struct Artifact {
    /// The manifest bytes, exactly as uploaded: their sha256 is the digest
    /// of the pushed artifact.
    pub manifest: Vec<u8>,
    /// The manifest's `Content-Type`.
    pub manifest_media_type: &'static str,
    /// The config blob and its digest.
    pub config: (Vec<u8>, String),
    /// The layer's digest (the module's sha256).
    pub layer_digest: String,
}

/// The config of a CNCF Wasm OCI artifact (camelCase, as the spec names it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CncfConfig {
    created: String,
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<ComponentWorld>,
}

/// What a component imports and exports, by name.
#[derive(Serialize)]
struct ComponentWorld {
    exports: Vec<String>,
    imports: Vec<String>,
}

/// The single wasm layer of `manifest`, or why there is none (naming every
/// media type found, so a container image pushed by mistake is recognised).
pub fn wasm_layer(manifest: &OciManifest) -> Result<&OciDescriptor, FetchError> {
    let image = match manifest {
        OciManifest::Image(image) => image,
        OciManifest::ImageIndex(index) => {
            return Err(FetchError::NotWasmArtifact {
                found: format!(
                    "an image index ({}) of {} manifests",
                    index.media_type.as_deref().unwrap_or("no media type"),
                    index.manifests.len()
                ),
            });
        }
    };
    let wasm: Vec<&OciDescriptor> = image
        .layers
        .iter()
        .filter(|layer| [CNCF_LAYER, KUBEWARDEN_LAYER].contains(&layer.media_type.as_str()))
        .collect();
    match wasm.as_slice() {
        [layer] => Ok(layer),
        _ => Err(FetchError::NotWasmArtifact {
            found: describe(image),
        }),
    }
}

/// "config `…`, layers `…`, `…`".
fn describe(image: &OciImageManifest) -> String {
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("`{}`", l.media_type))
        .collect();
    format!(
        "config `{}`, {} layer{}{}{}",
        image.config.media_type,
        layers.len(),
        if layers.len() == 1 { "" } else { "s" },
        if layers.is_empty() { "" } else { " " },
        layers.join(", ")
    )
}

/// The artifact `push` uploads for `module` in `format`. `created` is the
/// RFC 3339 time recorded in a CNCF config.
pub fn build(module: &[u8], format: Format, created: String) -> Result<Artifact, String> {
    let kind = kind_of(module)?;
    let layer_digest = sha256(module);
    let (config, config_media_type, layer_media_type, manifest_media_type) = match format {
        Format::Kubewarden => (
            b"{}".to_vec(),
            KUBEWARDEN_CONFIG,
            KUBEWARDEN_LAYER,
            // Kubewarden's manifests carry no `mediaType`; the upload's
            // Content-Type says it is an OCI manifest.
            None,
        ),
        Format::Cncf => {
            let config = CncfConfig {
                created,
                architecture: "wasm",
                os: match kind {
                    Kind::Component => "wasip2",
                    Kind::Module => "wasip1",
                },
                layer_digests: vec![layer_digest.clone()],
                component: match kind {
                    Kind::Component => Some(component_world(module)?),
                    Kind::Module => None,
                },
            };
            let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
            (config, CNCF_CONFIG, CNCF_LAYER, Some(OCI_MANIFEST))
        }
    };
    let config_digest = sha256(&config);
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: manifest_media_type.map(str::to_owned),
        config: OciDescriptor {
            media_type: config_media_type.to_owned(),
            digest: config_digest.clone(),
            size: config.len() as i64,
            ..OciDescriptor::default()
        },
        layers: vec![OciDescriptor {
            media_type: layer_media_type.to_owned(),
            digest: layer_digest.clone(),
            size: module.len() as i64,
            ..OciDescriptor::default()
        }],
        subject: None,
        artifact_type: None,
        annotations: None::<BTreeMap<String, String>>,
    };
    Ok(Artifact {
        manifest: serde_json::to_vec(&manifest).map_err(|e| e.to_string())?,
        manifest_media_type: OCI_MANIFEST,
        config: (config, config_digest),
        layer_digest,
    })
}

/// A component or a core module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A WebAssembly component (`wasm32-wasip2`).
    Component,
    /// A core module (e.g. a Kubewarden policy).
    Module,
}

/// Which kind of wasm `bytes` are, from the header.
pub fn kind_of(bytes: &[u8]) -> Result<Kind, String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(Kind::Module),
        Some([0, b'a', b's', b'm', ..]) => Ok(Kind::Component),
        _ => Err("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)".into()),
    }
}

/// The names of a component's own imports and exports (not those of the
/// components and modules nested in it).
fn component_world(bytes: &[u8]) -> Result<ComponentWorld, String> {
    use wasmparser::{Parser, Payload};
    let mut world = ComponentWorld {
        exports: Vec::new(),
        imports: Vec::new(),
    };
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("cannot parse the component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| e.to_string())?;
                    world.imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| e.to_string())?;
                    world.exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(world)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the 8-byte header.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn manifest(artifact: &Artifact) -> serde_json::Value {
        serde_json::from_slice(&artifact.manifest).unwrap()
    }

    #[test]
    fn kubewarden_layout() {
        let artifact = build(EMPTY_MODULE, Format::Kubewarden, String::new()).unwrap();
        let manifest = manifest(&artifact);
        assert_eq!(manifest.get("mediaType"), None);
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["config"]["mediaType"], KUBEWARDEN_CONFIG);
        // Kubewarden's config blob is `{}`: its digest is well known.
        assert_eq!(
            manifest["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(manifest["layers"][0]["mediaType"], KUBEWARDEN_LAYER);
        assert_eq!(manifest["layers"][0]["size"], 8);
        assert_eq!(manifest["layers"][0]["digest"], artifact.layer_digest);
    }

    #[test]
    fn cncf_layout() {
        let artifact = build(EMPTY_COMPONENT, Format::Cncf, "2026-01-01T00:00:00Z".into()).unwrap();
        let manifest = manifest(&artifact);
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], CNCF_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], CNCF_LAYER);
        let config: serde_json::Value = serde_json::from_slice(&artifact.config.0).unwrap();
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip2");
        assert_eq!(config["created"], "2026-01-01T00:00:00Z");
        assert_eq!(config["layerDigests"][0], artifact.layer_digest);
        assert_eq!(config["component"]["imports"], serde_json::json!([]));

        let module = build(EMPTY_MODULE, Format::Cncf, String::new()).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&module.config.0).unwrap();
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config.get("component"), None);
    }

    #[test]
    fn not_wasm_is_refused() {
        assert!(build(b"hello", Format::Cncf, String::new()).is_err());
    }

    #[test]
    fn a_container_image_names_its_media_types() {
        let manifest: OciManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:00", "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:01", "size": 1}]
        }))
        .unwrap();
        let error = wasm_layer(&manifest).unwrap_err().to_string();
        assert!(
            error.contains(
                "config `application/vnd.oci.image.config.v1+json`, 1 layer `application/vnd.oci.image.layer.v1.tar+gzip`"
            ),
            "{error}"
        );
    }
}
