//! The Rego runtime as a kind of policy: a `policies.yml` entry whose
//! `module` is a Gatekeeper ConstraintTemplate (YAML or JSON) and whose
//! `constraints` are its settings. The template's snapshot is what the
//! compiled cache keeps (its data module, tagged with the guest's digest);
//! every evaluation instantiates it once per matching constraint, in the
//! evaluation's own store, under its limits and deadline.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::future::BoxFuture;
use serde_json::Value;
use wasmtime::Store;

use super::gatekeeper::{Constraint, ConstraintTemplate, Decision, Review, parse_documents};
use super::gatekeeper::{ConstraintViolation, constraints_from_settings, parse_violations};
use super::{GUEST, RegoDiagnostic, RegoError, RegoSource, evaluate_request, guest_digest};
use crate::bindings::{PolicyMetadata, ValidationResponse};
use crate::cache::Compiled;
use crate::limits::Limits;
use crate::runtime::interpreter::{Interpreter, Sandbox, Snapshot};
use crate::runtime::{
    Call, CodeError, Compiler, Completed, Failure, Kind, PolicyFile, Returned, Runtime, StoreSetup,
};
use crate::store::EvaluationState;

/// Whether `bytes` are a ConstraintTemplate: YAML or JSON text naming
/// `kind: ConstraintTemplate` of `templates.gatekeeper.sh`.
pub fn is_constraint_template(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        return false;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    text.contains("templates.gatekeeper.sh/") && text.contains("ConstraintTemplate")
}

/// The kind: Gatekeeper's templates, one per engine.
pub(crate) struct RegoKind {
    tag: String,
    interpreter: OnceLock<Interpreter>,
}

impl RegoKind {
    /// The kind for this build's Rego guest.
    pub(crate) fn new() -> Self {
        Self {
            tag: format!("rego-{}", &guest_digest().hex()[..12]),
            interpreter: OnceLock::new(),
        }
    }

    fn interpreter(&self, compiler: Compiler<'_>) -> &Interpreter {
        self.interpreter.get_or_init(|| {
            let sandbox = Sandbox {
                engine: compiler.engine().clone(),
                linker: compiler.linkers.modules.clone(),
            };
            Interpreter::new(&sandbox, GUEST)
        })
    }
}

/// The template in `bytes`, and the Rego it runs; errors cite the file's
/// lines and columns.
fn template(bytes: &[u8]) -> Result<(ConstraintTemplate, RegoSource), RegoError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| RegoError::Template(format!("not UTF-8 text: {e}")))?;
    let documents = parse_documents(text).map_err(RegoError::Template)?;
    let [document] = <[Value; 1]>::try_from(documents).map_err(|documents| {
        RegoError::Template(format!(
            "a template's file holds one ConstraintTemplate, this one {} documents",
            documents.len()
        ))
    })?;
    let template = ConstraintTemplate::from_value(document).map_err(RegoError::Template)?;
    let source = template.rego_source_in("template", text);
    Ok((template, source))
}

impl From<RegoError> for CodeError {
    fn from(error: RegoError) -> Self {
        CodeError::Refused(Box::new(error))
    }
}

impl Kind for RegoKind {
    fn cache_tag(&self) -> &str {
        &self.tag
    }

    fn compile<'a>(
        &'a self,
        compiler: Compiler<'a>,
        source: &'a [u8],
    ) -> BoxFuture<'a, Result<Compiled, CodeError>> {
        Box::pin(async move {
            let (_, source) = template(source)?;
            let interpreter = self.interpreter(compiler);
            let origins = source.origins();
            let module = interpreter
                .snapshot_module(&source.digest(), &source.init_request(), compiler.cache)
                .await
                .map_err(|error| RegoError::from_interpreter(error, &origins))?
                .map_err(|payload| {
                    RegoError::Policy(origins.map(RegoDiagnostic::from_payload(&payload)))
                })?;
            Ok(Compiled::Module(module))
        })
    }

    fn prepare(
        &self,
        compiler: Compiler<'_>,
        compiled: Compiled,
        file: &PolicyFile<'_>,
    ) -> Result<Box<dyn Runtime>, CodeError> {
        let Compiled::Module(data) = compiled else {
            return Err(RegoError::Compile(
                "the compiled cache's entry for it holds a component".into(),
            )
            .into());
        };
        let (template, _) = template(&file.read()?)?;
        let snapshot = self
            .interpreter(compiler)
            .snapshot_from(data, compiler.cache)
            .map_err(|e| RegoError::Compile(e.to_string()))?;
        Ok(Box::new(RegoPolicy {
            template,
            snapshot,
            constraints: Mutex::new(None),
        }))
    }
}

/// A template's snapshot with its template: what every evaluation of the
/// policy instantiates.
pub struct RegoPolicy {
    template: ConstraintTemplate,
    snapshot: Arc<Snapshot>,
    /// The constraints of the last settings seen, parsed once.
    constraints: Mutex<Option<(String, Arc<Vec<Constraint>>)>>,
}

impl RegoPolicy {
    /// The constraints `settings` hold, checked against the template.
    fn constraints(&self, settings: &str) -> Result<Arc<Vec<Constraint>>, String> {
        let mut last = self.constraints.lock().expect("not poisoned");
        if let Some((text, constraints)) = last.as_ref()
            && text == settings
        {
            return Ok(constraints.clone());
        }
        let value: Value = serde_json::from_str(settings).map_err(|e| format!("settings: {e}"))?;
        let constraints = Arc::new(constraints_from_settings(&self.template, &value)?);
        *last = Some((settings.to_owned(), constraints.clone()));
        Ok(constraints)
    }

    /// Reviews `request` with every matching constraint, one fresh
    /// instance of the snapshot each, in `store`.
    async fn review(
        &self,
        store: &mut Store<EvaluationState>,
        request: Value,
        settings: &str,
        limits_reply: usize,
    ) -> Result<ValidationResponse, Failure> {
        let constraints = self.constraints(settings).map_err(Failure::Policy)?;
        let review = Review::from_request(request).map_err(|e| Failure::Policy(e.to_string()))?;
        let mut violations = Vec::new();
        for constraint in constraints.iter() {
            let matched = constraint
                .selection
                .matches(&review.candidate(None))
                .map_err(|e| Failure::Policy(format!("constraint `{}`: {e}", constraint.name)))?;
            if !matched {
                continue;
            }
            let input = review.input(&constraint.parameters, None).to_string();
            let request = evaluate_request(&input, None);
            let reply = self
                .snapshot
                .run(store, request.as_bytes(), limits_reply)
                .await?;
            let value = match reply {
                Ok(value) if value.is_empty() => None,
                Ok(value) => Some(String::from_utf8(value).map_err(|e| {
                    Failure::Protocol(format!("the Rego guest's value is not UTF-8: {e}"))
                })?),
                Err(payload) => {
                    return Err(Failure::Policy(format!(
                        "template `{}`: {}",
                        self.template.name,
                        RegoDiagnostic::from_payload(&payload)
                    )));
                }
            };
            let found = parse_violations(value.as_deref()).map_err(Failure::Protocol)?;
            violations.extend(
                found
                    .into_iter()
                    .map(|violation| ConstraintViolation::new(constraint, violation)),
            );
        }
        let decision = Decision::new(violations);
        for dry_run in &decision.dry_runs {
            tracing::info!(constraint = %dry_run.name, "dryrun violation: {}", dry_run.message());
        }
        Ok(ValidationResponse {
            allowed: decision.allowed(),
            message: decision.message(),
            code: None,
            mutated_object: None,
            warnings: decision.warnings,
            audit_annotations: Vec::new(),
        })
    }
}

impl Runtime for RegoPolicy {
    fn kind(&self) -> &'static str {
        "rego"
    }

    fn setup(&self, _call: Call<'_>, _limits: &Limits) -> StoreSetup {
        StoreSetup::plain()
    }

    fn run<'a>(
        &'a self,
        store: &'a mut Store<EvaluationState>,
        call: Call<'a>,
        started: Instant,
    ) -> BoxFuture<'a, Result<Completed, Failure>> {
        Box::pin(async move {
            let returned = match call {
                Call::Metadata => Returned::Metadata(PolicyMetadata {
                    rules: Vec::new(),
                    mutating: false,
                    description: format!(
                        "Gatekeeper ConstraintTemplate `{}` (constraints of kind {})",
                        self.template.name, self.template.kind
                    ),
                }),
                Call::ValidateSettings { settings } => {
                    Returned::Settings(self.constraints(settings).map(|_| ()))
                }
                Call::Validate { request, settings } => {
                    let mut json = String::new();
                    crate::admission::write_request_json(request, &mut json);
                    let request: Value = serde_json::from_str(&json)
                        .map_err(|e| Failure::Protocol(format!("the request: {e}")))?;
                    Returned::Verdict(self.review(store, request, settings, usize::MAX).await?)
                }
                Call::ValidateRaw { document, settings } => {
                    let document: Value = serde_json::from_str(document)
                        .map_err(|e| Failure::Policy(format!("the document: {e}")))?;
                    let request = document.get("request").cloned().unwrap_or(document);
                    Returned::Verdict(self.review(store, request, settings, usize::MAX).await?)
                }
            };
            Ok(Completed {
                returned,
                instantiation: started.elapsed(),
            })
        })
    }
}
