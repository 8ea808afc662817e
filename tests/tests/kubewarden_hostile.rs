//! Broken and hostile Kubewarden modules, written in the text format and
//! annotated by the host's own `annotate`: each costs one request with a
//! precise error, and the server goes on serving. A module that faults while
//! it initialises faults in every instance, so its settings cannot be
//! validated: start-up refuses it, naming the policy, and so does a reload
//! that adds it, while the configuration serving goes on serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis::runtime::kubewarden::annotate::with_section;
use portcullis::{Configuration, Environment, LoadError, PolicySpec, config};
use portcullis_tests::server::{TestServer, test_config};
use portcullis_tests::{engine, get_text, http_client, json_file, review, target_dir};
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
    let spec = PolicySpec::new("bad", path).with_timeout(Duration::from_secs(1));
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
    let (trap, spin) = faulting_modules(dir.path());
    let error = load_error(&trap).await;
    assert!(
        error.contains("validate-settings failed: policy trapped: wasm trap: wasm `unreachable` instruction executed"),
        "{error}"
    );
    let started = Instant::now();
    let error = load_error(&spin).await;
    assert!(
        error.contains("validate-settings failed: policy evaluation timed out after 1000ms"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The modules that fault while they initialise: `wapc_init` traps;
/// `_start` loops.
fn faulting_modules(dir: &Path) -> (PathBuf, PathBuf) {
    let trap = module(
        dir,
        "trap-init",
        &wapc_module(
            1,
            "(i32.const 1)",
            r#"(func (export "wapc_init") unreachable)"#,
        ),
        METADATA.as_bytes(),
    );
    let spin = module(
        dir,
        "spin-start",
        &wapc_module(
            1,
            "(i32.const 1)",
            r#"(func (export "_start") (loop $l (br $l)))"#,
        ),
        METADATA.as_bytes(),
    );
    (trap, spin)
}

/// Policies that load, beside which the faulting modules are put.
const GOOD: &str = "good: { module: kw_pod_privileged.wasm }\n\
                    component: { module: pod_privileged.wasm }\n";

/// `GOOD` plus `extra`, as a policies file of the built fixtures.
fn configuration(extra: &str) -> Configuration {
    let components = target_dir().join("wasm32-wasip2/policy");
    config::parse(&format!("{GOOD}{extra}"), &components, "test policies").unwrap()
}

/// `portcullis_config_reloads_total{result="…"}` of `server`.
async fn reloads(server: &TestServer, result: &str) -> u64 {
    let metrics = get_text(&format!("{}/metrics", server.probes)).await;
    let prefix = format!("portcullis_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `good` and `component` still answer the privileged pod as before.
async fn still_serving(server: &TestServer) {
    let privileged = review(json_file(
        "examples/pod-privileged/test_data/privileged_container.json",
    ));
    for policy in ["good", "component"] {
        let response = validate(server, policy, &privileged).await;
        assert_eq!(
            response["status"]["message"], "Privileged container is not allowed",
            "{policy}"
        );
    }
}

/// What the product does with a module that faults while it initialises,
/// put beside good policies: it never gets to cost a request. Start-up
/// refuses the whole configuration, naming the policy; a reload that adds
/// it is refused the same way (the `_start` loop cut by the policy's
/// deadline, not hanging) and the configuration serving keeps serving,
/// during the reload too; a later valid reload still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulting_modules_beside_good_policies_are_refused_and_the_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (trap, spin) = faulting_modules(dir.path());
    let trap_entry = format!("trap-init: {{ module: {} }}\n", trap.display());
    // A longer deadline than the good policies need, so that requests
    // answered while it runs show that the reload does not hold the server.
    let spin_entry = format!(
        "spin-start: {{ module: {}, timeoutEvalSeconds: 2 }}\n",
        spin.display()
    );
    let trapped = "validate-settings failed: policy trapped: wasm trap: wasm `unreachable` \
                   instruction executed";

    // Start-up: nothing is served until every policy loads.
    let error =
        match portcullis::server::start(test_config(), engine(), configuration(&trap_entry), None)
            .await
        {
            Ok(_) => panic!("a server started with a module that traps in wapc_init"),
            Err(error) => error.to_string(),
        };
    assert!(error.contains("policy `trap-init` ("), "{error}");
    assert!(error.contains(trapped), "{error}");

    let server = TestServer::start(GOOD).await;
    let reloader = server.server.reloader();

    // A reload adding the trapping module: refused, naming it.
    let error = match reloader.reload(configuration(&trap_entry)).await {
        Ok(_) => panic!("a reload adding a module that traps in wapc_init was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.starts_with("policy `trap-init` ("), "{error}");
    assert!(error.contains(trapped), "{error}");
    still_serving(&server).await;

    // A reload adding the spinning module: its settings validation runs
    // until the policy's deadline cuts it; meanwhile the configuration
    // serving answers.
    let reload = tokio::spawn({
        let reloader = reloader.clone();
        let configuration = configuration(&spin_entry);
        async move {
            let started = Instant::now();
            let result = reloader.reload(configuration).await;
            (result.err().map(|e| e.to_string()), started.elapsed())
        }
    });
    let mut answered_during_the_reload = 0;
    while !reload.is_finished() {
        let sent = Instant::now();
        still_serving(&server).await;
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "two requests took {:?} while a reload was validating a spinning module",
            sent.elapsed()
        );
        if !reload.is_finished() {
            answered_during_the_reload += 1;
        }
    }
    let (error, took) = reload.await.unwrap();
    let error = error.expect("a reload adding a module that loops in _start was accepted");
    assert!(error.starts_with("policy `spin-start` ("), "{error}");
    assert!(
        error.contains("validate-settings failed: policy evaluation timed out after 2000ms"),
        "{error}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "the reload took {took:?}: the policy's deadline (2 s) should cut the loop"
    );
    assert!(
        answered_during_the_reload > 0,
        "no request was answered while the reload ran"
    );

    // Nothing of either configuration was swapped in; the server stayed
    // ready and counted both failures.
    let privileged = review(json_file(
        "examples/pod-privileged/test_data/privileged_container.json",
    ));
    for policy in ["trap-init", "spin-start"] {
        let response = http_client()
            .post(server.url(&format!("/validate/{policy}")))
            .json(&privileged)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{policy}");
    }
    let readiness = http_client()
        .get(format!("{}/readiness", server.probes))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), 200);
    assert_eq!(reloads(&server, "error").await, 2);
    assert_eq!(reloads(&server, "ok").await, 0);

    // A valid reload afterwards applies.
    reloader
        .reload(configuration(
            "labels: { module: kw_required_labels.wasm, settings: { labels: [team] } }\n",
        ))
        .await
        .unwrap();
    assert_eq!(reloads(&server, "ok").await, 1);
    let response = validate(&server, "labels", &privileged).await;
    assert_eq!(
        response["status"]["message"], "missing required labels: team",
        "{response}"
    );
    still_serving(&server).await;
    server.server.shutdown().await.unwrap();
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
