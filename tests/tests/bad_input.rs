//! Hostile and broken request bodies sent over real HTTP to a real server
//! running `pod_privileged.wasm`: truncated reviews, invalid UTF-8, 100,000
//! levels of nesting, numbers beyond f64, duplicate keys, and bodies that are
//! not objects at all. Each gets an exact status (a JSON `{"error": ...}` for
//! every 4xx, or the policy's own verdict when the JSON is valid and the review
//! well-formed), and the server must answer a normal request afterwards.

use std::time::Duration;

use portcullis_tests::server::TestServer;
use portcullis_tests::{http_client, json_file, review};
use reqwest::StatusCode;
use serde_json::{Value, json};

const POLICIES: &str = "privileged: { module: pod_privileged.wasm }";
const VALIDATE: &str = "/validate/privileged";
const RAW: &str = "/validate_raw/privileged";

/// What a body must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A 4xx whose JSON `error` contains the text.
    Error(StatusCode, &'static str),
    /// 200 with the policy's verdict: `allowed`, and the status message
    /// containing the text (when there is one) with the code.
    Verdict {
        allowed: bool,
        code: Option<u16>,
        message: Option<&'static str>,
    },
}

use Expect::{Error, Verdict};

/// pod-privileged's verdict on a pod with a privileged container.
const PRIVILEGED: Expect = Verdict {
    allowed: false,
    code: None,
    message: Some("Privileged container is not allowed"),
};

/// pod-privileged on any raw document: it only validates admission requests.
const NO_RAW: Expect = Verdict {
    allowed: false,
    code: None,
    message: Some("this policy does not support raw validation"),
};

/// The guest SDK's answer to an object it cannot parse as JSON.
const fn object_not_json(message: &'static str) -> Expect {
    Verdict {
        allowed: false,
        code: Some(400),
        message: Some(message),
    }
}

fn privileged_pod() -> Value {
    json_file("examples/pod-privileged/test_data/privileged_container.json")
}

/// A valid review of a privileged pod, compact (no trailing whitespace).
fn valid_review() -> Vec<u8> {
    review(privileged_pod()).to_string().into_bytes()
}

/// `template` serialized, with the JSON string `"@"` replaced by `raw` bytes.
fn splice(template: &Value, raw: &[u8]) -> Vec<u8> {
    let text = template.to_string();
    let (before, after) = text
        .split_once(r#""@""#)
        .expect("the template has a \"@\" placeholder");
    [before.as_bytes(), raw, after.as_bytes()].concat()
}

/// The privileged pod's review with `request.object` replaced by `raw`.
fn review_with_object(raw: &[u8]) -> Vec<u8> {
    let mut request = privileged_pod();
    request["object"] = json!("@");
    splice(&review(request), raw)
}

/// The privileged pod's review with an extra top-level field `extra: raw`.
fn review_with_extra_field(raw: &[u8]) -> Vec<u8> {
    let mut template = review(privileged_pod());
    template["extra"] = json!("@");
    splice(&template, raw)
}

/// A pod (as the object of a review) with a field `n` whose value is `raw`.
fn pod_with_number(raw: &str) -> Vec<u8> {
    format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"n"}},"n":{raw}}}"#)
        .into_bytes()
}

fn nested_arrays(levels: usize) -> Vec<u8> {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels)).into_bytes()
}

fn nested_objects(levels: usize) -> Vec<u8> {
    format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels)).into_bytes()
}

/// POSTs `body`; a hang (no answer in 30 s) fails the test.
async fn post(server: &TestServer, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = http_client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send();
    let response = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer in 30 s"))
        .unwrap_or_else(|e| panic!("{path}: the connection failed (crash?): {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {status} with a body that is not JSON ({e}): {text}"));
    (status, body)
}

/// Sends `body` to `path`, checks the answer against `expect`, then checks
/// that the server still answers a normal review and a normal raw document.
async fn check(server: &TestServer, case: &str, path: &str, body: Vec<u8>, expect: Expect) {
    let (status, answer) = post(server, path, body).await;
    let context = format!("{case} → {path}: {status} {answer}");
    // `--nocapture` shows what each body got (docs/reliability.md lists it).
    let shown: String = answer.to_string().chars().take(300).collect();
    eprintln!("{case} → {path}: {status} {shown}");
    match expect {
        Error(expected, fragment) => {
            assert!(expected.is_client_error(), "{context}");
            assert_eq!(status, expected, "{context}");
            let error = answer["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{context}"));
            assert!(error.contains(fragment), "{context}: wanted `{fragment}`");
            assert_eq!(answer.as_object().unwrap().len(), 1, "{context}");
        }
        Verdict {
            allowed,
            code,
            message,
        } => {
            assert_eq!(status, StatusCode::OK, "{context}");
            let response = &answer["response"];
            assert_eq!(response["allowed"], allowed, "{context}");
            assert_eq!(
                response["status"]["code"].as_u64(),
                code.map(u64::from),
                "{context}"
            );
            match message {
                Some(fragment) => {
                    let got = response["status"]["message"].as_str().unwrap_or_default();
                    assert!(got.contains(fragment), "{context}: wanted `{fragment}`");
                }
                None => assert!(response.get("status").is_none(), "{context}"),
            }
        }
    }
    still_serving(server, case).await;
}

async fn still_serving(server: &TestServer, after: &str) {
    let (status, answer) = post(server, VALIDATE, valid_review()).await;
    assert_eq!(status, StatusCode::OK, "after {after}: {answer}");
    assert_eq!(
        answer["response"]["status"]["message"], "Privileged container is not allowed",
        "after {after}"
    );
    let (status, answer) = post(server, RAW, br#"{"uid":"ok"}"#.to_vec()).await;
    assert_eq!(status, StatusCode::OK, "after {after}: {answer}");
    assert_eq!(answer["response"]["uid"], "ok", "after {after}");
}

#[tokio::test]
async fn a_valid_review_gets_the_policys_verdict() {
    // The baseline every other case is a corruption of.
    let server = TestServer::start(POLICIES).await;
    check(&server, "valid", VALIDATE, valid_review(), PRIVILEGED).await;
    let object = privileged_pod()["object"].to_string().into_bytes();
    check(&server, "valid raw", RAW, object, NO_RAW).await;
}

#[tokio::test]
async fn truncated_bodies_are_400() {
    let server = TestServer::start(POLICIES).await;
    let review = valid_review();
    let len = review.len();
    for cut in [1, 2, 17, 40, len / 3, len / 2, len - 2, len - 1] {
        let body = review[..cut].to_vec();
        let case = format!("cut at {cut} of {len}");
        let expect = Error(
            StatusCode::BAD_REQUEST,
            "malformed admission request: EOF while parsing",
        );
        check(&server, &case, VALIDATE, body.clone(), expect).await;
        let expect = Error(
            StatusCode::BAD_REQUEST,
            "malformed JSON document: EOF while parsing",
        );
        check(&server, &case, RAW, body, expect).await;
    }
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    let server = TestServer::start(POLICIES).await;
    let bad_string = b"\"caf\xe9 \xff\xfe\"";

    // In the request's uid and in a string inside the object.
    let mut request = privileged_pod();
    request["uid"] = json!("@");
    let in_uid = splice(&review(request), bad_string);
    let mut request = privileged_pod();
    request["object"]["metadata"]["name"] = json!("@");
    let in_object = splice(&review(request), bad_string);
    // Overlong encoding of '/' and an unpaired UTF-16 surrogate encoded as UTF-8.
    let mut request = privileged_pod();
    request["object"]["metadata"]["name"] = json!("@");
    let overlong = splice(&review(request.clone()), b"\"\xc0\xaf\xed\xa0\x80\"");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "in request.uid",
            in_uid,
            "malformed admission request: the body is not UTF-8: invalid utf-8 sequence",
            "malformed JSON document: invalid unicode code point at line 1 column",
        ),
        (
            "in request.object",
            in_object,
            "malformed admission request: the body is not UTF-8: invalid utf-8 sequence",
            "malformed JSON document: invalid unicode code point at line 1 column",
        ),
        (
            "overlong and surrogate in request.object",
            overlong,
            "malformed admission request: the body is not UTF-8: invalid utf-8 sequence",
            "malformed JSON document: invalid unicode code point at line 1 column",
        ),
        (
            "raw bytes",
            b"\xff\xfe\x00{\x80}".to_vec(),
            "malformed admission request: the body is not UTF-8: invalid utf-8 sequence",
            "malformed JSON document: expected value at line 1 column 1",
        ),
        (
            "a UTF-8 byte order mark before the review",
            [b"\xef\xbb\xbf".as_slice(), &valid_review()].concat(),
            "malformed admission request: expected value at line 1 column 1",
            "malformed JSON document: expected value at line 1 column 1",
        ),
    ];
    for (case, body, review_error, raw_error) in cases {
        let expect = Error(StatusCode::BAD_REQUEST, review_error);
        check(&server, case, VALIDATE, body.clone(), expect).await;
        check(
            &server,
            case,
            RAW,
            body,
            Error(StatusCode::BAD_REQUEST, raw_error),
        )
        .await;
    }
}

#[tokio::test]
async fn an_escaped_lone_surrogate_is_400_or_the_policys_400() {
    // `"\ud800"` is valid UTF-8 but no Unicode text. In a field the host reads
    // it is a 400; the object's text goes to the policy verbatim, whose parser
    // refuses it: a 400 verdict.
    let server = TestServer::start(POLICIES).await;
    let surrogate = br#""\ud800""#;
    let mut request = privileged_pod();
    request["uid"] = json!("@");
    let in_uid = splice(&review(request), surrogate);
    let in_object = review_with_object(surrogate);
    let expect = Error(
        StatusCode::BAD_REQUEST,
        "malformed admission request: unexpected end of hex escape at line 1 column",
    );
    check(&server, "in request.uid", VALIDATE, in_uid.clone(), expect).await;
    let expect = object_not_json("`object` is not valid JSON: unexpected end of hex escape");
    check(
        &server,
        "as request.object",
        VALIDATE,
        in_object.clone(),
        expect,
    )
    .await;
    for (case, body) in [("in request.uid", in_uid), ("as request.object", in_object)] {
        let expect = Error(
            StatusCode::BAD_REQUEST,
            "malformed JSON document: unexpected end of hex escape at line 1 column",
        );
        check(&server, case, RAW, body, expect).await;
    }
}

/// Host finding H1 (docs/reliability.md): bytes that are not UTF-8 inside a
/// string the review parser skips (an unknown field, at top level or in
/// `request`) are not checked, so a body that is not JSON at all (RFC 8259
/// §8.1) is evaluated. `/validate_raw` refuses the same body.
#[tokio::test]
async fn invalid_utf8_in_a_skipped_field_is_400() {
    let server = TestServer::start(POLICIES).await;
    let body = review_with_extra_field(b"\"\xff\xfe\"");
    let expect = Error(StatusCode::BAD_REQUEST, "malformed admission request");
    check(
        &server,
        "not UTF-8 in a skipped field",
        VALIDATE,
        body,
        expect,
    )
    .await;
}

/// Host finding H2 (docs/reliability.md): serde's derived `Deserialize`
/// accepts a JSON array for a struct, field by field in declaration order,
/// so `["admission.k8s.io/v1", "AdmissionReview", {request}]`, or a request
/// whose `kind` is `["", "v1", "Pod"]`, is evaluated like the object form.
#[tokio::test]
async fn a_review_written_as_an_array_is_400() {
    let server = TestServer::start(POLICIES).await;
    let request = privileged_pod();
    let positional = format!(r#"["admission.k8s.io/v1","AdmissionReview",{request}]"#);
    let expect = Error(StatusCode::BAD_REQUEST, "malformed admission request");
    check(
        &server,
        "review as an array",
        VALIDATE,
        positional.into(),
        expect,
    )
    .await;
    let mut request = privileged_pod();
    request["kind"] = json!(["", "v1", "Pod"]);
    let expect = Error(StatusCode::BAD_REQUEST, "malformed admission request");
    check(
        &server,
        "kind as an array",
        VALIDATE,
        review(request).to_string().into(),
        expect,
    )
    .await;
}

#[tokio::test]
async fn deep_nesting_is_refused_without_a_crash() {
    let server = TestServer::start(POLICIES).await;
    const LEVELS: usize = 100_000;
    let arrays = nested_arrays(LEVELS);
    let objects = nested_objects(LEVELS);
    let recursion = "malformed JSON document: recursion limit exceeded at line 1 column";

    // At top level. A review must be an object, so the first `[` is refused;
    // `{"a":` is an unknown field it skips, leaving a review without
    // apiVersion and kind.
    check(
        &server,
        "top-level [ x100000",
        VALIDATE,
        arrays.clone(),
        Error(
            StatusCode::BAD_REQUEST,
            "malformed admission request: invalid type: sequence, expected a JSON object",
        ),
    )
    .await;
    check(
        &server,
        "top-level {\"a\": x100000",
        VALIDATE,
        objects.clone(),
        Error(
            StatusCode::BAD_REQUEST,
            "expected apiVersion `admission.k8s.io/v1` and kind `AdmissionReview`, \
             got apiVersion `` and kind ``",
        ),
    )
    .await;
    let raw = Error(StatusCode::BAD_REQUEST, recursion);
    check(&server, "top-level [ x100000", RAW, arrays.clone(), raw).await;
    let raw = Error(StatusCode::BAD_REQUEST, recursion);
    check(
        &server,
        "top-level {\"a\": x100000",
        RAW,
        objects.clone(),
        raw,
    )
    .await;

    // Inside request.object: the host hands the object's text to the policy
    // unparsed (valid JSON, a well-formed review), and the policy's JSON
    // parser refuses it with its own recursion limit: a 400 verdict.
    let in_policy =
        object_not_json("`object` is not valid JSON: recursion limit exceeded at line 1 column");
    for (case, object) in [
        ("request.object [ x100000", &arrays),
        ("request.object {\"a\": x100000", &objects),
    ] {
        let body = review_with_object(object);
        check(&server, case, VALIDATE, body.clone(), in_policy).await;
        let raw = Error(StatusCode::BAD_REQUEST, recursion);
        check(&server, case, RAW, body, raw).await;
    }
}

#[tokio::test]
async fn huge_numbers_reach_the_policy_only_inside_a_well_formed_review() {
    let server = TestServer::start(POLICIES).await;
    let digits = "9".repeat(10_000);
    for (case, number) in [("1e999999", "1e999999"), ("10,000 digits", digits.as_str())] {
        // In the object: valid JSON, so the policy decides; its parser (f64)
        // cannot hold the number.
        let body = review_with_object(&pod_with_number(number));
        let expect = object_not_json("`object` is not valid JSON: number out of range at line 1");
        check(&server, case, VALIDATE, body.clone(), expect).await;
        let raw = Error(
            StatusCode::BAD_REQUEST,
            "malformed JSON document: number out of range at line 1",
        );
        check(&server, case, RAW, body, raw).await;

        // As an extra top-level field of the review: skipped, not parsed.
        let body = review_with_extra_field(number.as_bytes());
        check(&server, case, VALIDATE, body.clone(), PRIVILEGED).await;
        let raw = Error(
            StatusCode::BAD_REQUEST,
            "malformed JSON document: number out of range at line 1",
        );
        check(&server, case, RAW, body, raw).await;

        // As the whole body.
        let body = number.as_bytes().to_vec();
        let expect = Error(
            StatusCode::BAD_REQUEST,
            "malformed admission request: number out of range at line 1",
        );
        check(&server, case, VALIDATE, body.clone(), expect).await;
        let raw = Error(
            StatusCode::BAD_REQUEST,
            "malformed JSON document: number out of range at line 1",
        );
        check(&server, case, RAW, body, raw).await;
    }
}

#[tokio::test]
async fn duplicate_keys_are_400_in_a_review_and_last_wins_in_a_raw_document() {
    let server = TestServer::start(POLICIES).await;
    let review_text = String::from_utf8(valid_review()).unwrap();
    let uid_twice = review_text.replacen(r#""request":{"#, r#""request":{"uid":"first","#, 1);
    assert_ne!(uid_twice, review_text);
    let request_twice = review_text.replacen('{', r#"{"request":{"uid":"other"},"#, 1);
    check(
        &server,
        "uid twice",
        VALIDATE,
        uid_twice.clone().into_bytes(),
        Error(
            StatusCode::BAD_REQUEST,
            "malformed admission request: duplicate field `uid` at line 1 column",
        ),
    )
    .await;
    check(
        &server,
        "request twice",
        VALIDATE,
        request_twice.clone().into_bytes(),
        Error(
            StatusCode::BAD_REQUEST,
            "malformed admission request: duplicate field `request` at line 1 column",
        ),
    )
    .await;

    // A raw document is any JSON value: the last "uid" is the one echoed.
    let raw_uid_twice = br#"{"uid":"first","uid":"second"}"#.to_vec();
    let (status, answer) = post(&server, RAW, raw_uid_twice).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["response"]["uid"], "second");
    check(
        &server,
        "request twice",
        RAW,
        request_twice.into_bytes(),
        NO_RAW,
    )
    .await;
    check(&server, "uid twice", RAW, uid_twice.into_bytes(), NO_RAW).await;
}

#[tokio::test]
async fn bodies_that_are_not_an_object() {
    let server = TestServer::start(POLICIES).await;
    let two_reviews = [valid_review(), valid_review()].concat();
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "empty",
            b"",
            "malformed admission request: EOF while parsing a value at line 1 column 0",
        ),
        (
            "whitespace",
            b" \n\t ",
            "malformed admission request: EOF while parsing a value at line 2 column 2",
        ),
        (
            "null",
            b"null",
            "malformed admission request: invalid type: null, expected",
        ),
        (
            "a string",
            br#""AdmissionReview""#,
            "malformed admission request: invalid type: string \"AdmissionReview\", expected",
        ),
        (
            "a number",
            b"42",
            "malformed admission request: invalid type: integer `42`, expected",
        ),
        (
            "an empty array",
            b"[]",
            "malformed admission request: invalid type: sequence, expected a JSON object",
        ),
        (
            "an array of objects",
            b"[{},{}]",
            "malformed admission request: invalid type: sequence, expected a JSON object",
        ),
        (
            "two reviews back to back",
            &two_reviews,
            "malformed admission request: trailing characters at line 1 column",
        ),
    ];
    for (case, body, message) in cases {
        let expect = Error(StatusCode::BAD_REQUEST, message);
        check(&server, case, VALIDATE, body.to_vec(), expect).await;
    }

    // Raw: any JSON value is a document for the policy; no JSON is a 400.
    let raw_errors: Vec<(&str, &[u8], &str)> = vec![
        (
            "empty",
            b"",
            "malformed JSON document: EOF while parsing a value at line 1 column 0",
        ),
        (
            "whitespace",
            b" \n\t ",
            "malformed JSON document: EOF while parsing a value at line 2 column 2",
        ),
        (
            "two documents back to back",
            br#"{"a":1}{"b":2}"#,
            "malformed JSON document: trailing characters at line 1 column 8",
        ),
    ];
    for (case, body, message) in raw_errors {
        let expect = Error(StatusCode::BAD_REQUEST, message);
        check(&server, case, RAW, body.to_vec(), expect).await;
    }
    for (case, body) in [
        ("null", "null"),
        ("a string", r#""AdmissionReview""#),
        ("a number", "42"),
        ("an empty array", "[]"),
        ("an array of objects", "[{},{}]"),
    ] {
        check(&server, case, RAW, body.as_bytes().to_vec(), NO_RAW).await;
    }
}
