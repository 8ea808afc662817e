//! Kubernetes' side of the boundary: an `AdmissionReview` (or bare
//! `AdmissionRequest`) in, an `AdmissionResponse` out.
//!
//! Objects are never re-serialized on the way in: their JSON text is handed to
//! the policy as the API server wrote it.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bindings::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo,
    ValidationResponse,
};

/// The `apiVersion` of the reviews this host speaks.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// Why a request body is not a usable admission request.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed admission request: {0}")]
    Malformed(String),
    /// An `AdmissionReview` without its `request`.
    #[error("the AdmissionReview has no `request`")]
    MissingRequest,
    /// An object that is not an `admission.k8s.io/v1` `AdmissionReview`.
    #[error(
        "expected apiVersion `{ADMISSION_API_VERSION}` and kind `AdmissionReview`, \
         got apiVersion `{api_version}` and kind `{kind}`"
    )]
    WrongType {
        /// The apiVersion found.
        api_version: String,
        /// The kind found.
        kind: String,
    },
}

/// Parses an `admission.k8s.io/v1` `AdmissionReview`, as the API server sends it.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest, AdmissionError> {
    // The common case in one pass, so the object (most of the body) is
    // scanned once, not once for the envelope and again for the request.
    if let Ok(review) = from_json::<Review<'_>>(body)
        && review.api_version.as_deref() == Some(ADMISSION_API_VERSION)
        && review.kind.as_ref().and_then(|k| k.as_str()) == Some("AdmissionReview")
        && let Some(request) = review.request
    {
        return Ok(request.into());
    }
    // Everything else in two steps, whose errors say which part is wrong
    // (the type before the request's own fields).
    parse_review_in_steps(body)
}

fn parse_review_in_steps(body: &[u8]) -> Result<AdmissionRequest, AdmissionError> {
    let review: ReviewEnvelope<'_> = from_json(body)?;
    let api_version = review.api_version.unwrap_or_default();
    let kind = review
        .kind
        .as_ref()
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    if api_version != ADMISSION_API_VERSION || kind != "AdmissionReview" {
        return Err(AdmissionError::WrongType {
            api_version,
            kind: kind.to_owned(),
        });
    }
    let request = review.request.ok_or(AdmissionError::MissingRequest)?;
    parse_request(request.get().as_bytes())
}

/// Parses either a full `AdmissionReview` or a bare `AdmissionRequest`, the
/// way `kwctl run` does: convenient for fixtures and the command line.
pub fn parse_review_or_request(body: &[u8]) -> Result<AdmissionRequest, AdmissionError> {
    let review: ReviewEnvelope<'_> = from_json(body)?;
    let is_review = review.request.is_some()
        || review.kind.as_ref().and_then(|k| k.as_str()) == Some("AdmissionReview");
    if is_review {
        parse_review(body)
    } else {
        parse_request(body)
    }
}

/// Parses a bare `AdmissionRequest`.
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest, AdmissionError> {
    let request: KubeRequest<'_> = from_json(body)?;
    Ok(request.into())
}

/// Checks that `body` is one JSON document (any value) and returns its
/// top-level string `uid`, if it has one, for a raw policy's response.
///
/// The document is walked, not built: its syntax, UTF-8, escapes, number
/// ranges and nesting depth are checked exactly as parsing it into a
/// `serde_json::Value` would, but nothing is allocated for it — a multi-MB
/// document with hundreds of thousands of keys costs one pass, on the thread
/// serving HTTP, and the policy parses it again anyway.
pub fn raw_document_uid(body: &[u8]) -> Result<String, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let uid = Walk::TopLevel.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(uid.unwrap_or_default())
}

/// A walk over a JSON value that checks it as a `serde_json::Value` parse
/// would (`deserialize_any`, so number ranges too, unlike `IgnoredAny`),
/// drops it as it is read, and keeps one string: the top-level `uid`.
#[derive(Clone, Copy, PartialEq)]
enum Walk {
    /// The document: keep its `uid` member, if a string (the last one, as a
    /// map built from the document would).
    TopLevel,
    /// The value of a top-level `uid`: keep it, if a string.
    Uid,
    /// Anything else: keep nothing.
    Inside,
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk {
    type Value = Option<String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A top-level key, and whether it is `uid` (compared, not kept).
struct IsUid(bool);

impl<'de> Deserialize<'de> for IsUid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = IsUid;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<IsUid, E> {
                Ok(IsUid(key == "uid"))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk {
    type Value = Option<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut uid = None;
        if self == Walk::TopLevel {
            while let Some(IsUid(is_uid)) = map.next_key()? {
                if is_uid {
                    uid = map.next_value_seed(Walk::Uid)?;
                } else {
                    map.next_value_seed(Walk::Inside)?;
                }
            }
        } else {
            while map.next_key_seed(Walk::Inside)?.is_some() {
                map.next_value_seed(Walk::Inside)?;
            }
        }
        Ok(uid)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element_seed(Walk::Inside)?.is_some() {}
        Ok(None)
    }
    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok((self == Walk::Uid).then(|| text.to_owned()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Parses `body` as a JSON object of type `T`.
///
/// The whole body must be UTF-8 (RFC 8259), including strings in fields the
/// parser skips, and every struct must be written as a JSON object: serde
/// would otherwise also accept an array of its fields in order.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, AdmissionError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| AdmissionError::Malformed(format!("the body is not UTF-8: {e}")))?;
    serde_json::from_str::<ObjectOnly<T>>(text)
        .map(|object| object.0)
        .map_err(|e| AdmissionError::Malformed(e.to_string()))
}

/// A `T` that must be written as a JSON object (never as an array).
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

fn object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    ObjectOnly::deserialize(deserializer).map(|object| object.0)
}

fn optional_object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<ObjectOnly<T>>::deserialize(deserializer).map(|object| object.map(|o| o.0))
}

/// A whole `AdmissionReview`, request included.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: Option<String>,
    kind: Option<serde_json::Value>,
    #[serde(borrow, default, deserialize_with = "optional_object")]
    request: Option<KubeRequest<'a>>,
}

/// Just enough of an `AdmissionReview` to tell it from a bare request.
/// (`kind` is a string in a review but an object in a request.)
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an AdmissionReview object")]
struct ReviewEnvelope<'a> {
    api_version: Option<String>,
    kind: Option<serde_json::Value>,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an AdmissionRequest object")]
struct KubeRequest<'a> {
    uid: String,
    #[serde(deserialize_with = "object")]
    kind: KubeGvk,
    #[serde(deserialize_with = "object")]
    resource: KubeGvr,
    sub_resource: Option<String>,
    #[serde(default, deserialize_with = "optional_object")]
    request_kind: Option<KubeGvk>,
    #[serde(default, deserialize_with = "optional_object")]
    request_resource: Option<KubeGvr>,
    request_sub_resource: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: KubeOperation,
    #[serde(default, deserialize_with = "object")]
    user_info: KubeUserInfo,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    old_object: Option<&'a RawValue>,
    dry_run: Option<bool>,
    #[serde(borrow)]
    options: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct KubeGvk {
    #[serde(default)]
    group: String,
    version: String,
    kind: String,
}

#[derive(Deserialize)]
struct KubeGvr {
    #[serde(default)]
    group: String,
    version: String,
    resource: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum KubeOperation {
    Create,
    Update,
    Delete,
    Connect,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KubeUserInfo {
    username: String,
    uid: String,
    groups: Vec<String>,
    #[serde(deserialize_with = "object")]
    extra: BTreeMap<String, Vec<String>>,
}

impl From<KubeRequest<'_>> for AdmissionRequest {
    fn from(r: KubeRequest<'_>) -> Self {
        Self {
            uid: r.uid,
            kind: r.kind.into(),
            resource: r.resource.into(),
            sub_resource: non_empty(r.sub_resource),
            request_kind: r.request_kind.map(Into::into),
            request_resource: r.request_resource.map(Into::into),
            request_sub_resource: non_empty(r.request_sub_resource),
            name: non_empty(r.name),
            namespace: non_empty(r.namespace),
            operation: match r.operation {
                KubeOperation::Create => Operation::Create,
                KubeOperation::Update => Operation::Update,
                KubeOperation::Delete => Operation::Delete,
                KubeOperation::Connect => Operation::Connect,
            },
            user_info: UserInfo {
                username: r.user_info.username,
                uid: r.user_info.uid,
                groups: r.user_info.groups,
                extra: r.user_info.extra.into_iter().collect(),
            },
            object: json_text(r.object),
            old_object: json_text(r.old_object),
            dry_run: r.dry_run.unwrap_or(false),
            options: json_text(r.options),
        }
    }
}

impl From<KubeGvk> for GroupVersionKind {
    fn from(g: KubeGvk) -> Self {
        Self {
            group: g.group,
            version: g.version,
            kind: g.kind,
        }
    }
}

impl From<KubeGvr> for GroupVersionResource {
    fn from(g: KubeGvr) -> Self {
        Self {
            group: g.group,
            version: g.version,
            resource: g.resource,
        }
    }
}

/// Kubernetes omits or empties optional strings interchangeably.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// `null` and absent both mean "no object".
fn json_text(raw: Option<&RawValue>) -> Option<String> {
    raw.map(RawValue::get)
        .filter(|text| *text != "null")
        .map(str::to_owned)
}

/// An `admission.k8s.io/v1` `AdmissionResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid, echoed.
    pub uid: String,
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when `patch` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// An RFC 6902 JSON patch, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Warnings for the client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Annotations for the API server's audit log.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// The `status` of a rejected `AdmissionResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// A message for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// An HTTP status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// What caused it: a policy group's rejecting members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// `status.details` of a rejection (Kubernetes' `StatusDetails`; only the
/// causes are used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// One per reason for the rejection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// One cause of a rejection (Kubernetes' `StatusCause`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Where the cause lies: `spec.policies.<member>` for a group's member,
    /// as Kubewarden writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What the member said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A mutation that cannot be turned into a patch.
#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    /// The policy's mutated object is not JSON.
    #[error("the policy returned a mutated object that is not valid JSON: {0}")]
    Mutated(String),
    /// The submitted object is not JSON the host can read (e.g. a number out
    /// of range), so no patch against it can be computed.
    #[error("the submitted object cannot be patched: it is not valid JSON: {0}")]
    Original(String),
}

impl AdmissionResponse {
    /// A rejection with `message` and `code`.
    pub fn reject(uid: impl Into<String>, message: impl Into<String>, code: u16) -> Self {
        Self {
            uid: uid.into(),
            allowed: false,
            status: Some(Status {
                message: Some(message.into()),
                code: Some(code),
                details: None,
            }),
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// An admission without remarks.
    pub fn allow(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// Turns a policy's verdict into a response. A mutated object becomes a
    /// JSON patch against `original` (the submitted object's JSON).
    pub fn from_verdict(
        uid: impl Into<String>,
        verdict: ValidationResponse,
        original: Option<&str>,
    ) -> Result<Self, MutationError> {
        let patch = match &verdict.mutated_object {
            Some(mutated) => Some(json_patch_between(original, mutated)?),
            None => None,
        };
        let status = (verdict.message.is_some() || verdict.code.is_some()).then_some(Status {
            message: verdict.message,
            code: verdict.code,
            details: None,
        });
        Ok(Self {
            uid: uid.into(),
            allowed: verdict.allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch".to_owned()),
            patch,
            warnings: verdict.warnings,
            audit_annotations: verdict.audit_annotations.into_iter().collect(),
        })
    }
}

/// The base64 of the RFC 6902 patch that turns `original` into `mutated`.
fn json_patch_between(original: Option<&str>, mutated: &str) -> Result<String, MutationError> {
    let original = match original {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| MutationError::Original(e.to_string()))?
        }
        None => serde_json::Value::Null,
    };
    let mutated =
        serde_json::from_str(mutated).map_err(|e| MutationError::Mutated(e.to_string()))?;
    let patch = json_patch::diff(&original, &mutated);
    let bytes = serde_json::to_vec(&patch).expect("a JSON patch always serializes");
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Appends `request` to `out` as Kubernetes' AdmissionRequest JSON, absent
/// fields left out (as Kubewarden sends it: its SDKs read absent strings as
/// empty, but not `null` ones; Gatekeeper's templates read it as `input.review`).
///
/// The documents — object, old object, options — are JSON the host already
/// parsed on the way in (the API server's bytes): they are spliced in as
/// they are, not scanned again.
pub fn write_request_json(request: &AdmissionRequest, out: &mut String) {
    let head = serde_json::to_string(&RequestJson::from(request))
        .expect("a request of strings serializes");
    // The head is an object with at least a uid: drop its `}` and go on.
    out.push_str(&head[..head.len() - 1]);
    for (name, document) in [
        ("object", request.object.as_deref()),
        ("oldObject", request.old_object.as_deref()),
        ("options", request.options.as_deref()),
    ] {
        if let Some(document) = document {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            out.push_str(document);
        }
    }
    out.push('}');
}

/// About how many bytes [`write_request_json`] writes for `request`.
pub fn request_json_capacity(request: &AdmissionRequest) -> usize {
    [&request.object, &request.old_object, &request.options]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>()
        + 512
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestJson<'a> {
    uid: &'a str,
    kind: GvkJson<'a>,
    resource: GvrJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_kind: Option<GvkJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_resource: Option<GvrJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_sub_resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    operation: &'static str,
    user_info: UserInfoJson<'a>,
    dry_run: bool,
}

#[derive(Serialize)]
struct GvkJson<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct GvrJson<'a> {
    group: &'a str,
    version: &'a str,
    resource: &'a str,
}

#[derive(Serialize)]
struct UserInfoJson<'a> {
    username: &'a str,
    uid: &'a str,
    groups: &'a [String],
    extra: BTreeMap<&'a str, &'a [String]>,
}

impl<'a> From<&'a GroupVersionKind> for GvkJson<'a> {
    fn from(g: &'a GroupVersionKind) -> Self {
        Self {
            group: &g.group,
            version: &g.version,
            kind: &g.kind,
        }
    }
}

impl<'a> From<&'a GroupVersionResource> for GvrJson<'a> {
    fn from(g: &'a GroupVersionResource) -> Self {
        Self {
            group: &g.group,
            version: &g.version,
            resource: &g.resource,
        }
    }
}

impl<'a> From<&'a AdmissionRequest> for RequestJson<'a> {
    fn from(r: &'a AdmissionRequest) -> Self {
        Self {
            uid: &r.uid,
            kind: (&r.kind).into(),
            resource: (&r.resource).into(),
            sub_resource: r.sub_resource.as_deref(),
            request_kind: r.request_kind.as_ref().map(Into::into),
            request_resource: r.request_resource.as_ref().map(Into::into),
            request_sub_resource: r.request_sub_resource.as_deref(),
            name: r.name.as_deref(),
            namespace: r.namespace.as_deref(),
            operation: match r.operation {
                Operation::Create => "CREATE",
                Operation::Update => "UPDATE",
                Operation::Delete => "DELETE",
                Operation::Connect => "CONNECT",
            },
            user_info: UserInfoJson {
                username: &r.user_info.username,
                uid: &r.user_info.uid,
                groups: &r.user_info.groups,
                extra: r
                    .user_info
                    .extra
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect(),
            },
            dry_run: r.dry_run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
        "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
        "namespace":"","object":{"metadata":{"name":"p"}},"oldObject":null}"#;

    #[test]
    fn bare_request_keeps_object_text_and_drops_empty_fields() {
        let request = parse_review_or_request(REQUEST.as_bytes()).unwrap();
        assert_eq!(request.uid, "u1");
        assert_eq!(
            request.object.as_deref(),
            Some(r#"{"metadata":{"name":"p"}}"#)
        );
        assert_eq!(request.old_object, None);
        assert_eq!(request.namespace, None);
        assert!(matches!(request.operation, Operation::Create));
    }

    #[test]
    fn review_is_unwrapped_and_checked() {
        let review = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{REQUEST}}}"#
        );
        assert_eq!(parse_review(review.as_bytes()).unwrap().uid, "u1");
        let wrong = review.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        let err = parse_review(wrong.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("got apiVersion `admission.k8s.io/v1beta1`"),
            "{err}"
        );
        let missing = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(
            parse_review(missing.as_bytes()),
            Err(AdmissionError::MissingRequest)
        ));
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = parse_review_or_request(b"{\"uid\": ").unwrap_err();
        assert!(
            err.to_string().starts_with("malformed admission request: "),
            "{err}"
        );
    }

    #[test]
    fn mutation_becomes_a_patch_that_reproduces_it() {
        let original = r#"{"metadata":{"name":"p"}}"#;
        let mutated = r#"{"metadata":{"name":"p","annotations":{"a":"b"}}}"#;
        let verdict = ValidationResponse {
            allowed: true,
            message: None,
            code: None,
            warnings: vec![],
            audit_annotations: vec![],
            mutated_object: Some(mutated.into()),
        };
        let response = AdmissionResponse::from_verdict("u", verdict, Some(original)).unwrap();
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response.patch.unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(original).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            serde_json::from_str::<serde_json::Value>(mutated).unwrap()
        );
    }
}
