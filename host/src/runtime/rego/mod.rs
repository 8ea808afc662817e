//! The Rego runtime: policies written in Rego (Gatekeeper's
//! ConstraintTemplates) evaluated by regorus inside a wasm sandbox, with a
//! fresh instance per evaluation like every other policy.
//!
//! The interpreter is a guest of the [interpreter
//! mechanism](crate::runtime::interpreter) (`guest/`: regorus behind the interpreter
//! ABI), which `host/build.rs` builds for `wasm32-wasip1` and the host
//! embeds ([`GUEST`]): nothing to install beside the binary. A policy's
//! Rego never becomes code; it becomes a *snapshot*: regorus's memory after
//! `init` parsed and prepared it, kept as a small data module (cached per
//! [`RegoSource::digest`]), which every evaluation maps copy-on-write under
//! the interpreter's code, compiled once per process.
//!
//! `init`'s request is `{"modules": [..], "rule": .., "rego_v0": ..}`;
//! `evaluate`'s is `{"input": .., "data": ..}` and its reply the rule's
//! value as JSON (empty when undefined); errors are
//! [`RegoDiagnostic`]s, their places mapped back to the files the Rego was
//! read from ([`TextOrigin`]).

pub mod gatekeeper;
mod kind;

pub(crate) use self::kind::RegoKind;
pub use self::kind::{RegoPolicy, is_constraint_template};

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::cache::CompiledCache;
use crate::digest::Digest;
use crate::limits::Limits;
use crate::runtime::CompileOrigin;
use crate::runtime::interpreter::{Interpreter, InterpreterError, Sandbox, Snapshot};

/// The Rego guest (regorus for `wasm32-wasip1`), built by `host/build.rs`.
pub static GUEST: &[u8] = include_bytes!(env!("PORTCULLIS_REGO_GUEST"));

/// The digest of [`GUEST`]: part of every policy's digest, so a host with
/// another guest never takes an old snapshot from the cache.
pub fn guest_digest() -> Digest {
    static DIGEST: OnceLock<Digest> = OnceLock::new();
    *DIGEST.get_or_init(|| Digest::of(GUEST))
}

/// One Rego file of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoModule {
    /// Its name, unique in the policy (e.g. `template.yaml#rego`).
    pub name: String,
    /// The Rego text.
    pub text: String,
    /// Where the text sits in the file it was read from, when known:
    /// errors then cite that file's lines and columns instead.
    pub origin: Option<TextOrigin>,
}

/// Where a text embedded in a file starts: its line `n` is the file's line
/// `line + n - 1`, every line shifted right by `indent` columns (a YAML
/// block scalar's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOrigin {
    /// The file (e.g. `template.yaml`).
    pub file: String,
    /// The file's line holding the text's first line, from 1.
    pub line: u32,
    /// Columns before each of the text's lines in the file.
    pub indent: u32,
}

/// What a Rego policy is made of: its modules and the rule it evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoSource {
    /// The modules: first the one whose package holds `rule` (a template's
    /// `rego`), then the modules it imports (a template's `libs`).
    pub modules: Vec<RegoModule>,
    /// The rule evaluated, relative to the first module's package (e.g.
    /// `violation`).
    pub rule: String,
    /// Whether the modules are written in Rego v0 (Gatekeeper's default)
    /// rather than v1.
    pub rego_v0: bool,
}

impl RegoSource {
    /// The policy's identity: what its snapshot is cached under. Covers the
    /// guest, the syntax, the rule and every module's name and text (names
    /// too: errors cite them); not where the texts were read from, which
    /// only errors use, outside the snapshot.
    pub fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(b"portcullis-rego-snapshot\0");
        hasher.update(guest_digest().hex());
        hasher.update([u8::from(self.rego_v0)]);
        for field in
            std::iter::once(&self.rule).chain(self.modules.iter().flat_map(|m| [&m.name, &m.text]))
        {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        Digest::of(&hasher.finalize())
    }

    /// `init`'s request.
    fn init_request(&self) -> Vec<u8> {
        let modules: Vec<_> = self
            .modules
            .iter()
            .map(|module| serde_json::json!({"name": module.name, "text": module.text}))
            .collect();
        serde_json::json!({"modules": modules, "rule": self.rule, "rego_v0": self.rego_v0})
            .to_string()
            .into_bytes()
    }

    /// Where the modules came from, for mapping errors.
    fn origins(&self) -> Origins {
        Origins(
            self.modules
                .iter()
                .filter_map(|module| Some((module.name.clone(), module.origin.clone()?)))
                .collect(),
        )
    }
}

/// Each module's origin, by name.
#[derive(Debug, Clone, Default)]
struct Origins(Vec<(String, TextOrigin)>);

impl Origins {
    /// `diagnostic` with its place moved into the file its module came from.
    fn map(&self, mut diagnostic: RegoDiagnostic) -> RegoDiagnostic {
        let Some(at) = &mut diagnostic.location else {
            return diagnostic;
        };
        if let Some((_, origin)) = self.0.iter().find(|(name, _)| *name == at.file) {
            at.file.clone_from(&origin.file);
            at.line += origin.line.saturating_sub(1);
            at.column += origin.indent;
        }
        diagnostic
    }
}

/// Where in a Rego module something is, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegoLocation {
    /// The module's name ([`RegoModule::name`]), or the file it was read
    /// from ([`TextOrigin::file`]).
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

/// The interpreter's error about a policy: a syntax error, an unknown rule,
/// an error raised while evaluating.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegoDiagnostic {
    /// What is wrong, one line.
    pub message: String,
    /// Where, when known.
    pub location: Option<RegoLocation>,
    /// The interpreter's full report: location (in the module), the line
    /// with a caret, message.
    pub report: String,
}

impl RegoDiagnostic {
    /// Reads the guest's error payload; a payload that is not one is an
    /// error of its own.
    fn from_payload(payload: &[u8]) -> Self {
        serde_json::from_slice(payload).unwrap_or_else(|e| {
            Self::plain(format!(
                "unreadable error from the Rego guest ({e}): {}",
                String::from_utf8_lossy(payload)
            ))
        })
    }

    /// A diagnostic with no place.
    fn plain(message: String) -> Self {
        Self {
            report: message.clone(),
            message,
            location: None,
        }
    }
}

impl fmt::Display for RegoDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{}:{}:{}: {}", at.file, at.line, at.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a Rego policy cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RegoError {
    /// The Rego itself is wrong (the interpreter's diagnostic).
    #[error("{0}")]
    Policy(RegoDiagnostic),
    /// The ConstraintTemplate holding it cannot be read.
    #[error("{0}")]
    Template(String),
    /// Running `init` or taking the snapshot failed (a trap, a limit).
    #[error("cannot pre-initialise the Rego guest: {0}")]
    Snapshot(String),
    /// The guest or the snapshot cannot be compiled.
    #[error("cannot compile the Rego guest: {0}")]
    Compile(String),
}

impl RegoError {
    /// The interpreter's `error` about the policy whose modules came from
    /// `origins`.
    fn from_interpreter(error: InterpreterError, origins: &Origins) -> Self {
        match error {
            InterpreterError::Refused(payload) => {
                RegoError::Policy(origins.map(RegoDiagnostic::from_payload(&payload)))
            }
            InterpreterError::Init(message) => RegoError::Snapshot(message),
            error @ (InterpreterError::Guest(_) | InterpreterError::Compile(_)) => {
                RegoError::Compile(error.to_string())
            }
        }
    }
}

/// Why one evaluation produced no value.
#[derive(Debug, thiserror::Error)]
pub enum RegoEvalError {
    /// The interpreter raised an error (a conflict, an unreadable input).
    #[error("{0}")]
    Policy(RegoDiagnostic),
    /// The sandbox ended the evaluation (a limit, a trap), as it ends any
    /// policy's.
    #[error("{0}")]
    Guest(String),
}

/// The Rego runtime of one engine: the Rego guest, its code compiled on
/// first use and shared by every policy it prepares.
#[derive(Debug)]
pub struct RegoRuntime {
    interpreter: Interpreter,
}

impl RegoRuntime {
    /// The Rego runtime in `engine` (`Engine::sandbox`).
    pub fn new(engine: &Sandbox) -> Self {
        Self {
            interpreter: Interpreter::new(engine, GUEST),
        }
    }

    /// Prepares `source`: from `cache` when it holds its snapshot,
    /// otherwise snapshotted, compiled and stored.
    pub async fn prepare(
        &self,
        source: &RegoSource,
        cache: Option<&CompiledCache>,
    ) -> Result<Arc<PreparedRego>, RegoError> {
        let digest = source.digest();
        let origins = source.origins();
        let snapshot = self
            .interpreter
            .prepare(&digest, &source.init_request(), cache)
            .await
            .map_err(|error| RegoError::from_interpreter(error, &origins))?;
        Ok(Arc::new(PreparedRego {
            digest,
            origins,
            snapshot,
        }))
    }

    /// The snapshot of `source` (its data module's wasm): the same bytes
    /// every time, on every host with this guest.
    pub async fn snapshot(&self, source: &RegoSource) -> Result<Vec<u8>, RegoError> {
        match self
            .interpreter
            .snapshot_wasm(&source.digest(), &source.init_request())
            .await
        {
            Ok(Ok(wasm)) => Ok(wasm),
            Ok(Err(payload)) => Err(RegoError::Policy(RegoDiagnostic::from_payload(&payload))),
            Err(error) => Err(RegoError::Snapshot(error.to_string())),
        }
    }
}

/// A Rego policy snapshotted and compiled: every evaluation instantiates
/// it afresh.
pub struct PreparedRego {
    digest: Digest,
    origins: Origins,
    snapshot: Arc<Snapshot>,
}

impl fmt::Debug for PreparedRego {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRego")
            .field("digest", &self.digest)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl PreparedRego {
    /// The policy's digest ([`RegoSource::digest`]).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Whether it was snapshotted and compiled here or loaded from the cache.
    pub fn origin(&self) -> CompileOrigin {
        self.snapshot.origin()
    }

    /// The bytes of memory its snapshot holds, when it was taken here.
    pub fn snapshot_bytes(&self) -> Option<usize> {
        self.snapshot.image_bytes()
    }

    /// How long preparing took (snapshot and compile, or the cache load).
    pub fn prepare_time(&self) -> Duration {
        self.snapshot.prepare_time()
    }

    /// The snapshot: its compiled data module, and the interpreter's code.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Evaluates the policy's rule in a fresh instance under `limits` (the
    /// evaluation's store, limiter and deadline): `input` is the JSON input
    /// document, `data` a JSON object merged into the data document. Returns
    /// the rule's value as JSON, `None` when undefined.
    pub async fn evaluate(
        &self,
        limits: &Limits,
        input: &str,
        data: Option<&str>,
    ) -> Result<Option<String>, RegoEvalError> {
        let request = evaluate_request(input, data);
        let reply = self
            .snapshot
            .evaluate(limits, request.as_bytes())
            .await
            .map_err(RegoEvalError::Guest)?;
        self.read_reply(reply)
    }

    /// The rule's value (or the interpreter's error) from the guest's reply.
    fn read_reply(
        &self,
        reply: crate::runtime::interpreter::Reply,
    ) -> Result<Option<String>, RegoEvalError> {
        match reply {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => String::from_utf8(value).map(Some).map_err(|e| {
                RegoEvalError::Policy(RegoDiagnostic::plain(format!(
                    "the Rego guest's value is not UTF-8: {e}"
                )))
            }),
            Err(payload) => Err(RegoEvalError::Policy(
                self.origins.map(RegoDiagnostic::from_payload(&payload)),
            )),
        }
    }
}

/// `evaluate`'s request: the input and data documents, as given (the guest
/// parses the whole once).
fn evaluate_request(input: &str, data: Option<&str>) -> String {
    let data = data.unwrap_or("null");
    let mut request = String::with_capacity(input.len() + data.len() + 20);
    request.push_str("{\"input\":");
    request.push_str(input);
    request.push_str(",\"data\":");
    request.push_str(data);
    request.push('}');
    request
}

#[cfg(test)]
mod tests;
