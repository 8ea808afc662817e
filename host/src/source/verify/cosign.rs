//! cosign's key-based signatures, as cosign writes and reads them: an ECDSA
//! P-256 / SHA-256 signature (ASN.1 DER) over a "simple signing" JSON
//! payload that names the manifest digest, stored as a layer of the manifest
//! tagged `sha256-<hex>.sig` in the same repository, with the base64
//! signature in the layer's [`SIGNATURE_ANNOTATION`].
//!
//! The curve arithmetic is ring's (already compiled for rustls): keys are
//! read from PEM (`PUBLIC KEY`, and an unencrypted PKCS#8 `PRIVATE KEY` to
//! sign).

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as ring_signature, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The layer annotation that holds the base64 signature of the layer's payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The media type of a simple-signing payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The `critical.type` of a cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Largest payload accepted (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// DER of a P-256 SubjectPublicKeyInfo up to its uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused
/// bits) }. DER is canonical, so every P-256 key with an uncompressed point
/// (what cosign, openssl and Go write) starts with exactly these bytes.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The tag of the signature manifest of the manifest `digest`
/// (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> Option<String> {
    let (algorithm, hex) = digest.split_once(':')?;
    let valid = matches!(algorithm, "sha256" | "sha512")
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| format!("{algorithm}-{hex}.sig"))
}

/// PEM with each line trimmed: a key pasted into YAML keeps whatever
/// indentation the block had.
fn unindented(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines.join("\n")
}

/// A public key that verifies cosign signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed SEC1 point (65 bytes).
    point: Vec<u8>,
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM of the expected label.
    #[error("not a PEM `{label}` block: {detail}")]
    NotPem {
        /// The label expected.
        label: &'static str,
        /// What the PEM reader said.
        detail: String,
    },
    /// A key, but not ECDSA P-256 (cosign's default and the only kind verified).
    #[error(
        "not an ECDSA P-256 key (cosign's key type; RSA, Ed25519 and other curves are not supported)"
    )]
    NotP256,
    /// A cosign-encrypted private key.
    #[error(
        "an encrypted cosign private key is not supported; export it unencrypted in PKCS#8 \
         (`openssl ec -in … | openssl pkcs8 -topk8 -nocrypt`) or make one with \
         `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
    )]
    Encrypted,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (what `cosign generate-key-pair` writes to
    /// `cosign.pub`, and `openssl pkey -pubout`).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(unindented(text).as_bytes()).map_err(|e| {
                KeyError::NotPem {
                    label: "PUBLIC KEY",
                    detail: e.to_string(),
                }
            })?;
        let der: &[u8] = der.as_ref();
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(Self {
                point: point.to_vec(),
            }),
            _ => Err(KeyError::NotP256),
        }
    }

    /// Whether `signature` (ASN.1 DER, as cosign stores it) is this key's
    /// signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ring_signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }

    /// How messages name the key: `sha256:` and the first 16 hex digits of
    /// the hash of its DER (what `openssl pkey -pubin -outform DER | sha256sum`
    /// prints, shortened).
    pub fn fingerprint(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        let hash = hex::encode(sha2::Sha256::digest(&der));
        format!("sha256:{}", &hash[..16])
    }
}

/// A private key that signs.
pub struct SigningKey {
    pair: EcdsaKeyPair,
}

impl SigningKey {
    /// Reads an unencrypted PKCS#8 PEM `PRIVATE KEY` of the P-256 curve.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        if text.contains("ENCRYPTED") {
            return Err(KeyError::Encrypted);
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(unindented(text).as_bytes()).map_err(|e| {
            KeyError::NotPem {
                label: "PRIVATE KEY",
                detail: e.to_string(),
            }
        })?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ring_signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|_| KeyError::NotP256)?;
        Ok(Self { pair })
    }

    /// The signature (ASN.1 DER) of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .expect("signing with a valid key does not fail")
            .as_ref()
            .to_vec()
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }
}

/// cosign's simple-signing payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// What the signature is about.
    pub critical: Critical,
    /// The signer's annotations (`cosign sign -a key=value`).
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

/// The part of a payload a verifier must check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository signed.
    pub identity: Identity,
    /// The manifest signed.
    pub image: Image,
    /// [`SIGNATURE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// The repository a payload names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `host/repository`.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// The manifest a payload names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>`.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload cosign signs for `digest` in `repository`, with `annotations`.
    pub fn new(repository: &str, digest: &str, annotations: &BTreeMap<String, String>) -> Self {
        Self {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_owned(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_owned(),
                },
                kind: SIGNATURE_TYPE.to_owned(),
            },
            optional: (!annotations.is_empty()).then(|| {
                annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect()
            }),
        }
    }

    /// Its JSON, as signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a payload serializes")
    }

    /// Parses a payload; a payload of another type is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let payload: Self = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a cosign simple-signing payload: {e}"))?;
        if payload.critical.kind != SIGNATURE_TYPE {
            return Err(format!(
                "the payload's type is `{}`, not `{SIGNATURE_TYPE}`",
                payload.critical.kind
            ));
        }
        Ok(payload)
    }

    /// Whether the signer's annotations hold every one of `required`.
    pub fn has_annotations(&self, required: &BTreeMap<String, String>) -> bool {
        let optional = self.optional.as_ref();
        required.iter().all(|(key, value)| {
            optional
                .and_then(|o| o.get(key))
                .is_some_and(|v| v.as_str() == Some(value))
        })
    }
}

/// One signature found for a manifest: the payload and its signature, as
/// pulled (checked against the layer's digest), not yet verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The payload bytes, as signed.
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    /// The ECDSA signature (ASN.1 DER).
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
}

impl Signature {
    /// Reads the signature annotation of a layer.
    pub fn decode_annotation(value: &str) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| format!("the signature annotation is not base64: {e}"))
    }

    /// The value of the layer's signature annotation.
    pub fn annotation(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.signature)
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A key made with `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` (test only).
    pub(in crate::source::verify) const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVBBqwtCO/ul+4Ovw
prp1wgFyYshTEm5SLy2E3TR4AcehRANCAAR7yOvtJefITMEjSscpGT+XCBk3dRv0
oVfRwOe+p0dNvGFMihpWp3VJyjdvGi3IH89iYNTvEmZRXeNf3j0SwK3W
-----END PRIVATE KEY-----";

    /// Its public half, from `openssl pkey -pubout`.
    pub(in crate::source::verify) const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEe8jr7SXnyEzBI0rHKRk/lwgZN3Ub
9KFX0cDnvqdHTbxhTIoaVqd1Sco3bxotyB/PYmDU7xJmUV3jX949EsCt1g==
-----END PUBLIC KEY-----";

    /// A P-384 key: not cosign's curve.
    const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEypDilZtJxPCEha6kCvEG1iXLNZXNLdN4
LCivZfnWfllTyLZNMVBWP7OKKrrgqXbISU3wknr5cjh/g4DE71ktkGRNFHwP8TtD
Thqcpl2RBgOSdLJfZmBiYprwxiyaXzNF
-----END PUBLIC KEY-----";

    #[test]
    fn signature_tags_follow_cosign() {
        let hex = "ab".repeat(32);
        assert_eq!(
            signature_tag(&format!("sha256:{hex}")).unwrap(),
            format!("sha256-{hex}.sig")
        );
        assert!(signature_tag("sha256:../x").is_none());
        assert!(signature_tag("nodigest").is_none());
    }

    #[test]
    fn a_payload_round_trips_in_cosign_s_shape() {
        let annotations = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        let payload = Payload::new("host/repo", "sha256:00", &annotations);
        let text = String::from_utf8(payload.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"critical":{"identity":{"docker-reference":"host/repo"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":{"env":"prod"}}"#
        );
        let parsed = Payload::parse(text.as_bytes()).unwrap();
        assert!(parsed.has_annotations(&annotations));
        assert!(parsed.has_annotations(&BTreeMap::new()));
        let other = BTreeMap::from([("env".to_owned(), "dev".to_owned())]);
        assert!(!parsed.has_annotations(&other));
        let unannotated = Payload::new("host/repo", "sha256:00", &BTreeMap::new());
        assert!(
            String::from_utf8(unannotated.to_bytes())
                .unwrap()
                .ends_with(r#""optional":null}"#)
        );
        assert!(Payload::parse(br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"atomic"},"optional":null}"#).is_err());
    }

    #[test]
    fn keys_sign_and_verify_and_refuse_others() {
        let key = SigningKey::from_pem(PRIVATE).unwrap();
        let public = key.public_key();
        assert_eq!(public, PublicKey::from_pem(PUBLIC).unwrap());
        let signature = key.sign(b"payload");
        assert!(public.verifies(b"payload", &signature));
        assert!(!public.verifies(b"payloaD", &signature));
        assert!(!public.verifies(b"payload", b"garbage"));
        assert!(public.fingerprint().starts_with("sha256:"));
        assert!(matches!(
            PublicKey::from_pem("not a key"),
            Err(KeyError::NotPem { .. })
        ));
        assert!(matches!(
            PublicKey::from_pem(P384_PUBLIC),
            Err(KeyError::NotP256)
        ));
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
            Err(KeyError::Encrypted)
        ));
    }
}
