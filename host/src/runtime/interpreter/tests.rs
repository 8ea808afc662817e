//! The mechanism on a guest small enough to read: `init` keeps its request
//! (and 8 random bytes) in memory, `evaluate` answers with what a byte of
//! memory holds, the policy and its own request, then dirties that byte.
//! Requests starting with a marker make it misbehave.

use super::*;
use crate::cache::CompiledCache;
use crate::runtime::interpreter::testing::TestEngine;

/// The test guest; `{init}` is spliced into `portcullis_init`.
const GUEST: &str = r#"
(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $sp (mut i32) (i32.const 65536))
  (global $other (mut i32) (i32.const 0))
  (data (i32.const 65536) "base")
  (func (export "portcullis_alloc") (param i32) (result i32) (i32.const 100000))
  (func $reply (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $len)) (i64.const 32)) (i64.const 120000)))
  (func (export "portcullis_init") (param $ptr i32) (param $len i32) (result i64)
    ;; "!...": refused, the request is the error.
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
      (then
        (i32.store8 (i32.const 120000) (i32.const 1))
        (memory.copy (i32.const 120001) (local.get $ptr) (local.get $len))
        (return (call $reply (i32.add (local.get $len) (i32.const 1))))))
    ;; "?...": changes a global.
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 63))
      (then (global.set $other (i32.const 7))))
    ;; Garbage on the stack, which is dead once init returns.
    (i32.store8 (i32.const 1000) (i32.const 170))
    (drop (call $random_get (i32.const 69000) (i32.const 8)))
    (i32.store (i32.const 70000) (local.get $len))
    (memory.copy (i32.const 70004) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.const 120000) (i32.const 0))
    (call $reply (i32.const 1)))
  (func (export "portcullis_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $first i32) (local $policy i32)
    (local.set $first (i32.load8_u (local.get $ptr)))
    ;; "L": loops; "G": grows its memory until refused, then traps; "B":
    ;; claims a reply of 2 GiB.
    (if (i32.eq (local.get $first) (i32.const 76)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $first) (i32.const 71))
      (then
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        (unreachable)))
    (if (i32.eq (local.get $first) (i32.const 66))
      (then (return (call $reply (i32.const 0x7fffffff)))))
    (local.set $policy (i32.load (i32.const 70000)))
    (i32.store8 (i32.const 120000) (i32.const 0))
    (i32.store8 (i32.const 120001) (i32.load8_u (i32.const 90000)))
    (memory.copy (i32.const 120002) (i32.const 70004) (local.get $policy))
    (memory.copy (i32.add (i32.const 120002) (local.get $policy)) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.const 90000) (i32.const 85))
    (call $reply (i32.add (i32.const 2) (i32.add (local.get $policy) (local.get $len)))))
)
"#;

fn guest() -> &'static [u8] {
    Box::leak(wat::parse_str(GUEST).unwrap().into_boxed_slice())
}

fn engine() -> TestEngine {
    TestEngine::new()
}

fn policy(text: &str) -> Digest {
    Digest::of(text.as_bytes())
}

async fn prepare(interpreter: &Interpreter, text: &str) -> Result<Arc<Snapshot>, InterpreterError> {
    interpreter
        .prepare(&policy(text), text.as_bytes(), None)
        .await
}

#[test]
fn a_split_imports_the_memory_and_keeps_everything_else() {
    let split = split::split(guest()).unwrap();
    wasmparser::Validator::new()
        .validate_all(&split.code)
        .unwrap();
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&split.code) {
        match payload.unwrap() {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.unwrap();
                    imports.push(format!("{}::{}", import.module, import.name));
                }
            }
            wasmparser::Payload::ExportSection(section) => {
                exports.extend(section.into_iter().map(|e| e.unwrap().name.to_owned()));
            }
            wasmparser::Payload::MemorySection(_) | wasmparser::Payload::DataSection(_) => {
                panic!("the code keeps a memory or data")
            }
            _ => {}
        }
    }
    assert_eq!(
        imports,
        [
            "wasi_snapshot_preview1::random_get",
            "portcullis:snapshot::memory"
        ]
    );
    assert!(exports.contains(&"portcullis_evaluate".to_owned()));
    // WASI's functions find the memory under this name.
    assert!(exports.contains(&"memory".to_owned()));
    assert!(exports.contains(&"portcullis:global:0".to_owned()));
    assert!(exports.contains(&"portcullis:global:1".to_owned()));
    assert_eq!(split.initial.pages, 2);
    assert_eq!(split.initial.segments, [(65536, b"base".to_vec())]);
    assert_eq!(
        split
            .globals
            .iter()
            .map(|g| (g.index, g.initial))
            .collect::<Vec<_>>(),
        [(0, 65536), (1, 0)]
    );
    assert_eq!(split.stack, Some(0..65536));
}

#[test]
fn guests_a_snapshot_cannot_hold_are_refused() {
    let refused = |wat: &str| {
        split::split(&wat::parse_str(wat).unwrap())
            .unwrap_err()
            .to_string()
    };
    let message = refused("(module (memory 1) (func $f) (start $f))");
    assert!(message.contains("start function"), "{message}");
    let message = refused("(module (memory 1) (data \"x\"))");
    assert!(message.contains("passive data"), "{message}");
    let message = refused("(module (import \"env\" \"memory\" (memory 1)))");
    assert!(
        message.contains("imports a memory (env::memory)"),
        "{message}"
    );
    let message = refused("(module (func))");
    assert!(message.contains("defines no memory"), "{message}");
    let message = refused("(module (memory 1) (memory 1))");
    assert!(message.contains("more than one memory"), "{message}");
}

#[tokio::test]
async fn a_snapshot_holds_what_init_wrote_and_every_evaluation_starts_from_it() {
    let engine = engine();
    let interpreter = Interpreter::new(&engine.sandbox(), guest());
    let snapshot = prepare(&interpreter, "hello").await.unwrap();
    assert_eq!(snapshot.origin(), CompileOrigin::Compiled);
    let limits = engine.limits();
    for _ in 0..3 {
        // The byte the last evaluation dirtied is back to 0: a fresh
        // instance each time, with the policy in its memory.
        let reply = snapshot.evaluate(limits, b"W1").await.unwrap();
        assert_eq!(reply.unwrap(), b"\0helloW1");
    }
    // Only live pages: the guest's data, the random bytes and the policy
    // (64 KiB + 8 KiB), and the request buffer the host wrote (at 100000);
    // not the garbage init left on the dead stack (below 64 KiB).
    let wasm = interpreter
        .snapshot_wasm(&policy("hello"), b"hello")
        .await
        .unwrap()
        .unwrap();
    let mut segments = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
        if let wasmparser::Payload::DataSection(section) = payload.unwrap() {
            for data in section {
                let data = data.unwrap();
                let wasmparser::DataKind::Active { offset_expr, .. } = data.kind else {
                    panic!("a passive segment");
                };
                let Ok(wasmparser::Operator::I32Const { value }) =
                    offset_expr.get_operators_reader().read()
                else {
                    panic!("a segment at no constant offset");
                };
                segments.push((value, data.data.len()));
            }
        }
    }
    assert_eq!(segments, [(65536, 8192), (98304, 4096)]);
    assert_eq!(snapshot.image_bytes(), Some(3 * 4096));
}

#[tokio::test]
async fn snapshots_are_a_function_of_the_policy_and_its_digest() {
    let engine = engine();
    let first = Interpreter::new(&engine.sandbox(), guest());
    let second = Interpreter::new(&engine.sandbox(), guest());
    let one = first.snapshot_wasm(&policy("a"), b"a").await.unwrap();
    let again = second.snapshot_wasm(&policy("a"), b"a").await.unwrap();
    assert!(one == again, "two snapshots of the same policy differ");
    // The randomness init drew is seeded by the policy's digest.
    let other = first.snapshot_wasm(&policy("b"), b"a").await.unwrap();
    assert!(one != other);
}

#[tokio::test]
async fn a_refusal_is_the_guests_and_init_must_leave_the_globals_alone() {
    let engine = engine();
    let interpreter = Interpreter::new(&engine.sandbox(), guest());
    let Err(InterpreterError::Refused(payload)) = prepare(&interpreter, "!no such rule").await
    else {
        panic!("the guest refuses the policy");
    };
    assert_eq!(payload, b"!no such rule");
    let Err(InterpreterError::Init(message)) = prepare(&interpreter, "?").await else {
        panic!("a changed global cannot be snapshotted");
    };
    assert!(message.contains("left global 1 at 0x7"), "{message}");
}

#[tokio::test]
async fn each_evaluation_has_the_limits_of_every_policy_and_costs_only_itself() {
    let engine = engine();
    let interpreter = Interpreter::new(&engine.sandbox(), guest());
    let snapshot = prepare(&interpreter, "p").await.unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        memory_bytes: 4 << 20,
        ..engine.limits().clone()
    };
    let error = snapshot.evaluate(&limits, b"L").await.unwrap_err();
    assert_eq!(error, "timed out after 200ms");
    let error = snapshot.evaluate(&limits, b"G").await.unwrap_err();
    assert_eq!(error, format!("out of memory (limit: {} bytes)", 4 << 20));
    let error = snapshot.evaluate(&limits, b"B").await.unwrap_err();
    assert!(
        error.starts_with(&format!("policy output too large: {} bytes", 0x7fff_fffe)),
        "{error}"
    );
    let reply = snapshot.evaluate(&limits, b"ok").await.unwrap();
    assert_eq!(reply.unwrap(), b"\0pok");
}

#[tokio::test]
async fn code_and_snapshots_come_from_the_compiled_cache_when_warm() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let cache = CompiledCache::new(dir.path());
    let cold = Interpreter::new(&engine.sandbox(), guest());
    let snapshot = cold
        .prepare(&policy("warm"), b"warm", Some(&cache))
        .await
        .unwrap();
    assert_eq!(snapshot.origin(), CompileOrigin::Compiled);
    // The code and the snapshot.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    let warm = Interpreter::new(&engine.sandbox(), guest());
    let loaded = warm
        .prepare(&policy("warm"), b"warm", Some(&cache))
        .await
        .unwrap();
    assert_eq!(loaded.origin(), CompileOrigin::Cache);
    assert_eq!(loaded.digest(), snapshot.digest());
    assert!(warm.split.get().is_none(), "a warm start splits nothing");
    let reply = loaded.evaluate(engine.limits(), b"!").await.unwrap();
    assert_eq!(reply.unwrap(), b"\0warm!");
}
