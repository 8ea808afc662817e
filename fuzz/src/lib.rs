//! The checks behind the fuzz targets in `fuzz_targets/`, as plain functions
//! so that the unit tests below can replay the seed corpus and known-hostile
//! inputs through exactly the code libFuzzer runs.
//!
//! Each check takes the raw input bytes, drives one of the host's input
//! parsers the way the server does, and panics when an invariant breaks. It
//! returns whether the input got past the parser (for `policies.yml`: whether
//! it was UTF-8 and so reached the parser at all; the target keeps only those
//! in the corpus).

use std::collections::HashSet;
use std::path::Path;

use base64::Engine as _;
use libfuzzer_sys::arbitrary::{self, Unstructured};
use portcullis::admission::{self, AdmissionResponse};
use portcullis::bindings::ValidationResponse;
use serde_json::{Map, Number, Value};

/// `/validate` and `/audit`: `parse_review` (what the server calls) and
/// `parse_review_or_request` (what `portcullis run` calls) on arbitrary bytes.
/// When a request comes out, its object is mutated in a way derived from the
/// input and the response's JSON patch must turn the object into the mutation.
pub fn admission_review(data: &[u8]) -> bool {
    let review = admission::parse_review(data);
    let either = admission::parse_review_or_request(data);
    // Every error has a message (Display must not panic).
    for error in [review.as_ref().err(), either.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert!(!error.to_string().is_empty());
    }
    if let Ok(request) = &review {
        let other = either
            .as_ref()
            .expect("parse_review accepted what parse_review_or_request refused");
        assert_eq!(
            format!("{request:?}"),
            format!("{other:?}"),
            "the two parsers disagree on the same review"
        );
    }
    let Ok(request) = either else {
        return false;
    };
    for text in [&request.object, &request.old_object, &request.options]
        .into_iter()
        .flatten()
    {
        assert_ne!(text, "null", "`null` means no object and must become None");
        assert!(!text.is_empty(), "an object's JSON text cannot be empty");
    }
    check_verdict(&request.uid, request.object.as_deref(), data);
    true
}

/// `/validate_raw`: what the handler does with the body before and after the
/// policy runs (check the document and read its string `uid` without building
/// it, hand the body text to the policy, diff a mutation against that text).
/// The walk must accept exactly the bodies a `serde_json::Value` parse
/// accepts, and find the same `uid`.
pub fn raw_document(data: &[u8]) -> bool {
    let walked = portcullis::admission::raw_document_uid(data);
    let parsed = serde_json::from_slice::<Value>(data);
    let (uid, document) = match (walked, parsed) {
        (Ok(uid), Ok(document)) => (uid, document),
        (Err(_), Err(_)) => return false,
        (walked, parsed) => panic!(
            "the walk and a Value parse disagree: {:?} vs {:?}",
            walked.map_err(|e| e.to_string()),
            parsed.map(|_| ()).map_err(|e| e.to_string())
        ),
    };
    let expected = document
        .get("uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    assert_eq!(uid, expected, "the walk found another uid");
    // The handler `expect`s this: a panic here is a crash of the request.
    let text = std::str::from_utf8(data).expect("valid JSON is valid UTF-8");
    let again: Value =
        serde_json::from_str(text).expect("the text the policy gets parses like the body did");
    assert_eq!(again, document);
    check_verdict(&uid, Some(text), data);
    true
}

/// `policies.yml`: `portcullis::config::parse` on arbitrary UTF-8 must answer
/// a list of usable specs or an error naming the file, never panic.
pub fn policies_yml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let base = Path::new("/etc/portcullis");
    match portcullis::config::parse(text, base, "fuzz.yml") {
        Ok(configuration) => {
            let mut ids = HashSet::new();
            for spec in configuration.specs() {
                assert!(!spec.id.is_empty(), "an empty policy id was accepted");
                assert!(ids.insert(&spec.id), "duplicate id `{}` accepted", spec.id);
                assert!(
                    spec.module.is_absolute(),
                    "module {} is not absolute",
                    spec.module.display()
                );
                assert!(!spec.settings.is_null(), "settings must default to {{}}");
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("fuzz.yml: "), "{message}");
        }
    }
    true
}

/// Builds the response for a verdict that mutates `original` (the submitted
/// object's JSON text, as the host hands it to `from_verdict`) and checks
/// that the patch reproduces the mutation (exactly, but for finding F1).
fn check_verdict(uid: &str, original: Option<&str>, data: &[u8]) {
    // A verdict without a mutation never fails and carries no patch.
    let plain = AdmissionResponse::from_verdict(uid, verdict(None), original)
        .expect("a verdict without a mutation cannot fail");
    assert_eq!((plain.patch, plain.patch_type), (None, None));

    let base = match original.map(serde_json::from_str::<Value>) {
        None => Value::Null,
        Some(Ok(value)) => value,
        Some(Err(_)) => {
            // An object the host's JSON parser refuses (deeper than its
            // recursion limit, a number beyond f64, a lone surrogate...) cannot
            // be diffed: the mutation must be refused, not panic.
            let result = AdmissionResponse::from_verdict(uid, verdict(Some("{}".into())), original);
            assert!(result.is_err(), "a patch against unparseable JSON");
            return;
        }
    };
    let mut u = Unstructured::new(data);
    let mutated = mutate(&base, &mut u);
    let response =
        AdmissionResponse::from_verdict(uid, verdict(Some(mutated.to_string())), original)
            .expect("a valid mutation of a valid object");
    assert_eq!(response.uid, uid);
    assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
    let patch = response.patch.as_deref().expect("a mutation has a patch");
    let mut patched = base.clone();
    apply_patch(&mut patched, patch);
    // The patch must turn the object into the policy's, exactly but for one
    // known loss: serde_json, built without `float_roundtrip`, reads some
    // floats back 1-2 ULP off (docs/reliability.md, finding F1), both in the
    // host (the policy's text) and here (the patch's text). Anything beyond
    // that is a finding.
    assert!(
        same_up_to_float_rounding(&patched, &mutated),
        "the patch does not reproduce the mutation of {base}:\n got {patched}\nwant {mutated}"
    );
    // What the server sends parses back to the same response.
    let wire = serde_json::to_string(&response).expect("a response serializes");
    let back: AdmissionResponse = serde_json::from_str(&wire).expect("a response parses back");
    assert_eq!(back, response);
}

/// `a == b`, except that two floats of the same sign may differ by up to 4
/// units in the last place: two text round trips, each of which serde_json's
/// default float parser gets 1 ULP wrong for 29% of random f64 bit patterns
/// and 2 ULP wrong for 0.2% of them.
pub fn same_up_to_float_rounding(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().expect("f64"), y.as_f64().expect("f64"));
            x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= 4)
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(a, b)| same_up_to_float_rounding(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, a)| b.get(k).is_some_and(|b| same_up_to_float_rounding(a, b)))
        }
        (a, b) => a == b,
    }
}

fn verdict(mutated_object: Option<String>) -> ValidationResponse {
    ValidationResponse {
        allowed: true,
        message: None,
        code: None,
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
        mutated_object,
    }
}

/// Applies a base64 `JSONPatch` the way the API server would.
pub fn apply_patch(document: &mut Value, base64_patch: &str) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_patch)
        .expect("the patch is base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).expect("the patch is an RFC 6902 patch");
    json_patch::patch(document, &patch)
        .unwrap_or_else(|e| panic!("the patch does not apply: {e}; patch: {patch}"));
}

/// A copy of `original` with up to 8 edits chosen by `u`: values replaced,
/// keys (with `/`, `~`, unicode...) added and removed, array elements
/// inserted, removed, reordered.
pub fn mutate(original: &Value, u: &mut Unstructured<'_>) -> Value {
    let mut value = original.clone();
    let edits = u.int_in_range(0..=8).unwrap_or(0);
    for _ in 0..edits {
        if edit(&mut value, u).is_err() {
            break;
        }
    }
    value
}

fn edit(value: &mut Value, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let target = pick(value, u)?;
    match (u.int_in_range(0..=5)?, target) {
        (0, target) => *target = arbitrary_value(u, 3)?,
        (1, Value::Object(map)) => {
            let key = key(u)?;
            let value = arbitrary_value(u, 2)?;
            map.insert(key, value);
        }
        (2, Value::Object(map)) if !map.is_empty() => {
            let i = u.choose_index(map.len())?;
            let key = map.keys().nth(i).expect("index in range").clone();
            map.remove(&key);
        }
        (3, Value::Array(items)) => {
            let i = u.int_in_range(0..=items.len())?;
            items.insert(i, arbitrary_value(u, 2)?);
        }
        (4, Value::Array(items)) if !items.is_empty() => {
            let from = u.choose_index(items.len())?;
            let to = u.int_in_range(from..=items.len())?;
            items.drain(from..to.max(from + 1));
        }
        (5, Value::Array(items)) if items.len() > 1 => {
            if u.arbitrary()? {
                items.reverse();
            } else {
                let (a, b) = (u.choose_index(items.len())?, u.choose_index(items.len())?);
                items.swap(a, b);
            }
        }
        (_, target) => *target = arbitrary_value(u, 1)?,
    }
    Ok(())
}

/// A value somewhere inside `value` (possibly `value` itself).
fn pick<'a>(value: &'a mut Value, u: &mut Unstructured<'_>) -> arbitrary::Result<&'a mut Value> {
    let len = match &*value {
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if len == 0 || u.ratio(1, 4)? {
        return Ok(value);
    }
    let i = u.choose_index(len)?;
    Ok(match value {
        Value::Object(map) => pick(map.values_mut().nth(i).expect("index in range"), u)?,
        Value::Array(items) => pick(&mut items[i], u)?,
        _ => unreachable!("only containers have children"),
    })
}

/// Keys that JSON pointers must escape or that look like array indices.
const KEYS: &[&str] = &[
    "",
    "a",
    "b",
    "0",
    "1",
    "-",
    "/",
    "~",
    "~0",
    "~1",
    "a/b",
    "a~b",
    "~/~",
    "//",
    "metadata",
    "annotations",
    "é",
    "ключ",
    "🐳/🐋",
    "\u{0}",
    " ",
];

fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.arbitrary()? {
        Ok((*u.choose(KEYS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

fn arbitrary_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 7 } else { 9 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(key(u)?),
        6 => Value::String(u.arbitrary()?),
        7 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array(
                (0..len)
                    .map(|_| arbitrary_value(u, depth - 1))
                    .collect::<arbitrary::Result<_>>()?,
            )
        }
        _ => {
            let len = u.int_in_range(0..=4)?;
            let mut map = Map::new();
            for _ in 0..len {
                map.insert(key(u)?, arbitrary_value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
mod tests {
    //! Replays what `scripts/fuzz` seeds the corpus with, plus inputs built to
    //! hit the parsers' limits, through the same checks.

    use std::path::PathBuf;

    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("fuzz/ lives in the repository root")
            .to_owned()
    }

    /// The JSON fixtures under examples/*/test_data and bench/requests.
    fn json_fixtures() -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let examples = std::fs::read_dir(repo().join("examples")).unwrap();
        let dirs = examples
            .map(|e| e.unwrap().path().join("test_data"))
            .chain([repo().join("bench/requests")]);
        for dir in dirs.filter(|d| d.is_dir()) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let bytes = std::fs::read(&path).unwrap();
                    files.push((path, bytes));
                }
            }
        }
        assert!(files.len() >= 20, "{files:?}");
        files
    }

    fn wrap(request: &[u8]) -> Vec<u8> {
        let mut review =
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"#.to_vec();
        review.extend_from_slice(request);
        review.push(b'}');
        review
    }

    #[test]
    fn fixtures_pass_every_json_check() {
        let mut requests = 0;
        for (path, bytes) in json_fixtures() {
            if admission_review(&bytes) {
                requests += 1;
                if portcullis::admission::parse_review(&bytes).is_err() {
                    assert!(admission_review(&wrap(&bytes)), "{}", path.display());
                }
            }
            assert!(raw_document(&bytes), "{}", path.display());
        }
        assert!(requests >= 10, "only {requests} fixtures are requests");
    }

    #[test]
    fn objects_the_host_cannot_parse_are_refused_without_a_panic() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let digits = "9".repeat(10_000);
        for object in [deep.as_str(), "1e999999", &digits, r#""\ud800""#] {
            let request = format!(
                r#"{{"uid":"u","kind":{{"version":"v1","kind":"Pod"}},
                "resource":{{"version":"v1","resource":"pods"}},"operation":"CREATE",
                "object":{object}}}"#
            );
            assert!(admission_review(request.as_bytes()));
            assert!(admission_review(&wrap(request.as_bytes())));
            assert!(!raw_document(object.as_bytes()));
        }
    }

    #[test]
    fn mutations_cover_escaped_keys_and_arrays() {
        let original = serde_json::json!({"a/b": [1, 2, 3], "~": {"é": null}, "-": "x"});
        let mut changed = 0;
        for seed in 0..2_000u32 {
            let bytes: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).rotate_left(i % 32) >> 3) as u8)
                .collect();
            let mutated = mutate(&original, &mut Unstructured::new(&bytes));
            if mutated != original {
                changed += 1;
            }
            let response = AdmissionResponse::from_verdict(
                "u",
                verdict(Some(mutated.to_string())),
                Some(&original.to_string()),
            )
            .unwrap();
            let mut patched = original.clone();
            apply_patch(&mut patched, response.patch.as_deref().unwrap());
            assert!(
                same_up_to_float_rounding(&patched, &mutated),
                "{patched} {mutated}"
            );
        }
        assert!(changed > 1_000, "only {changed} of 2000 mutations changed");
    }

    #[test]
    fn hostile_policies_files_are_refused_quickly() {
        let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (name, prev) in "bcdefghi".chars().zip("abcdefgh".chars()) {
            let refs = vec![format!("*{prev}"); 9].join(", ");
            laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let deep_flow = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_settings = format!(
            "a:\n  module: a.wasm\n  settings: {}1{}",
            "{a: ".repeat(100_000),
            "}".repeat(100_000)
        );
        for (case, text) in [
            ("billion laughs", &laughs),
            ("[ x100000", &deep_flow),
            ("{a: x100000 in settings", &deep_settings),
        ] {
            let started = std::time::Instant::now();
            let result = portcullis::config::parse(text, Path::new("/c"), "hostile.yml");
            let elapsed = started.elapsed();
            let message = result.expect_err(case).to_string();
            eprintln!("{case}: {elapsed:?}: {message}");
            assert!(message.starts_with("hostile.yml: "), "{case}: {message}");
            assert!(elapsed.as_secs() < 5, "{case}: {elapsed:?}");
        }
    }

    #[test]
    fn policies_files_pass_the_config_check() {
        let mut files = vec![repo().join("examples/policies.yml")];
        for entry in std::fs::read_dir(repo().join("fuzz/seeds/policies_yml")).unwrap() {
            files.push(entry.unwrap().path());
        }
        assert!(files.len() >= 5, "{files:?}");
        for path in files {
            assert!(policies_yml(&std::fs::read(&path).unwrap()), "{path:?}");
        }
        assert!(!policies_yml(b"a: {module: \xff}"));
    }
}
