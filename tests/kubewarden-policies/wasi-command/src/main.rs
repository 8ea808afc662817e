//! A Kubewarden WASI-mode policy, as Kubewarden's Go and JavaScript policies
//! are built: a WASI command run as `policy.wasm validate` (or
//! `validate-settings`) with the request on stdin, answering on stdout.
//!
//! It rejects objects carrying a label of `deniedLabels`. With
//! `lookupHost` set it first asks the host to resolve that name through the
//! `host.call` import (0 = success, 1 = error; the answer is appended to
//! stdin) and rejects with the host's answer.

use std::io::{Read, Write};

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    denied_labels: Vec<String>,
    lookup_host: Option<String>,
}

#[derive(Deserialize)]
struct ValidationRequest {
    request: Value,
    settings: Settings,
}

#[link(wasm_import_module = "host")]
unsafe extern "C" {
    /// Kubewarden's host call for WASI-mode policies.
    #[link_name = "call"]
    fn host_call(
        binding_ptr: *const u8,
        binding_len: usize,
        namespace_ptr: *const u8,
        namespace_len: usize,
        operation_ptr: *const u8,
        operation_len: usize,
        payload_ptr: *const u8,
        payload_len: usize,
    ) -> u32;
}

/// Calls the host; its answer is the next thing on stdin.
fn call_host(namespace: &str, operation: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let binding = "kubewarden";
    // SAFETY: every pointer/length pair is a live slice for the call.
    let status = unsafe {
        host_call(
            binding.as_ptr(),
            binding.len(),
            namespace.as_ptr(),
            namespace.len(),
            operation.as_ptr(),
            operation.len(),
            payload.as_ptr(),
            payload.len(),
        )
    };
    let answer = read_stdin();
    match status {
        0 => Ok(answer),
        _ => Err(String::from_utf8_lossy(&answer).into_owned()),
    }
}

fn read_stdin() -> Vec<u8> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .expect("reading stdin");
    bytes
}

fn answer(value: Value) {
    let mut stdout = std::io::stdout();
    stdout
        .write_all(value.to_string().as_bytes())
        .expect("writing stdout");
    stdout.flush().expect("flushing stdout");
}

fn validate(input: &[u8]) -> Value {
    let request: ValidationRequest = match serde_json::from_slice(input) {
        Ok(request) => request,
        Err(e) => {
            return json!({"accepted": false, "message": format!("bad request: {e}"), "code": 400});
        }
    };
    if let Some(host) = &request.settings.lookup_host {
        let payload = serde_json::to_vec(host).expect("a string serializes");
        let message = match call_host("net", "v1/dns_lookup_host", &payload) {
            Ok(answer) => format!("resolved: {}", String::from_utf8_lossy(&answer)),
            Err(error) => format!("host capability failed: {error}"),
        };
        return json!({"accepted": false, "message": message});
    }
    let labels = request.request.pointer("/object/metadata/labels");
    let denied: Vec<&String> = request
        .settings
        .denied_labels
        .iter()
        .filter(|label| labels.and_then(|l| l.get(label.as_str())).is_some())
        .collect();
    if denied.is_empty() {
        json!({"accepted": true})
    } else {
        let names: Vec<&str> = denied.iter().map(|l| l.as_str()).collect();
        json!({"accepted": false, "message": format!("denied labels: {}", names.join(", "))})
    }
}

fn validate_settings(input: &[u8]) -> Value {
    match serde_json::from_slice::<Settings>(input) {
        Ok(settings) if settings.denied_labels.iter().any(String::is_empty) => {
            json!({"valid": false, "message": "deniedLabels must not contain an empty name"})
        }
        Ok(_) => json!({"valid": true}),
        Err(e) => json!({"valid": false, "message": format!("bad settings: {e}")}),
    }
}

fn main() {
    let operation = std::env::args().nth(1).unwrap_or_default();
    let input = read_stdin();
    match operation.as_str() {
        "validate" => answer(validate(&input)),
        "validate-settings" => answer(validate_settings(&input)),
        other => {
            eprintln!("unknown operation `{other}`");
            std::process::exit(2);
        }
    }
}
