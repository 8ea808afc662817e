//! A native test harness: run a policy in plain `cargo test`, through the
//! same [glue] the component uses.
//!
//! ```
//! # use portcullis_sdk::{accept, reject, AdmissionRequest, Metadata, NoSettings, Policy, Verdict};
//! # struct DenyDeletes;
//! # impl Policy for DenyDeletes {
//! #     type Settings = NoSettings;
//! #     fn metadata() -> Metadata { Metadata::new("Denies deletions.") }
//! #     fn validate(request: &AdmissionRequest, _: &NoSettings) -> Verdict {
//! #         if request.operation == portcullis_sdk::Operation::Delete { reject("no deletions") } else { accept() }
//! #     }
//! # }
//! use portcullis_sdk::serde_json::json;
//! use portcullis_sdk::testing::Harness;
//!
//! let harness = Harness::<DenyDeletes>::new();
//! harness
//!     .validate(json!({
//!         "uid": "1",
//!         "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
//!         "operation": "DELETE",
//!     }))
//!     .assert_rejected("no deletions");
//! // Fixture files work too, bare AdmissionRequests or full AdmissionReviews:
//! // harness.validate_file("test_data/delete.json").assert_rejected("no deletions");
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bindings::wit;
use crate::glue;
use crate::metadata::Metadata;
use crate::policy::Policy;
use crate::request::AdmissionRequest;
use crate::verdict::Verdict;

/// Runs policy `P` natively, holding the settings to run it with.
///
/// Every method goes through the functions in [`glue`], exactly
/// like the exported component. Methods that take fixtures panic with a
/// descriptive message when a fixture is missing or malformed, since that is
/// a bug in the test rather than something to assert on.
pub struct Harness<P: Policy> {
    settings: String,
    cluster: Option<FakeCluster>,
    policy: PhantomData<fn() -> P>,
}

pub use crate::fake_cluster::FakeCluster;

impl<P: Policy> fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("policy", &std::any::type_name::<P>())
            .field("settings", &self.settings)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl<P: Policy> Default for Harness<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Policy> Harness<P> {
    /// A harness with no settings (`{}`), like a policy loaded without any.
    pub fn new() -> Self {
        Harness {
            settings: "{}".to_owned(),
            cluster: None,
            policy: PhantomData,
        }
    }

    /// Answers the policy's [`cluster`](crate::cluster) reads from
    /// `cluster`, as the host answers them from the real one (without one,
    /// reads answer `unavailable`).
    pub fn cluster(mut self, cluster: FakeCluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Runs `f` with the harness's cluster in place.
    fn in_cluster<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.cluster {
            Some(cluster) => cluster.run(f),
            None => f(),
        }
    }

    /// Uses these settings, e.g. `json!({"skip_init_containers": true})`.
    pub fn settings_json(mut self, settings: Value) -> Self {
        self.settings = settings.to_string();
        self
    }

    /// Uses this settings text verbatim (it need not be valid JSON, to test
    /// how the policy reports bad settings).
    pub fn settings_text(mut self, settings: impl Into<String>) -> Self {
        self.settings = settings.into();
        self
    }

    /// Uses the settings in a file, verbatim. Relative paths are resolved
    /// against the current directory, which `cargo test` sets to the
    /// directory of the crate under test.
    ///
    /// # Panics
    ///
    /// When the file cannot be read.
    #[track_caller]
    pub fn settings_file(mut self, path: impl AsRef<Path>) -> Self {
        self.settings = read_fixture(path.as_ref(), "settings");
        self
    }

    /// The settings text the harness passes to the policy.
    pub fn settings(&self) -> &str {
        &self.settings
    }

    /// The policy's metadata, as the `metadata` export returns it.
    pub fn metadata(&self) -> Metadata {
        glue::metadata::<P>().into()
    }

    /// Validates the settings, as the `validate-settings` export does.
    pub fn validate_settings(&self) -> Result<(), String> {
        glue::validate_settings::<P>(&self.settings)
    }

    /// Validates an admission request given as JSON: either a bare
    /// `AdmissionRequest` (like Kubewarden's fixtures) or a full
    /// `AdmissionReview` whose `request` is used.
    ///
    /// # Panics
    ///
    /// When the JSON is not an admission request, or when the harness's
    /// settings are invalid (the host never calls `validate` with settings
    /// `validate-settings` refused; test those with
    /// [`validate_settings`](Self::validate_settings)).
    #[track_caller]
    pub fn validate(&self, request: Value) -> Verdict {
        let request = parse_request(request).unwrap_or_else(|error| panic!("{error}"));
        self.validate_request(&request)
    }

    /// Validates the admission request in a JSON file (a bare
    /// `AdmissionRequest` or a full `AdmissionReview`). Relative paths are
    /// resolved against the crate directory, as for
    /// [`settings_file`](Self::settings_file).
    ///
    /// # Panics
    ///
    /// When the file cannot be read or is not an admission request, and when
    /// the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    pub fn validate_file(&self, path: impl AsRef<Path>) -> Verdict {
        let path = path.as_ref();
        let text = read_fixture(path, "admission request");
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|error| {
            panic!("fixture `{}` is not valid JSON: {error}", path.display())
        });
        let request = parse_request(json)
            .unwrap_or_else(|error| panic!("fixture `{}`: {error}", path.display()));
        self.validate_request(&request)
    }

    /// Validates an SDK [`AdmissionRequest`], converting it to the form the
    /// host sends first.
    ///
    /// # Panics
    ///
    /// When the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    pub fn validate_request(&self, request: &AdmissionRequest) -> Verdict {
        self.validate_wire(request.into())
    }

    /// Validates a request exactly as the host would send it: objects as JSON
    /// text, which may be invalid, to test how a malformed request is handled.
    ///
    /// # Panics
    ///
    /// When the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    pub fn validate_wire(&self, request: wit::AdmissionRequest) -> Verdict {
        self.check_settings();
        into_verdict(self.in_cluster(|| glue::validate::<P>(request, &self.settings)))
    }

    /// Validates a raw JSON document, as the `validate-raw` export does.
    ///
    /// # Panics
    ///
    /// When the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    pub fn validate_raw(&self, document: Value) -> Verdict {
        self.validate_raw_text(&document.to_string())
    }

    /// Validates raw document text, verbatim (it need not be valid JSON).
    ///
    /// # Panics
    ///
    /// When the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    pub fn validate_raw_text(&self, document: &str) -> Verdict {
        self.check_settings();
        into_verdict(self.in_cluster(|| glue::validate_raw::<P>(document, &self.settings)))
    }

    /// Validates the raw document in a file, verbatim.
    ///
    /// # Panics
    ///
    /// When the file cannot be read or the settings are invalid.
    #[track_caller]
    pub fn validate_raw_file(&self, path: impl AsRef<Path>) -> Verdict {
        let text = read_fixture(path.as_ref(), "raw document");
        self.validate_raw_text(&text)
    }

    #[track_caller]
    fn check_settings(&self) {
        if let Err(error) = self.validate_settings() {
            panic!(
                "the harness's settings for {} are invalid, and the host would refuse to load \
                 the policy with them: {error}\n  settings: {}\n  (to test settings errors, \
                 assert on Harness::validate_settings instead)",
                std::any::type_name::<P>(),
                self.settings
            );
        }
    }
}

#[track_caller]
fn into_verdict(response: wit::ValidationResponse) -> Verdict {
    Verdict::try_from(response).unwrap_or_else(|error| panic!("{error}"))
}

/// Reads a fixture, or panics explaining where it was looked for.
#[track_caller]
fn read_fixture(path: &Path, what: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("?"));
            let resolved = if path.is_absolute() {
                path.to_path_buf()
            } else {
                cwd.join(path)
            };
            panic!(
                "cannot read the {what} fixture `{}`: {error}\n  looked for: {}\n  \
                 (relative paths are resolved against the current directory, {}, which \
                 `cargo test` sets to the directory of the crate under test)",
                path.display(),
                resolved.display(),
                cwd.display()
            )
        }
    }
}

/// A bare `AdmissionRequest`, or the `request` of an `AdmissionReview`.
fn parse_request(json: Value) -> Result<AdmissionRequest, String> {
    let is_review = json.get("kind").and_then(Value::as_str) == Some("AdmissionReview");
    let request = if is_review {
        match json {
            Value::Object(mut review) => review
                .remove("request")
                .filter(|request| !request.is_null())
                .ok_or("the AdmissionReview has no `request`")?,
            _ => unreachable!("only objects have a `kind`"),
        }
    } else {
        json
    };
    serde_json::from_value(request)
        .map_err(|error| format!("not an AdmissionRequest (nor an AdmissionReview): {error}"))
}

/// Assertions for tests, with messages that show the whole verdict.
impl Verdict {
    /// Asserts that the request was admitted.
    ///
    /// # Panics
    ///
    /// When it was rejected.
    #[track_caller]
    pub fn assert_accepted(&self) -> &Self {
        assert!(
            self.allowed,
            "expected the request to be accepted, got {self:#?}"
        );
        self
    }

    /// Asserts that the request was rejected with exactly `message`.
    ///
    /// # Panics
    ///
    /// When it was admitted or rejected with another message.
    #[track_caller]
    pub fn assert_rejected(&self, message: &str) -> &Self {
        assert!(
            !self.allowed && self.message.as_deref() == Some(message),
            "expected the request to be rejected with {message:?}, got {self:#?}"
        );
        self
    }

    /// Asserts that the request was rejected with exactly `message` and `code`.
    ///
    /// # Panics
    ///
    /// When it was admitted, or rejected with another message or code.
    #[track_caller]
    pub fn assert_rejected_with_code(&self, message: &str, code: u16) -> &Self {
        assert!(
            !self.allowed && self.message.as_deref() == Some(message) && self.code == Some(code),
            "expected the request to be rejected with {message:?} and code {code}, got {self:#?}"
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        NoSettings, Operation, RawJson, Rule, Settings, accept, mutate, reject, reject_with_code,
    };
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct EchoSettings {
        deny_namespace: Option<String>,
        mutate: bool,
    }

    impl Settings for EchoSettings {
        fn validate(&self) -> Result<(), String> {
            match self.deny_namespace.as_deref() {
                Some("") => Err("deny_namespace must not be empty".into()),
                _ => Ok(()),
            }
        }
    }

    /// Echoes what it received, so tests can see what the glue passed on.
    struct Echo;

    impl Policy for Echo {
        type Settings = EchoSettings;

        fn metadata() -> Metadata {
            Metadata::new("echo").rule(
                Rule::new()
                    .api_groups([""])
                    .api_versions(["v1"])
                    .resources(["pods"])
                    .operations([Operation::Create]),
            )
        }

        fn validate(request: &AdmissionRequest, settings: &EchoSettings) -> Verdict {
            if request.namespace.is_some() && request.namespace == settings.deny_namespace {
                return reject_with_code("namespace denied", 403);
            }
            if settings.mutate {
                let mut object = request
                    .object
                    .as_ref()
                    .map(RawJson::to_value)
                    .unwrap_or_default();
                object["metadata"]["labels"]["echo"] = json!("yes");
                return mutate(object);
            }
            accept()
                .with_audit_annotation("uid", request.uid.clone())
                .with_audit_annotation("operation", request.operation.to_string())
                .with_audit_annotation(
                    "object",
                    request
                        .object
                        .as_ref()
                        .map(RawJson::to_string)
                        .unwrap_or_default(),
                )
                .with_warning(format!("dry run: {}", request.dry_run))
        }

        fn validate_raw(document: &Value, _: &EchoSettings) -> Verdict {
            match document.get("allowed").and_then(Value::as_bool) {
                Some(true) => accept(),
                _ => reject("not allowed"),
            }
        }
    }

    struct NoRaw;

    impl Policy for NoRaw {
        type Settings = NoSettings;
        fn metadata() -> Metadata {
            Metadata::new("no raw")
        }
        fn validate(_: &AdmissionRequest, _: &NoSettings) -> Verdict {
            accept()
        }
    }

    fn pod_request() -> Value {
        json!({
            "uid": "abc",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"kind": "Pod", "metadata": {"name": "p"}},
        })
    }

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data")
    }

    #[test]
    fn metadata_goes_through_the_wit_types() {
        let metadata = Harness::<Echo>::new().metadata();
        assert_eq!(metadata, Echo::metadata());
    }

    #[test]
    fn validates_a_bare_request() {
        let verdict = Harness::<Echo>::new().validate(pod_request());
        verdict.assert_accepted();
        assert_eq!(
            verdict.audit_annotations,
            [
                ("uid".to_string(), "abc".to_string()),
                ("operation".to_string(), "CREATE".to_string()),
                (
                    "object".to_string(),
                    r#"{"kind":"Pod","metadata":{"name":"p"}}"#.to_string()
                ),
            ]
        );
        assert_eq!(verdict.warnings, ["dry run: false"]);
    }

    #[test]
    fn validates_an_admission_review() {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": pod_request(),
        });
        Harness::<Echo>::new()
            .settings_json(json!({"deny_namespace": "default"}))
            .validate(review)
            .assert_rejected_with_code("namespace denied", 403);
    }

    #[test]
    fn mutations_come_back_parsed() {
        let verdict = Harness::<Echo>::new()
            .settings_json(json!({"mutate": true}))
            .validate(pod_request());
        verdict.assert_accepted();
        assert_eq!(
            verdict.mutated_object,
            Some(json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"echo": "yes"}}}))
        );
    }

    #[test]
    fn an_unparseable_object_is_rejected_not_a_panic() {
        let request: AdmissionRequest = serde_json::from_value(pod_request()).unwrap();
        let mut wire = wit::AdmissionRequest::from(&request);
        wire.object = Some("{\"kind\": \"Pod\", ".into());
        let verdict = Harness::<Echo>::new().validate_wire(wire);
        assert!(!verdict.allowed);
        assert_eq!(verdict.code, Some(400));
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "invalid admission request: `object` is not valid JSON: EOF while parsing a value at line 1 column 16"
            )
        );
    }

    #[test]
    fn a_null_object_text_is_no_object() {
        let request: AdmissionRequest = serde_json::from_value(pod_request()).unwrap();
        let mut wire = wit::AdmissionRequest::from(&request);
        wire.object = Some("null".into());
        let verdict = Harness::<Echo>::new().validate_wire(wire);
        assert_eq!(
            verdict.audit_annotations[2],
            ("object".to_string(), String::new())
        );
    }

    #[test]
    fn settings_are_validated_like_the_export() {
        assert_eq!(Harness::<Echo>::new().validate_settings(), Ok(()));
        assert_eq!(
            Harness::<Echo>::new()
                .settings_json(json!({"mutate": "yes"}))
                .validate_settings(),
            Err(
                "invalid settings: mutate: invalid type: string \"yes\", expected a boolean".into()
            )
        );
        assert_eq!(
            Harness::<Echo>::new()
                .settings_json(json!({"deny_namespace": ""}))
                .validate_settings(),
            Err("invalid settings: deny_namespace must not be empty".into())
        );
        assert_eq!(
            Harness::<Echo>::new().settings_text("{").validate_settings(),
            Err("invalid settings: the settings are not valid JSON: EOF while parsing an object at line 1 column 1".into())
        );
    }

    #[test]
    fn glue_rejects_with_500_when_settings_are_invalid() {
        let request: AdmissionRequest = serde_json::from_value(pod_request()).unwrap();
        let response = glue::validate::<Echo>((&request).into(), r#"{"bogus": 1}"#);
        assert!(!response.allowed);
        assert_eq!(response.code, Some(500));
        assert!(
            response
                .message
                .as_deref()
                .unwrap()
                .starts_with("invalid settings: unknown field `bogus`"),
            "{response:?}"
        );
    }

    #[test]
    #[should_panic(expected = "the harness's settings for")]
    fn validating_with_invalid_settings_panics() {
        let _ = Harness::<Echo>::new()
            .settings_json(json!({"bogus": 1}))
            .validate(pod_request());
    }

    #[test]
    fn raw_validation() {
        let harness = Harness::<Echo>::new();
        harness
            .validate_raw(json!({"allowed": true}))
            .assert_accepted();
        harness
            .validate_raw(json!({"allowed": false}))
            .assert_rejected("not allowed");
        harness
            .validate_raw_text("not json")
            .assert_rejected_with_code(
                "invalid document: not valid JSON: expected ident at line 1 column 2",
                400,
            );
        Harness::<NoRaw>::new()
            .validate_raw(json!({}))
            .assert_rejected("this policy does not support raw validation");
    }

    #[test]
    fn fixture_files_are_read() {
        let dir = fixture_dir();
        let harness = Harness::<Echo>::new().settings_file(dir.join("deny_default.json"));
        assert_eq!(
            harness.settings().trim(),
            r#"{"deny_namespace": "default"}"#
        );
        harness
            .validate_file(dir.join("pod_review.json"))
            .assert_rejected_with_code("namespace denied", 403);
    }

    #[test]
    #[should_panic(expected = "cannot read the admission request fixture `test_data/nope.json`")]
    fn a_missing_fixture_panics_helpfully() {
        let _ = Harness::<Echo>::new().validate_file("test_data/nope.json");
    }

    #[test]
    #[should_panic(
        expected = "not an AdmissionRequest (nor an AdmissionReview): missing field `operation`"
    )]
    fn a_non_request_panics_helpfully() {
        let _ = Harness::<Echo>::new().validate(json!({"kind": {"kind": "Pod"}}));
    }

    #[test]
    fn verdict_assertions_pass_through() {
        reject("x").assert_rejected("x");
        accept().assert_accepted();
    }

    #[test]
    #[should_panic(expected = "expected the request to be rejected with \"x\"")]
    fn verdict_assertions_fail_loudly() {
        accept().assert_rejected("x");
    }
}
