//! The evaluation environment: every configured policy, loaded once, backed
//! by one compiled and pre-linked policy (component or Kubewarden module)
//! per unique digest.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bindings::{AdmissionRequest, PolicyMetadata, ValidationResponse};
use crate::cache::CompiledCache;
use crate::capabilities::Grants;
use crate::component::{CompileOrigin, ComponentError, Digest};
use crate::engine::Engine;
use crate::evaluation::{Call, EvaluationError, PolicyContext, Returned, evaluate};
use crate::limits::Limits;
use crate::policy::PolicySpec;
use crate::runtime::{CodeError, PolicyCode};

/// A policy ready to evaluate requests.
#[derive(Debug)]
pub struct Policy {
    spec: PolicySpec,
    settings_json: String,
    limits: Limits,
    engine: Engine,
    code: PolicyCode,
    metadata: Arc<PolicyMetadata>,
    grants: Arc<Grants>,
}

impl Policy {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// How the operator declared it.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// The code it runs (a component or a Kubewarden module).
    pub fn code(&self) -> &PolicyCode {
        &self.code
    }

    /// What the policy says about itself (a component's `metadata` export,
    /// a Kubewarden module's metadata section).
    pub fn metadata(&self) -> &PolicyMetadata {
        &self.metadata
    }

    /// The evaluation deadline in force for it.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// Every limit in force for it (the engine's, with its overrides).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Counts that show what loading did; deduplication is visible here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Policies loaded.
    pub policies: usize,
    /// Distinct components (by digest) behind them — per engine, for the rare
    /// policy with a stack limit of its own; also the number of
    /// `InstancePre`s created.
    pub unique_components: usize,
    /// Components compiled from wasm.
    pub compiled: usize,
    /// Components loaded from the compiled cache.
    pub from_cache: usize,
}

/// Why a policy could not be loaded. Names the policy and its module.
#[derive(Debug, thiserror::Error)]
#[error("policy `{policy}` ({}): {reason}", module.display())]
pub struct LoadError {
    /// The policy's id.
    pub policy: String,
    /// Its component file.
    pub module: PathBuf,
    /// What went wrong.
    pub reason: LoadFailure,
}

/// What went wrong loading a policy.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    /// Another policy already has this id.
    #[error("duplicate policy id")]
    DuplicateId,
    /// The code is unusable.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// The policy's `validate-settings` refused the settings.
    #[error("settings rejected: {0}")]
    SettingsRejected(String),
    /// The policy's limits are not acceptable.
    #[error("invalid limits: {0}")]
    Limits(String),
    /// The component imports a host capability it has not been granted.
    #[error(
        "imports `{import}` but is granted no Kubernetes resource: list what it reads under \
         `contextAwareResources` in its policies.yml entry (or grant \
         `hostCapabilities: [kubernetes/can_i]` if it only asks can-i)"
    )]
    NotGranted {
        /// The import, e.g. `portcullis:policy/kubernetes@0.1.1`.
        import: String,
    },
    /// Calling the policy at load time failed.
    #[error("{what} failed: {error}")]
    Call {
        /// Which call (`metadata`, `validate-settings`).
        what: &'static str,
        /// How it failed.
        error: EvaluationError,
    },
}

/// Why a request could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// No policy has this id.
    #[error("unknown policy `{0}`")]
    UnknownPolicy(String),
    /// The policy produced no verdict.
    #[error(transparent)]
    Evaluation(#[from] EvaluationError),
}

/// A verdict and how long it took.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The policy's response.
    pub response: ValidationResponse,
    /// Time spent creating the instance.
    pub instantiation: Duration,
    /// Instantiation plus the call.
    pub total: Duration,
}

/// Every loaded policy, sharing the engine and the pre-linked components.
pub struct Environment {
    engine: Engine,
    policies: BTreeMap<String, Arc<Policy>>,
    stats: LoadStats,
}

impl Environment {
    /// Loads `specs`: reads each component file once, compiles (or loads from
    /// `cache`) and pre-links each unique digest once, reads each component's
    /// metadata, and validates every policy's settings through the policy.
    pub async fn load(
        engine: &Engine,
        specs: impl IntoIterator<Item = PolicySpec>,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, LoadError> {
        let mut loader = Loader {
            engine,
            engines: HashMap::new(),
            cache,
            digests_by_path: HashMap::new(),
            prefetched: HashMap::new(),
            components: HashMap::new(),
            stats: LoadStats::default(),
        };
        let specs: Vec<PolicySpec> = specs.into_iter().collect();
        loader.prefetch(&specs).await;
        let mut policies = BTreeMap::new();
        for spec in specs {
            let fail = |reason: LoadFailure| LoadError {
                policy: spec.id.clone(),
                module: spec.module.clone(),
                reason,
            };
            if policies.contains_key(&spec.id) {
                return Err(fail(LoadFailure::DuplicateId));
            }
            let policy = loader.load(&spec).await.map_err(fail)?;
            policies.insert(spec.id.clone(), Arc::new(policy));
        }
        let mut stats = loader.stats;
        stats.policies = policies.len();
        stats.unique_components = loader.components.len();
        tracing::info!(
            policies = stats.policies,
            unique_components = stats.unique_components,
            compiled = stats.compiled,
            from_cache = stats.from_cache,
            "policies loaded"
        );
        Ok(Self {
            engine: engine.clone(),
            policies,
            stats,
        })
    }

    /// The policy with this id.
    pub fn policy(&self, id: &str) -> Option<&Arc<Policy>> {
        self.policies.get(id)
    }

    /// Every policy, by id.
    pub fn policies(&self) -> impl ExactSizeIterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// What loading did.
    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    /// The engine behind this environment.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Evaluates an admission request with the policy `id`.
    pub async fn validate(
        &self,
        id: &str,
        request: &AdmissionRequest,
    ) -> Result<Verdict, EvaluateError> {
        Ok(self.lookup(id)?.validate(request).await?)
    }

    /// Evaluates a raw JSON document with the policy `id`.
    pub async fn validate_raw(&self, id: &str, document: &str) -> Result<Verdict, EvaluateError> {
        Ok(self.lookup(id)?.validate_raw(document).await?)
    }

    fn lookup(&self, id: &str) -> Result<&Policy, EvaluateError> {
        self.policies
            .get(id)
            .map(|p| p.as_ref())
            .ok_or_else(|| EvaluateError::UnknownPolicy(id.to_owned()))
    }
}

impl Policy {
    /// Evaluates an admission request in a fresh instance.
    pub async fn validate(&self, request: &AdmissionRequest) -> Result<Verdict, EvaluationError> {
        let call = Call::Validate {
            request,
            settings: &self.settings_json,
        };
        self.verdict(call).await
    }

    /// Evaluates a raw JSON document in a fresh instance.
    pub async fn validate_raw(&self, document: &str) -> Result<Verdict, EvaluationError> {
        let call = Call::ValidateRaw {
            document,
            settings: &self.settings_json,
        };
        self.verdict(call).await
    }

    async fn verdict(&self, call: Call<'_>) -> Result<Verdict, EvaluationError> {
        let context = PolicyContext {
            id: self.id(),
            grants: self.grants.clone(),
            capabilities: self.engine.capabilities().clone(),
        };
        let evaluation = evaluate(&self.engine, &self.code, &context, &self.limits, call).await?;
        match evaluation.returned {
            Returned::Verdict(response) => Ok(Verdict {
                response,
                instantiation: evaluation.instantiation,
                total: evaluation.total,
            }),
            other => unreachable!("validate returned {other:?}"),
        }
    }
}

/// A component that imports the Kubernetes capability needs a grant; one
/// granted resources it cannot read (it does not import the capability) is
/// worth a warning. A Kubewarden module reaches every capability through the
/// one host call, so only its calls are checked.
fn check_grants(engine: &Engine, spec: &PolicySpec, code: &PolicyCode) -> Result<(), LoadFailure> {
    let PolicyCode::Component(component) = code else {
        return Ok(());
    };
    let interface = crate::component::ComponentInterface::of(engine, component.component());
    let import = interface
        .imports
        .iter()
        .find(|name| name.starts_with(crate::bindings::KUBERNETES_UNVERSIONED));
    match import {
        Some(import) if !spec.grants.reads_kubernetes() => Err(LoadFailure::NotGranted {
            import: import.clone(),
        }),
        None if !spec.grants.context_aware_resources.is_empty() => {
            tracing::warn!(
                policy = spec.id,
                "policy is granted contextAwareResources but does not import \
                 portcullis:policy/kubernetes: it cannot read them"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// State of one [`Environment::load`].
struct Loader<'a> {
    engine: &'a Engine,
    /// Engines for policies with a stack limit of their own, by stack size.
    engines: HashMap<usize, Engine>,
    cache: Option<&'a CompiledCache>,
    /// Digest and size of each file read so far.
    digests_by_path: HashMap<PathBuf, (Digest, usize)>,
    /// Components [`prefetch`](Self::prefetch) prepared, not yet asked for.
    prefetched: HashMap<(Digest, usize), PolicyCode>,
    /// Prepared policies by digest and the stack size of their engine.
    components: HashMap<(Digest, usize), (PolicyCode, Arc<PolicyMetadata>)>,
    stats: LoadStats,
}

impl Loader<'_> {
    /// Reads, hashes and prepares (compiles, or loads from the cache, and
    /// pre-links) every distinct component of `specs` at the same time, on
    /// the blocking pool: a start-up is then as long as its slowest
    /// component, not the sum of all of them.
    ///
    /// Purely an optimisation: whatever fails here is left for the
    /// sequential [`load`](Self::load), which does it again and reports the
    /// error against the first policy that uses the component, as before.
    async fn prefetch(&mut self, specs: &[PolicySpec]) {
        // A fetched module was hashed by the download store a moment ago.
        for spec in specs {
            if let Some(fetch) = &spec.fetch {
                let known = (fetch.digest, fetch.size);
                self.digests_by_path.insert(spec.module.clone(), known);
            }
        }
        let mut wanted: Vec<(PathBuf, Engine)> = Vec::new();
        for spec in specs {
            let Ok(limits) = self.engine.limits().with_overrides(&spec.limits) else {
                continue;
            };
            let Ok(engine) = self.engine_for(limits.stack_bytes) else {
                continue;
            };
            let stack = engine.limits().stack_bytes;
            if !wanted
                .iter()
                .any(|(path, e)| *path == spec.module && e.limits().stack_bytes == stack)
            {
                wanted.push((spec.module.clone(), engine));
            }
        }

        let mut tasks = tokio::task::JoinSet::new();
        let mut paths: Vec<&PathBuf> = Vec::new();
        for (path, _) in &wanted {
            if !paths.contains(&path) && !self.digests_by_path.contains_key(path) {
                paths.push(path);
                let path = path.clone();
                tasks.spawn_blocking(move || {
                    let (digest, size) = Digest::of_file(&path).ok()?;
                    Some((path, digest, size))
                });
            }
        }
        while let Some(result) = tasks.join_next().await {
            if let Ok(Some((path, digest, size))) = result {
                self.digests_by_path.insert(path, (digest, size));
            }
        }

        let mut tasks = tokio::task::JoinSet::new();
        let mut keys = Vec::new();
        for (path, engine) in wanted {
            let Some(&(digest, size)) = self.digests_by_path.get(&path) else {
                continue;
            };
            let key = (digest, engine.limits().stack_bytes);
            if keys.contains(&key) {
                continue;
            }
            keys.push(key);
            let cache = self.cache.cloned();
            tasks.spawn_blocking(move || {
                let prepared =
                    PolicyCode::prepare_file(&engine, &path, digest, size, cache.as_ref());
                (key, prepared.ok())
            });
        }
        while let Some(result) = tasks.join_next().await {
            if let Ok((key, Some(component))) = result {
                self.prefetched.insert(key, component);
            }
        }
    }

    async fn load(&mut self, spec: &PolicySpec) -> Result<Policy, LoadFailure> {
        let limits = self
            .engine
            .limits()
            .with_overrides(&spec.limits)
            .map_err(LoadFailure::Limits)?;
        let engine = self.engine_for(limits.stack_bytes)?;
        let (code, metadata) = self.component(&spec.module, &engine).await?;
        check_grants(&engine, spec, &code)?;
        let settings_json = spec.settings.to_string();
        let call = Call::ValidateSettings {
            settings: &settings_json,
        };
        let grants = Arc::new(spec.grants.clone());
        let context = PolicyContext {
            id: &spec.id,
            grants: grants.clone(),
            capabilities: engine.capabilities().clone(),
        };
        let evaluation = evaluate(&engine, &code, &context, &limits, call)
            .await
            .map_err(|error| LoadFailure::Call {
                what: "validate-settings",
                error,
            })?;
        match evaluation.returned {
            Returned::Settings(Ok(())) => {}
            Returned::Settings(Err(message)) => return Err(LoadFailure::SettingsRejected(message)),
            other => unreachable!("validate-settings returned {other:?}"),
        }
        Ok(Policy {
            spec: spec.clone(),
            settings_json,
            limits,
            engine,
            code,
            metadata,
            grants,
        })
    }

    /// The engine whose wasm stack is `stack_bytes`: the shared one, or one
    /// made (once) for policies with a stack limit of their own.
    fn engine_for(&mut self, stack_bytes: usize) -> Result<Engine, LoadFailure> {
        if stack_bytes == self.engine.limits().stack_bytes {
            return Ok(self.engine.clone());
        }
        if let Some(engine) = self.engines.get(&stack_bytes) {
            return Ok(engine.clone());
        }
        let engine = self.engine.with_stack(stack_bytes).map_err(|e| {
            LoadFailure::Limits(format!(
                "cannot make an engine with a {stack_bytes}-byte stack: {e:#}"
            ))
        })?;
        self.engines.insert(stack_bytes, engine.clone());
        Ok(engine)
    }

    /// The component in `path` prepared for `engine`: read and hashed once
    /// per path, compiled and pre-linked once per digest and engine.
    async fn component(
        &mut self,
        path: &Path,
        engine: &Engine,
    ) -> Result<(PolicyCode, Arc<PolicyMetadata>), LoadFailure> {
        let (digest, size) = match self.digests_by_path.get(path) {
            Some(&known) => known,
            None => {
                let known =
                    Digest::of_file(path).map_err(|e| CodeError::from(ComponentError::Read(e)))?;
                self.digests_by_path.insert(path.to_owned(), known);
                known
            }
        };
        let key = (digest, engine.limits().stack_bytes);
        if !self.components.contains_key(&key) {
            let component = match self.prefetched.remove(&key) {
                Some(component) => component,
                None => PolicyCode::prepare_file(engine, path, digest, size, self.cache)?,
            };
            let prepared = self.describe(engine, path, component).await?;
            self.components.insert(key, prepared);
        }
        Ok(self.components[&key].clone())
    }

    /// Counts and logs a prepared component and reads its metadata.
    async fn describe(
        &mut self,
        engine: &Engine,
        path: &Path,
        component: PolicyCode,
    ) -> Result<(PolicyCode, Arc<PolicyMetadata>), LoadFailure> {
        let digest = component.digest();
        match component.origin() {
            CompileOrigin::Compiled => self.stats.compiled += 1,
            CompileOrigin::Cache => self.stats.from_cache += 1,
        }
        tracing::info!(
            %digest,
            path = %path.display(),
            size = component.size(),
            origin = ?component.origin(),
            ms = component.compile_time().as_millis() as u64,
            kind = component.kind().as_str(),
            "policy prepared"
        );
        let limits = engine.limits();
        let context = PolicyContext {
            id: "(metadata)",
            grants: Arc::default(),
            capabilities: engine.capabilities().clone(),
        };
        let evaluation = evaluate(engine, &component, &context, limits, Call::Metadata)
            .await
            .map_err(|error| LoadFailure::Call {
                what: "metadata",
                error,
            })?;
        let Returned::Metadata(metadata) = evaluation.returned else {
            unreachable!("metadata returned {:?}", evaluation.returned)
        };
        Ok((component, Arc::new(metadata)))
    }
}
