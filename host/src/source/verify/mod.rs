//! Verified loading: with a [verification config](config) in force, a
//! registry policy is loaded only if the signatures of its manifest satisfy
//! it, and what is downloaded is exactly the manifest whose digest was
//! verified.
//!
//! For each registry module the fetcher resolves the reference to a manifest
//! (its bytes hashed to their digest), pulls the cosign signature manifest
//! tagged `sha256-<hex>.sig` ([`signatures`]), and checks every requirement:
//! a `pubKey` requirement holds when one signature verifies under its key,
//! its payload names this manifest's digest, and it carries the required
//! annotations. `allOf` must all hold, `anyOf` at least `minimumMatches`.
//! The signatures are kept in the download store beside the manifest and
//! checked again (no network, well under a millisecond) each time the
//! stored module is used, so a warm start stays fast, and a store written by
//! someone else cannot vouch for code on its own.
//!
//! - [`config`]: Kubewarden's file format;
//! - [`cosign`]: keys, payloads and the signature layer;
//! - [`signatures`]: pulling and pushing signature manifests.

pub mod config;
pub mod cosign;
pub(super) mod signatures;

use std::collections::BTreeMap;
use std::path::Path;

use oci_client::Reference;

use super::distribution::Repository;
use super::download::Progress;
use super::{FetchError, Fetcher};

pub use self::config::{ConfigError, Requirement, RequirementKind, VerificationConfig};
pub use self::cosign::{KeyError, Payload, PublicKey, Signature, SigningKey};

impl VerificationConfig {
    /// Reads `path` ([`load`](Self::load)) and refuses what this version
    /// cannot check: a keyless requirement in `allOf`, or an `anyOf` that
    /// could only be met with keyless ones (either would refuse every
    /// policy).
    pub fn load_supported(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::load(path)?;
        let unsupported = |message: String| ConfigError {
            origin: config.origin.clone(),
            message,
        };
        if let Some(keyless) = config.all_of.iter().find(|r| r.kind.is_keyless()) {
            return Err(unsupported(format!(
                "{keyless}: keyless signatures are not verified by this version yet (only \
                 pubKey); no policy could load"
            )));
        }
        if let Some(any_of) = &config.any_of {
            let keyed = any_of
                .signatures
                .iter()
                .filter(|r| !r.kind.is_keyless())
                .count();
            if keyed < any_of.minimum_matches {
                return Err(unsupported(format!(
                    "anyOf needs {} matches but lists only {keyed} pubKey signatures; keyless \
                     signatures are not verified by this version yet, so no policy could load",
                    any_of.minimum_matches
                )));
            }
            if keyed < any_of.signatures.len() {
                tracing::warn!(
                    config = %config.origin,
                    "anyOf lists keyless signatures, which this version does not verify yet: \
                     they never count as a match"
                );
            }
        }
        Ok(config)
    }

    /// Whether `signatures` (found for the manifest `digest`) satisfy this
    /// config; if not, every requirement that failed and why.
    pub fn check(&self, digest: &str, signatures: &[Signature]) -> Result<(), String> {
        if signatures.is_empty() {
            return Err(format!(
                "the manifest is not signed: the repository has no signature manifest `{}`",
                cosign::signature_tag(digest).unwrap_or_default()
            ));
        }
        let mut failed = Vec::new();
        for requirement in &self.all_of {
            if let Err(why) = requirement.check(digest, signatures) {
                failed.push(format!("{requirement}: {why}"));
            }
        }
        if let Some(any_of) = &self.any_of {
            let mut reasons = Vec::new();
            for requirement in &any_of.signatures {
                if let Err(why) = requirement.check(digest, signatures) {
                    reasons.push(format!("{requirement}: {why}"));
                }
            }
            let met = any_of.signatures.len() - reasons.len();
            if met < any_of.minimum_matches {
                failed.push(format!(
                    "anyOf: {met} of the {} requirements hold, minimumMatches is {} ({})",
                    any_of.signatures.len(),
                    any_of.minimum_matches,
                    reasons.join("; ")
                ));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// A policy signed by [`Fetcher::sign`].
#[derive(Debug, Clone)]
pub struct Signed {
    /// The manifest digest signed.
    pub digest: String,
    /// The signature manifest it was added to (`…:sha256-<hex>.sig`).
    pub signatures: Reference,
}

/// A policy verified by [`Fetcher::verify_signatures`].
#[derive(Debug, Clone)]
pub struct Verified {
    /// The manifest digest verified.
    pub digest: String,
    /// How many signatures the registry holds for it.
    pub signatures: usize,
}

impl Fetcher {
    /// Signs the manifest `reference` names (its digest, or what its tag
    /// resolves to now) with `key`, the payload carrying `annotations`, and
    /// adds the signature to its signature manifest, as `cosign sign` does.
    pub async fn sign(
        &self,
        reference: &Reference,
        key: &SigningKey,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Signed, FetchError> {
        let digest = match reference.digest() {
            Some(digest) => digest.to_owned(),
            None => self.resolve(reference).await?,
        };
        let repository = format!("{}/{}", reference.registry(), reference.repository());
        let payload = Payload::new(&repository, &digest, annotations).to_bytes();
        let signature = Signature {
            signature: key.sign(&payload),
            payload,
        };
        let signatures = self
            .within_deadline(signatures::push(
                self,
                reference,
                &digest,
                &signature,
                &key.public_key(),
            ))
            .await?;
        Ok(Signed { digest, signatures })
    }

    /// Checks the signatures of the manifest `reference` names against
    /// `config`, as a pull with `--verification-path` does, without
    /// downloading the module.
    pub async fn verify_signatures(
        &self,
        reference: &Reference,
        config: &VerificationConfig,
    ) -> Result<Verified, FetchError> {
        let progress = Progress::default();
        progress.start();
        let checking = async {
            let login = self.credentials().login(reference.resolve_registry());
            let (_, digest) = Repository::new(self, reference, &login, &progress)?
                .manifest()
                .await?;
            let found = signatures::pull(self, reference, &digest, &progress).await?;
            config
                .check(&digest, &found)
                .map_err(|reason| FetchError::Unverified {
                    digest: digest.clone(),
                    config: config.origin.clone(),
                    reason,
                })?;
            Ok(Verified {
                digest,
                signatures: found.len(),
            })
        };
        self.within_deadline(checking).await
    }

    /// `work`, cancelled past the fetch deadline.
    async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, FetchError>>,
    ) -> Result<T, FetchError> {
        tokio::time::timeout(self.deadline(), work)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::TimedOut {
                    deadline: self.deadline(),
                    stage: "verifying signatures",
                    received: 0,
                })
            })
    }
}

impl Requirement {
    /// Whether one of `signatures` meets this requirement for the manifest
    /// `digest`; if not, the closest any came.
    fn check(&self, digest: &str, signatures: &[Signature]) -> Result<(), String> {
        let RequirementKind::PubKey { key, .. } = &self.kind else {
            return Err("keyless signatures are not verified by this version yet".into());
        };
        // What the best signature by this key lacked, if one was by it.
        let mut closest: Option<String> = None;
        for signature in signatures {
            if !key.verifies(&signature.payload, &signature.signature) {
                continue;
            }
            let payload = match Payload::parse(&signature.payload) {
                Ok(payload) => payload,
                Err(why) => {
                    closest.get_or_insert(format!("the signature by this key is over {why}"));
                    continue;
                }
            };
            let named = &payload.critical.image.docker_manifest_digest;
            if named != digest {
                closest = Some(format!(
                    "the signature by this key is for the manifest {named}, not this one (the \
                     manifest was changed, or the tag moved, after signing)"
                ));
                continue;
            }
            if !payload.has_annotations(&self.annotations) {
                closest = Some(format!(
                    "the signature by this key lacks the annotations {} (it carries {})",
                    annotations_text(&self.annotations),
                    payload
                        .optional
                        .as_ref()
                        .and_then(|o| serde_json::to_string(o).ok())
                        .unwrap_or_else(|| "none".into())
                ));
                continue;
            }
            return Ok(());
        }
        Err(closest.unwrap_or_else(|| {
            format!(
                "none of the {} signatures verifies with this key",
                signatures.len()
            )
        }))
    }
}

fn annotations_text(annotations: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::cosign::tests::{PRIVATE as KEY_A, PUBLIC as PUB_A};

    /// Another P-256 key.
    const PUB_B: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPNU8J+YckZMtqYY7d/MhJhDb91eM
FksOPNDDA3Z54o8+A7nxrArfH17IfM4ueQHVLI96Epct3S7h/85sdYkQkQ==
-----END PUBLIC KEY-----";

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn signed(digest: &str, annotations: &[(&str, &str)]) -> Signature {
        let annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let payload = Payload::new("host/repo", digest, &annotations).to_bytes();
        let signature = SigningKey::from_pem(KEY_A).unwrap().sign(&payload);
        Signature { payload, signature }
    }

    fn config(text: &str) -> VerificationConfig {
        VerificationConfig::parse(text, "v.yml").unwrap()
    }

    fn pub_key(key: &str, extra: &str) -> String {
        let indented: String = key.lines().map(|l| format!("      {l}\n")).collect();
        format!("  - kind: pubKey\n    key: |\n{indented}{extra}")
    }

    #[test]
    fn all_of_any_of_and_annotations_decide() {
        let good = signed(DIGEST, &[("env", "prod")]);
        let all_a = config(&format!("apiVersion: v1\nallOf:\n{}", pub_key(PUB_A, "")));
        all_a.check(DIGEST, std::slice::from_ref(&good)).unwrap();

        let unsigned = all_a.check(DIGEST, &[]).unwrap_err();
        assert!(unsigned.contains("not signed"), "{unsigned}");

        let other = signed(&DIGEST.replace('1', "2"), &[]);
        let moved = all_a.check(DIGEST, &[other]).unwrap_err();
        assert!(moved.contains("allOf[0] (pubKey sha256:"), "{moved}");
        assert!(moved.contains("is for the manifest sha256:2222"), "{moved}");

        let mut tampered = good.clone();
        tampered.payload[10] ^= 1;
        let broken = all_a.check(DIGEST, &[tampered]).unwrap_err();
        assert!(
            broken.contains("none of the 1 signatures verifies with this key"),
            "{broken}"
        );

        let all_b = config(&format!("apiVersion: v1\nallOf:\n{}", pub_key(PUB_B, "")));
        assert!(
            all_b
                .check(DIGEST, std::slice::from_ref(&good))
                .unwrap_err()
                .contains("none of the 1")
        );

        let wants_env = config(&format!(
            "apiVersion: v1\nallOf:\n{}",
            pub_key(PUB_A, "    annotations:\n      env: prod\n      team: a\n")
        ));
        let lacks = wants_env
            .check(DIGEST, std::slice::from_ref(&good))
            .unwrap_err();
        assert!(
            lacks.contains("lacks the annotations env=prod,team=a"),
            "{lacks}"
        );
        assert!(lacks.contains(r#"(it carries {"env":"prod"})"#), "{lacks}");
        wants_env
            .check(
                DIGEST,
                &[
                    good.clone(),
                    signed(DIGEST, &[("env", "prod"), ("team", "a")]),
                ],
            )
            .unwrap();

        let one_of_two = format!(
            "apiVersion: v1\nanyOf:\n  minimumMatches: {{}}\n  signatures:\n{}{}",
            pub_key(PUB_A, ""),
            pub_key(PUB_B, "")
        );
        config(&one_of_two.replace("{}", "1"))
            .check(DIGEST, std::slice::from_ref(&good))
            .unwrap();
        let both = config(&one_of_two.replace("{}", "2"))
            .check(DIGEST, &[good])
            .unwrap_err();
        assert!(both.starts_with("anyOf: 1 of the 2 requirements hold, minimumMatches is 2 (anyOf.signatures[1] (pubKey"), "{both}");
    }
}
