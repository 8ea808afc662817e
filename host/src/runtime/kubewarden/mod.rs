//! Kubewarden's policies, run unchanged: core wasm modules that speak waPC
//! (Kubewarden's Rust and TinyGo SDKs) or are WASI commands (Go,
//! JavaScript), recognised by their `io.kubewarden.metadata` custom section.
//!
//! The same architecture as components: a module is compiled once per
//! digest (and cached, tagged `module`), pre-linked once into an
//! `InstancePre` against the engine's module linker (all of WASI preview1,
//! granting nothing, plus the `wapc` and `host` imports this runtime adds),
//! and every evaluation instantiates it afresh.
//! Limits, deadline, output capture and the verdict's enforcement are the
//! evaluation's, shared with components; this module only speaks the
//! protocol: [`wapc`] and [`wasi_cli`] run one call, [`protocol`] turns
//! requests into Kubewarden's JSON and its responses back, [`host_call`]
//! hands host calls to the [capabilities](crate::capabilities).

pub mod annotate;
mod host_call;
pub mod metadata;
mod protocol;
mod wapc;
mod wasi_cli;

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use wasmtime::{InstancePre, Linker, Module, Store};

use self::metadata::{ExecutionMode, Metadata, MetadataError};
use super::{
    Call, CodeError, Compiler, Completed, Failure, GuestFault, Kind, PolicyFile, Returned, Runtime,
    StoreSetup,
};
use crate::bindings::PolicyMetadata;
use crate::cache::Compiled;
use crate::limits::Limits;
use crate::store::{EvaluationState, GuestIo, GuestOutput, Linkers, StdinPipe};

/// The kind: Kubewarden's core modules, waPC or WASI mode.
pub(crate) struct KubewardenKind;

impl Kind for KubewardenKind {
    fn cache_tag(&self) -> &str {
        "module"
    }

    /// Adds what a Kubewarden module imports beside WASI preview1 (which the
    /// linkers have) to the module linker: waPC's host side, and WASI mode's
    /// `host.call`.
    fn add_to_linkers(&self, linkers: &mut Linkers) -> wasmtime::Result<()> {
        wapc::add_to_linker(&mut linkers.modules)?;
        wasi_cli::add_to_linker(&mut linkers.modules)
    }

    /// Refuses a module without usable metadata before compiling it.
    fn compile<'a>(
        &'a self,
        compiler: Compiler<'a>,
        source: &'a [u8],
    ) -> BoxFuture<'a, Result<Compiled, CodeError>> {
        Box::pin(async move {
            accept(source)?;
            let module = Module::new(compiler.engine(), source)
                .map_err(|e| KubewardenError::Compile(format!("{e:#}")))?;
            Ok(Compiled::Module(module))
        })
    }

    fn prepare(
        &self,
        compiler: Compiler<'_>,
        compiled: Compiled,
        file: &PolicyFile<'_>,
    ) -> Result<Box<dyn Runtime>, CodeError> {
        let Compiled::Module(module) = compiled else {
            return Err(KubewardenError::Compile(
                "the compiled cache's entry for it holds a component".into(),
            )
            .into());
        };
        // The metadata lives in the wasm, not in the compiled form.
        let metadata = accept(&file.read()?)?;
        Ok(Box::new(KubewardenModule::link(
            &compiler.linkers.modules,
            &module,
            metadata,
        )?))
    }
}

/// Why a core module cannot be run as a Kubewarden policy.
#[derive(Debug, thiserror::Error)]
pub enum KubewardenError {
    /// Its metadata is missing or unusable.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// It declares a protocol this host does not speak.
    #[error(
        "Kubewarden metadata says protocolVersion `{0}`: Portcullis runs waPC policies of \
         protocol `v1` (annotate the module again with `portcullis annotate` or `kwctl annotate`)"
    )]
    ProtocolVersion(String),
    /// A Rego policy.
    #[error(
        "executionMode `{0}`: Rego policies (OPA and Gatekeeper) are not supported yet; they \
         are a later step of Portcullis' Kubewarden compatibility"
    )]
    Rego(&'static str),
    /// wasmtime refused to compile it.
    #[error("cannot compile the module: {0}")]
    Compile(String),
    /// It imports something the host does not provide, or lacks an export
    /// its execution mode needs.
    #[error("cannot be linked as a Kubewarden {mode} policy: {reason}")]
    Link {
        /// The execution mode.
        mode: &'static str,
        /// What is missing.
        reason: String,
    },
}

impl From<KubewardenError> for CodeError {
    fn from(error: KubewardenError) -> Self {
        CodeError::Refused(Box::new(error))
    }
}

/// A Kubewarden module compiled and pre-linked once, shared by every policy
/// that uses it and every concurrent evaluation.
pub struct KubewardenModule {
    metadata: Metadata,
    policy_metadata: PolicyMetadata,
    pre: InstancePre<EvaluationState>,
}

impl std::fmt::Debug for KubewardenModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubewardenModule")
            .field("mode", &self.metadata.execution_mode)
            .finish_non_exhaustive()
    }
}

/// Reads and checks the metadata of the module `bytes`: what start-up
/// refuses before compiling anything.
fn accept(bytes: &[u8]) -> Result<Metadata, KubewardenError> {
    let metadata = Metadata::from_module(bytes)?;
    match metadata.execution_mode {
        ExecutionMode::Opa => return Err(KubewardenError::Rego("opa")),
        ExecutionMode::Gatekeeper => return Err(KubewardenError::Rego("gatekeeper")),
        // Kubewarden annotates WASI commands with protocol `Unknown`: the
        // protocol version is waPC's.
        ExecutionMode::Wasi => {}
        ExecutionMode::Wapc => match metadata.protocol_version.as_deref() {
            Some("v1") => {}
            other => {
                return Err(KubewardenError::ProtocolVersion(
                    other.unwrap_or("(none)").to_owned(),
                ));
            }
        },
    }
    Ok(metadata)
}

impl KubewardenModule {
    /// Pre-links the compiled `module`, whose `metadata` was
    /// [accepted](accept), against `linker`.
    fn link(
        linker: &Linker<EvaluationState>,
        module: &Module,
        metadata: Metadata,
    ) -> Result<Self, KubewardenError> {
        let mode = metadata.execution_mode.as_str();
        let needed = match metadata.execution_mode {
            ExecutionMode::Wasi => "_start",
            _ => "__guest_call",
        };
        if module.get_export(needed).is_none() {
            return Err(KubewardenError::Link {
                mode,
                reason: format!("it exports no `{needed}`"),
            });
        }
        if !matches!(
            module.get_export("memory"),
            Some(wasmtime::ExternType::Memory(_))
        ) {
            return Err(KubewardenError::Link {
                mode,
                reason: "it exports no `memory`".into(),
            });
        }
        let pre = linker
            .instantiate_pre(module)
            .map_err(|e| KubewardenError::Link {
                mode,
                reason: format!("{e:#}"),
            })?;
        Ok(Self {
            policy_metadata: metadata.to_policy_metadata(),
            metadata,
            pre,
        })
    }

    /// Its Kubewarden metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The compiled module.
    pub fn module(&self) -> &Module {
        self.pre.module()
    }

    /// How the store of an evaluation of `call` is set up, and the waPC
    /// exchange it starts with (none: the call needs no instance).
    fn call_setup(&self, call: Call<'_>, limits: &Limits) -> StoreSetup {
        let (operation, payload) = match call {
            Call::Metadata => return StoreSetup::plain(),
            Call::ValidateSettings { settings } => {
                ("validate_settings", settings.as_bytes().to_vec())
            }
            Call::Validate { request, settings } => (
                "validate",
                protocol::validation_request(request, settings).into_bytes(),
            ),
            Call::ValidateRaw { document, settings } => (
                "validate",
                protocol::raw_validation_request(document, settings).into_bytes(),
            ),
        };
        let mut state = CallState {
            operation,
            payload: Vec::new(),
            response_limit: limits.response_bytes,
            guest_response: None,
            guest_error: None,
            host_response: None,
            host_error: None,
            stdin: None,
            stdout: None,
        };
        let io = match self.metadata.execution_mode {
            ExecutionMode::Wasi => {
                let stdin = StdinPipe::new(payload);
                // One byte over the limit is enough to know it was exceeded.
                let stdout = GuestOutput::new(limits.response_bytes.saturating_add(1));
                state.stdin = Some(stdin.clone());
                state.stdout = Some(stdout.clone());
                let command = if operation == "validate" {
                    "validate"
                } else {
                    "validate-settings"
                };
                GuestIo::Command {
                    args: vec![wasi_cli::PROGRAM.to_owned(), command.to_owned()],
                    stdin,
                    stdout,
                }
            }
            _ => {
                state.payload = payload;
                GuestIo::Log
            }
        };
        StoreSetup {
            io,
            state: Some(Box::new(state)),
        }
    }

    /// Runs `call` in a fresh instance in `store` (set up by
    /// [`call_setup`](Self::call_setup)): what it returned, and when the
    /// instance was ready.
    async fn call(
        &self,
        store: &mut Store<EvaluationState>,
        call: Call<'_>,
        started: Instant,
    ) -> Result<Completed, Failure> {
        if let Call::Metadata = call {
            return Ok(Completed {
                returned: Returned::Metadata(self.policy_metadata.clone()),
                instantiation: Duration::ZERO,
            });
        }
        let instance = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failure::Instantiate)?;
        let outcome = match self.metadata.execution_mode {
            ExecutionMode::Wasi => {
                let instantiated = started.elapsed();
                wasi_cli::run(&instance, store)
                    .await
                    .map(|response| (response, instantiated))
            }
            _ => {
                // Initialisers run per instance: part of getting it ready.
                wapc::initialize(&instance, store).await?;
                let instantiated = started.elapsed();
                wapc::guest_call(&instance, store)
                    .await
                    .map(|response| (response, instantiated))
            }
        };
        let (response, instantiated) = match (outcome, call) {
            // As in Kubewarden, settings the policy cannot even read (its
            // `validate_settings` answers with an error) are invalid settings.
            (Err(Failure::Policy(message)), Call::ValidateSettings { .. }) => {
                return Ok(Completed {
                    returned: Returned::Settings(Err(message)),
                    instantiation: started.elapsed(),
                });
            }
            (outcome, _) => outcome?,
        };
        let returned = match call {
            Call::Metadata => unreachable!("answered above"),
            Call::ValidateSettings { .. } => Returned::Settings(
                protocol::settings_response(&response).map_err(Failure::Protocol)?,
            ),
            Call::Validate { request, .. } => Returned::Verdict(
                protocol::validation_response(&response, request.object.is_none())
                    .map_err(Failure::Protocol)?,
            ),
            Call::ValidateRaw { document, .. } => Returned::Verdict(
                protocol::raw_validation_response(&response, protocol::is_enveloped(document))
                    .map_err(Failure::Protocol)?,
            ),
        };
        Ok(Completed {
            returned,
            instantiation: instantiated,
        })
    }
}

impl Runtime for KubewardenModule {
    fn kind(&self) -> &'static str {
        match self.metadata.execution_mode {
            ExecutionMode::Wasi => "kubewarden-wasi",
            _ => "kubewarden-wapc",
        }
    }

    fn setup(&self, call: Call<'_>, limits: &Limits) -> StoreSetup {
        self.call_setup(call, limits)
    }

    fn run<'a>(
        &'a self,
        store: &'a mut Store<EvaluationState>,
        call: Call<'a>,
        started: Instant,
    ) -> BoxFuture<'a, Result<Completed, Failure>> {
        Box::pin(self.call(store, call, started))
    }

    fn background_audit(&self) -> bool {
        self.metadata.background_audit
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }
}

/// One evaluation's waPC exchange, and WASI mode's streams, kept in the
/// store ([`EvaluationState::get`]) so the host functions reach it. Who is
/// calling is the store's [`Caller`](crate::capabilities::Caller).
pub struct CallState {
    operation: &'static str,
    payload: Vec<u8>,
    response_limit: usize,
    guest_response: Option<Vec<u8>>,
    guest_error: Option<String>,
    host_response: Option<Vec<u8>>,
    host_error: Option<String>,
    /// WASI mode: the policy's stdin, where host-call answers are appended.
    stdin: Option<StdinPipe>,
    /// WASI mode: the policy's stdout, its response.
    stdout: Option<GuestOutput>,
}
