//! Signature manifests in a registry, as cosign lays them out: the manifest
//! tagged `sha256-<hex>.sig` beside the signed one, one simple-signing layer
//! per signature (cosign appends a layer for each new signer). Pulled over
//! the capped [`distribution`](super::super::distribution) client; pushed
//! through oci-client, like modules.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::{Reference, RegistryOperation};

use super::cosign::{
    self, MAX_PAYLOAD_BYTES, PAYLOAD_MEDIA_TYPE, PublicKey, SIGNATURE_ANNOTATION, Signature,
};
use crate::source::distribution::Repository;
use crate::source::download::Progress;
use crate::source::error::FetchError;
use crate::source::{Fetcher, registry};

/// Most signatures read for one manifest (cosign writes one per signer).
pub const MAX_SIGNATURES: usize = 64;

/// The config blob's media type in cosign's signature manifests.
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The reference of the signature manifest of `digest` in `reference`'s repository.
pub fn signature_reference(reference: &Reference, digest: &str) -> Result<Reference, FetchError> {
    let tag = cosign::signature_tag(digest).ok_or_else(|| {
        FetchError::Protocol(format!("`{digest}` is not a sha256 or sha512 digest"))
    })?;
    Ok(Reference::with_tag(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        tag,
    ))
}

/// Every signature of the manifest `digest` in `reference`'s repository,
/// each payload checked against its layer's digest (not yet verified: that
/// is the config's job). None when the repository has no signature manifest
/// for it.
pub(in crate::source) async fn pull(
    fetcher: &Fetcher,
    reference: &Reference,
    digest: &str,
    progress: &Progress,
) -> Result<Vec<Signature>, FetchError> {
    let signatures_ref = signature_reference(reference, digest)?;
    let login = fetcher.credentials().login(reference.resolve_registry());
    let mut repository = Repository::new(fetcher, &signatures_ref, &login, progress)?;
    let Some(manifest) = manifest_of(&mut repository).await? else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|layer| layer.media_type == PAYLOAD_MEDIA_TYPE)
        .take(MAX_SIGNATURES)
    {
        let Some(annotation) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            // A keyless signature's layer, or one without a signature: not ours to judge.
            continue;
        };
        let Ok(signature) = Signature::decode_annotation(annotation) else {
            tracing::warn!(%signatures_ref, layer = %layer.digest, "a signature annotation that is not base64 ignored");
            continue;
        };
        let payload = repository
            .small_blob(layer, MAX_PAYLOAD_BYTES, "signature payload")
            .await?;
        found.push(Signature { payload, signature });
    }
    Ok(found)
}

/// The signature manifest `repository` names, or none if it has no such tag.
async fn manifest_of(
    repository: &mut Repository<'_>,
) -> Result<Option<OciImageManifest>, FetchError> {
    let bytes = match repository.manifest().await {
        Ok((bytes, _)) => bytes,
        Err(FetchError::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        FetchError::Protocol(format!(
            "the signature manifest is not an OCI image manifest: {e}"
        ))
    })
}

/// Adds `signature` to the signature manifest of `digest` in `reference`'s
/// repository (made if there is none); returns the signature manifest's
/// reference. A payload `signer` signed already is not added again (ECDSA
/// signatures differ each time, so the layers are compared by what they
/// prove, not their bytes).
pub(in crate::source) async fn push(
    fetcher: &Fetcher,
    reference: &Reference,
    digest: &str,
    signature: &Signature,
    signer: &PublicKey,
) -> Result<Reference, FetchError> {
    let signatures_ref = signature_reference(reference, digest)?;
    let login = fetcher.credentials().login(reference.resolve_registry());
    let progress = Progress::default();
    let existing = {
        let mut repository = Repository::new(fetcher, &signatures_ref, &login, &progress)?;
        manifest_of(&mut repository).await?
    };
    let layer = OciDescriptor {
        media_type: PAYLOAD_MEDIA_TYPE.to_owned(),
        digest: sha256(&signature.payload),
        size: signature.payload.len() as i64,
        urls: None,
        artifact_type: None,
        annotations: Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_owned(),
            signature.annotation(),
        )])),
    };
    let mut layers = existing.map(|m| m.layers).unwrap_or_default();
    let already = |other: &OciDescriptor| {
        other.digest == layer.digest
            && other
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .and_then(|value| Signature::decode_annotation(value).ok())
                .is_some_and(|existing| signer.verifies(&signature.payload, &existing))
    };
    if layers.iter().any(already) {
        return Ok(signatures_ref);
    }
    layers.push(layer);

    // cosign's config: an empty image whose layers are the payloads.
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("a config serializes");
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: sha256(&config),
            size: config.len() as i64,
            urls: None,
            artifact_type: None,
            annotations: None,
        },
        layers,
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");

    let clients = fetcher.registry_client(reference.resolve_registry())?;
    let fail = |e| registry::classify(fetcher, &signatures_ref, &login.origin, e);
    let auth = &login.auth;
    let signatures_for_auth = &signatures_ref;
    let (client, authenticated) = registry::answering(clients, |client| async move {
        client
            .auth(signatures_for_auth, auth, RegistryOperation::Push)
            .await
    })
    .await;
    authenticated.map_err(fail)?;
    client
        .push_blob(
            &signatures_ref,
            signature.payload.clone(),
            &manifest.layers.last().expect("just pushed").digest,
        )
        .await
        .map_err(fail)?;
    client
        .push_blob(&signatures_ref, config, &manifest.config.digest)
        .await
        .map_err(fail)?;
    client
        .push_manifest_raw(
            &signatures_ref,
            manifest_bytes,
            oci_client::manifest::OCI_IMAGE_MEDIA_TYPE
                .parse()
                .expect("a valid header value"),
        )
        .await
        .map_err(fail)?;
    Ok(signatures_ref)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::digest::Digest::of(bytes).hex())
}
