//! Broken and hostile Kubewarden modules, written in the text format and
//! annotated by the host's own `annotate`: each costs one request with a
//! precise error, and the server goes on serving. A module that faults while
//! it initialises faults in every instance, so its settings cannot be
//! validated and start-up refuses it, naming the policy.

use std::path::{Path, PathBuf};

use portcullis::runtime::kubewarden::annotate::with_section;
use portcullis::{Environment, LoadError, PolicySpec};
use portcullis_tests::server::TestServer;
use portcullis_tests::{engine, http_client, json_file, review};
use serde_json::Value;

/// Metadata of a waPC policy on pods.
const METADATA: &str = r#"{"protocolVersion":"v1","mutating":false,"rules":[{"apiGroups":[""],
    "apiVersions":["v1"],"resources":["pods"],"operations":["CREATE"]}]}"#;

/// A waPC guest that answers `validate_settings` properly (so it loads) and
/// runs `body` for `validate`. `$resp`, `$req`, `$err`, `$host`,
/// `$host_err_len`, `$host_err` are waPC's imports; memory is `memory_pages`.
fn wapc_module(memory_pages: u32, body: &str, extra: &str) -> String {
    format!(
        r#"(module
  (import "wapc" "__guest_request" (func $req (param i32 i32)))
  (import "wapc" "__guest_response" (func $resp (param i32 i32)))
  (import "wapc" "__guest_error" (func $err (param i32 i32)))
  (import "wapc" "__host_call" (func $host (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_error_len" (func $host_err_len (result i32)))
  (import "wapc" "__host_error" (func $host_err (param i32)))
  (memory (export "memory") {memory_pages})
  (data (i32.const 0) "{{\"valid\":true}}")
  (data (i32.const 64) "{{\"accepted\":true}}")
  (data (i32.const 128) "\ff\fe")
  (data (i32.const 200) "kubewarden")
  (data (i32.const 220) "net")
  (data (i32.const 230) "v1/dns_lookup_host")
  (data (i32.const 260) "\"a\"")
  (func (export "__guest_call") (param $op i32) (param $len i32) (result i32)
    ;; `validate_settings` is 17 bytes long, `validate` 8.
    (if (i32.eq (local.get $op) (i32.const 17))
      (then (call $resp (i32.const 0) (i32.const 14)) (return (i32.const 1))))
    {body})
  {extra}
)"#
    )
}

/// Writes `wat` as an annotated module (metadata section `metadata`).
fn module(dir: &Path, name: &str, wat: &str, metadata: &[u8]) -> PathBuf {
    let wasm = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, with_section(&wasm, metadata).unwrap()).unwrap();
    path
}

async fn load_error(path: &Path) -> String {
    let spec = PolicySpec::new("bad", path).with_timeout(std::time::Duration::from_secs(1));
    let error: LoadError = Environment::load(&engine(), [spec], None)
        .await
        .err()
        .expect("the module must be refused");
    error.to_string()
}

#[tokio::test]
async fn modules_without_usable_metadata_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let good = wapc_module(1, "(i32.const 1)", "");
    let wasm = wat::parse_str(&good).unwrap();
    let bare = dir.path().join("bare.wasm");
    std::fs::write(&bare, &wasm).unwrap();
    let error = load_error(&bare).await;
    assert!(error.starts_with("policy `bad` ("), "{error}");
    assert!(
        error.contains("a core WebAssembly module without Kubewarden metadata"),
        "{error}"
    );
    assert!(error.contains("portcullis annotate"), "{error}");

    let malformed = module(dir.path(), "malformed", &good, b"{\"rules\": [");
    let error = load_error(&malformed).await;
    assert!(error.contains("malformed Kubewarden metadata: "), "{error}");

    let unknown = module(
        dir.path(),
        "unknown",
        &good,
        br#"{"protocolVersion":"Unknown","mutating":false}"#,
    );
    let error = load_error(&unknown).await;
    assert!(error.contains("protocolVersion `Unknown`"), "{error}");
    let missing = module(dir.path(), "missing", &good, br#"{"mutating":false}"#);
    assert!(
        load_error(&missing)
            .await
            .contains("protocolVersion `(none)`")
    );

    for mode in ["opa", "gatekeeper"] {
        let metadata = format!(r#"{{"protocolVersion":"v1","executionMode":"{mode}"}}"#);
        let rego = module(dir.path(), mode, &good, metadata.as_bytes());
        let error = load_error(&rego).await;
        assert!(
            error.contains(&format!("executionMode `{mode}`: Rego policies")),
            "{error}"
        );
        assert!(error.contains("later step"), "{error}");
    }

    let not_wapc = module(
        dir.path(),
        "not-wapc",
        r#"(module (memory (export "memory") 1) (func (export "run")))"#,
        METADATA.as_bytes(),
    );
    let error = load_error(&not_wapc).await;
    assert!(error.contains("exports no `__guest_call`"), "{error}");

    let foreign = module(
        dir.path(),
        "foreign",
        &wapc_module(1, "(i32.const 1)", "").replace(
            "(memory (export",
            "(import \"env\" \"surprise\" (func))\n  (memory (export",
        ),
        METADATA.as_bytes(),
    );
    let error = load_error(&foreign).await;
    assert!(
        error.contains("cannot be linked as a Kubewarden"),
        "{error}"
    );
    assert!(error.contains("env::surprise"), "{error}");
}

#[tokio::test]
async fn modules_that_fault_while_initialising_are_refused_naming_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let trap = module(
        dir.path(),
        "trap-init",
        &wapc_module(
            1,
            "(i32.const 1)",
            r#"(func (export "wapc_init") unreachable)"#,
        ),
        METADATA.as_bytes(),
    );
    let error = load_error(&trap).await;
    assert!(
        error.contains("validate-settings failed: policy trapped: wasm trap: wasm `unreachable` instruction executed"),
        "{error}"
    );
    let spin = module(
        dir.path(),
        "spin-start",
        &wapc_module(
            1,
            "(i32.const 1)",
            r#"(func (export "_start") (loop $l (br $l)))"#,
        ),
        METADATA.as_bytes(),
    );
    let started = std::time::Instant::now();
    let error = load_error(&spin).await;
    assert!(
        error.contains("validate-settings failed: policy evaluation timed out after 1000ms"),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn each_hostile_call_costs_one_request_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let call_host = |binding: (i32, i32), namespace: (i32, i32)| {
        format!(
            "(drop (call $host (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) \
             (i32.const 230) (i32.const 18) (i32.const 260) (i32.const 3))) (i32.const 1)",
            binding.0, binding.1, namespace.0, namespace.1
        )
    };
    let cases: Vec<(&str, String, u32, &str)> = vec![
        (
            "twice",
            "(call $resp (i32.const 64) (i32.const 17)) (call $resp (i32.const 64) (i32.const 17)) (i32.const 1)".into(),
            1,
            "the policy broke the Kubewarden protocol: the policy called __guest_response twice in one call",
        ),
        (
            "never",
            "(i32.const 1)".into(),
            1,
            "the policy broke the Kubewarden protocol: __guest_call returned success without a response (__guest_response was never called)",
        ),
        (
            "out-of-bounds",
            "(call $req (i32.const 0x7fffffff) (i32.const 0)) (i32.const 1)".into(),
            1,
            "the policy broke the Kubewarden protocol: __guest_request: the operation: 8 bytes at offset 2147483647 are outside the policy's memory (65536 bytes)",
        ),
        (
            "binding-not-utf8",
            call_host((128, 2), (220, 3)),
            1,
            "the policy broke the Kubewarden protocol: __host_call: the binding is not valid UTF-8",
        ),
        (
            "namespace-not-utf8",
            call_host((200, 10), (128, 2)),
            1,
            "the policy broke the Kubewarden protocol: __host_call: the namespace is not valid UTF-8",
        ),
        (
            "denied",
            // The host's error, handed back as the policy's own.
            "(if (i32.eqz (call $host (i32.const 200) (i32.const 10) (i32.const 220) (i32.const 3) \
               (i32.const 230) (i32.const 18) (i32.const 260) (i32.const 3))) \
               (then (call $host_err (i32.const 1024)) \
                     (call $err (i32.const 1024) (call $host_err_len)) (return (i32.const 0)))) \
             (call $resp (i32.const 64) (i32.const 17)) (i32.const 1)"
                .into(),
            1,
            "the policy reported an error: Policy has not been granted access to the 'net/v1/dns_lookup_host' host capability. The violation has been reported.",
        ),
        (
            "hundred-megabytes",
            "(call $resp (i32.const 0) (i32.const 104857600)) (i32.const 1)".into(),
            1600,
            "policy output too large: 104857600 bytes (limit: 8388608 bytes)",
        ),
        (
            "not-json",
            "(call $resp (i32.const 200) (i32.const 10)) (i32.const 1)".into(),
            1,
            "the policy broke the Kubewarden protocol: the policy's response is not a Kubewarden ValidationResponse: expected value at line 1 column 1",
        ),
        (
            "trap",
            "unreachable".into(),
            1,
            "policy trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
    ];
    let mut policies = String::from("good: { module: kw_pod_privileged.wasm }\n");
    for (name, body, pages, _) in &cases {
        let path = module(
            dir.path(),
            name,
            &wapc_module(*pages, body, ""),
            METADATA.as_bytes(),
        );
        policies.push_str(&format!("{name}: {{ module: {} }}\n", path.display()));
    }
    let server = TestServer::start(&policies).await;
    let privileged = review(json_file(
        "examples/pod-privileged/test_data/privileged_container.json",
    ));
    for (name, _, _, expected) in &cases {
        let response = validate(&server, name, &privileged).await;
        assert_eq!(response["allowed"], false, "{name}: {response}");
        assert_eq!(response["status"]["code"], 500, "{name}: {response}");
        assert_eq!(
            response["status"]["message"],
            format!("policy `{name}` failed: {expected}"),
            "{name}"
        );
        // The next request is served as if nothing happened.
        let good = validate(&server, "good", &privileged).await;
        assert_eq!(
            good["status"]["message"], "Privileged container is not allowed",
            "after {name}"
        );
    }
    server.server.shutdown().await.unwrap();
}

async fn validate(server: &TestServer, policy: &str, body: &Value) -> Value {
    let response = http_client()
        .post(server.url(&format!("/validate/{policy}")))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{policy}");
    let review: Value = response.json().await.unwrap();
    review["response"].clone()
}
