//! The evaluation environment: every configured policy, loaded once, backed
//! by one compiled and pre-linked policy (of whatever kind) per unique
//! digest.

mod loader;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bindings::{AdmissionRequest, PolicyMetadata, ValidationResponse};
use crate::cache::CompiledCache;
use crate::capabilities::Grants;
use crate::digest::Digest;
use crate::engine::Engine;
use crate::evaluation::{EvaluationError, evaluate};
use crate::group::Group;
use crate::limits::Limits;
use crate::policy::{Configuration, PolicySpec};

use self::loader::{Loader, load_error};
use crate::runtime::{Call, CodeError, PolicyCode, PolicyContext, Returned};

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

    /// The code it runs (of whatever kind).
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
    /// Distinct code (by digest) behind them, of every kind — per engine,
    /// for the rare policy with a stack limit of its own; also the number of
    /// `InstancePre`s created.
    pub unique_code: usize,
    /// Code compiled here.
    pub compiled: usize,
    /// Code loaded from the compiled cache.
    pub from_cache: usize,
    /// Code a reload took, already prepared, from the environment it
    /// replaces.
    pub reused: usize,
}

/// Why a policy could not be loaded. Names the policy and its module.
#[derive(Debug, thiserror::Error)]
#[error("policy `{policy}` ({}): {reason}", module.display())]
pub struct LoadError {
    /// The policy's id.
    pub policy: String,
    /// Its module (the file of its code).
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
    /// Calling the policy at load time failed.
    #[error("{what} failed: {error}")]
    Call {
        /// Which call (`metadata`, `validate-settings`).
        what: &'static str,
        /// How it failed.
        error: EvaluationError,
    },
    /// A reload grants what a capability of the running server cannot serve
    /// (what it needs starts with the server); the capability says why.
    #[error("{0}")]
    NotServed(String),
    /// The code imports a host capability it has not been granted.
    #[error(
        "imports `{import}` but is granted no Kubernetes resource: list what it reads under \
         `contextAwareResources` in its policies.yml entry (or grant \
         `hostCapabilities: [kubernetes/can_i]` if it only asks can-i)"
    )]
    NotGranted {
        /// The import, e.g. `portcullis:policy/kubernetes@0.1.1`.
        import: String,
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

/// Every loaded policy and group, sharing the engine and the pre-linked
/// code.
pub struct Environment {
    engine: Engine,
    policies: BTreeMap<String, Arc<Policy>>,
    groups: BTreeMap<String, Arc<Group>>,
    /// Engines for policies with a stack limit of their own, by stack size:
    /// a reload reuses them with the code prepared for them.
    engines: HashMap<usize, Engine>,
    /// Every prepared policy by digest and engine stack size: what a reload
    /// reuses.
    prepared: HashMap<CodeKey, Prepared>,
    stats: LoadStats,
}

/// What a load may take from an environment loaded before.
#[derive(Default)]
struct Reuse {
    engines: HashMap<usize, Engine>,
    prepared: HashMap<CodeKey, Prepared>,
}

/// Prepared code is shared per digest and per engine (policies with a stack
/// limit of their own run on an engine of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CodeKey {
    digest: Digest,
    /// The engine's stack size: what tells engines apart.
    stack_bytes: usize,
}

impl CodeKey {
    /// The key of the code of `digest` prepared for `engine`.
    fn new(digest: Digest, engine: &Engine) -> Self {
        Self {
            digest,
            stack_bytes: engine.limits().stack_bytes,
        }
    }
}

/// A policy's code, compiled and pre-linked, and what it says about itself.
#[derive(Clone)]
struct Prepared {
    code: PolicyCode,
    metadata: Arc<PolicyMetadata>,
}

impl Environment {
    /// Loads `specs`: reads each module once, compiles (or loads from
    /// `cache`) and pre-links each unique digest once, reads each policy
    /// code's metadata, and validates every policy's settings through the
    /// policy.
    pub async fn load(
        engine: &Engine,
        specs: impl IntoIterator<Item = PolicySpec>,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, LoadError> {
        let specs: Vec<PolicySpec> = specs.into_iter().collect();
        Self::load_configuration(engine, specs.into(), cache).await
    }

    /// Loads a whole configuration, policies and groups, as
    /// [`load`](Self::load) does.
    pub async fn load_configuration(
        engine: &Engine,
        configuration: Configuration,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, LoadError> {
        Self::load_reusing(engine, configuration, cache, Reuse::default()).await
    }

    /// Loads `configuration` beside this environment, which keeps serving:
    /// every policy whose code (by digest) is already prepared here reuses
    /// it, so only new code is compiled; settings are validated again. The
    /// new environment shares nothing else with this one, and what only
    /// this one uses is freed with it.
    pub async fn reload(
        &self,
        configuration: Configuration,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, LoadError> {
        // The capabilities get ready for the new grants first (this
        // configuration serves meanwhile), and refuse what they cannot serve.
        let grants: Vec<&Grants> = configuration.specs().map(|spec| &spec.grants).collect();
        if let Err(unserved) = self.engine.capabilities().prepare(&grants).await {
            let spec = configuration
                .specs()
                .nth(unserved.policy)
                .expect("one grant per policy");
            return Err(load_error(spec, LoadFailure::NotServed(unserved.reason)));
        }
        let reuse = Reuse {
            engines: self.engines.clone(),
            prepared: self.prepared.clone(),
        };
        Self::load_reusing(&self.engine, configuration, cache, reuse).await
    }

    async fn load_reusing(
        engine: &Engine,
        configuration: Configuration,
        cache: Option<&CompiledCache>,
        reuse: Reuse,
    ) -> Result<Self, LoadError> {
        let mut loader = Loader {
            engine,
            engines: reuse.engines,
            cache,
            digests_by_path: HashMap::new(),
            prefetched: HashMap::new(),
            reusable: reuse.prepared,
            prepared: HashMap::new(),
            stats: LoadStats::default(),
        };
        let specs: Vec<&PolicySpec> = configuration.specs().collect();
        loader.prefetch(&specs).await;
        let mut policies = BTreeMap::new();
        for spec in &configuration.policies {
            if policies.contains_key(&spec.id) {
                return Err(load_error(spec, LoadFailure::DuplicateId));
            }
            let policy = loader.load(spec).await.map_err(|e| load_error(spec, e))?;
            policies.insert(spec.id.clone(), Arc::new(policy));
        }
        let mut groups = BTreeMap::new();
        for group in configuration.groups {
            if policies.contains_key(&group.id) || groups.contains_key(&group.id) {
                return Err(LoadError {
                    policy: group.id.clone(),
                    module: group
                        .members
                        .first()
                        .map(|m| m.spec.module.clone())
                        .unwrap_or_default(),
                    reason: LoadFailure::DuplicateId,
                });
            }
            let mut members = BTreeMap::new();
            for member in &group.members {
                let policy = loader
                    .load(&member.spec)
                    .await
                    .map_err(|e| load_error(&member.spec, e))?;
                members.insert(member.name.clone(), Arc::new(policy));
            }
            groups.insert(group.id.clone(), Arc::new(Group::new(group, members)));
        }
        let mut stats = loader.stats;
        stats.policies = policies.len() + groups.values().map(|g| g.members().len()).sum::<usize>();
        stats.unique_code = loader.prepared.len();
        tracing::info!(
            policies = stats.policies,
            groups = groups.len(),
            unique_code = stats.unique_code,
            compiled = stats.compiled,
            from_cache = stats.from_cache,
            reused = stats.reused,
            "policies loaded"
        );
        // An engine no policy uses any more (its pool reserves memory) is
        // not carried on to the next reload.
        let mut engines = loader.engines;
        engines.retain(|stack, _| loader.prepared.keys().any(|key| key.stack_bytes == *stack));
        Ok(Self {
            engine: engine.clone(),
            policies,
            groups,
            engines,
            prepared: loader.prepared,
            stats,
        })
    }

    /// The group with this id.
    pub fn group(&self, id: &str) -> Option<&Arc<Group>> {
        self.groups.get(id)
    }

    /// Every group, by id.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &Arc<Group>> {
        self.groups.values()
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
