//! One load of an environment: each distinct module read and hashed once,
//! each digest prepared (or taken from the environment a reload replaces)
//! once per engine, every policy's settings validated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CodeKey, LoadError, LoadFailure, LoadStats, Policy, Prepared};
use crate::cache::CompiledCache;
use crate::digest::Digest;
use crate::engine::Engine;
use crate::evaluation::evaluate;
use crate::policy::PolicySpec;
use crate::runtime::{Call, CodeError, CompileOrigin, PolicyCode, PolicyContext, Returned};

/// State of one [`Environment::load`].
pub(super) struct Loader<'a> {
    pub(super) engine: &'a Engine,
    /// Engines for policies with a stack limit of their own, by stack size.
    pub(super) engines: HashMap<usize, Engine>,
    pub(super) cache: Option<&'a CompiledCache>,
    /// Digest and size of each file read so far.
    pub(super) digests_by_path: HashMap<PathBuf, (Digest, usize)>,
    /// Code [`prefetch`](Self::prefetch) prepared, not yet asked for.
    pub(super) prefetched: HashMap<CodeKey, PolicyCode>,
    /// Code the environment this load replaces prepared.
    pub(super) reusable: HashMap<CodeKey, Prepared>,
    /// Prepared code by digest and the stack size of its engine.
    pub(super) prepared: HashMap<CodeKey, Prepared>,
    pub(super) stats: LoadStats,
}

pub(super) fn load_error(spec: &PolicySpec, reason: LoadFailure) -> LoadError {
    LoadError {
        policy: spec.id.clone(),
        module: spec.module.clone(),
        reason,
    }
}

impl Loader<'_> {
    /// Reads, hashes and prepares (compiles, or loads from the cache, and
    /// pre-links) every distinct module of `specs` at the same time, on
    /// the blocking pool: a start-up is then as long as its slowest
    /// module, not the sum of all of them.
    ///
    /// Purely an optimisation: whatever fails here is left for the
    /// sequential [`load`](Self::load), which does it again and reports the
    /// error against the first policy that uses the module, as before.
    pub(super) async fn prefetch(&mut self, specs: &[&PolicySpec]) {
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
            let key = CodeKey::new(digest, &engine);
            if keys.contains(&key) || self.reusable.contains_key(&key) {
                continue;
            }
            keys.push(key);
            let cache = self.cache.cloned();
            let runtime = tokio::runtime::Handle::current();
            tasks.spawn_blocking(move || {
                let prepared =
                    runtime.block_on(engine.prepare_file(&path, digest, size, cache.as_ref()));
                (key, prepared.ok())
            });
        }
        while let Some(result) = tasks.join_next().await {
            if let Ok((key, Some(code))) = result {
                self.prefetched.insert(key, code);
            }
        }
    }

    pub(super) async fn load(&mut self, spec: &PolicySpec) -> Result<Policy, LoadFailure> {
        let limits = self
            .engine
            .limits()
            .with_overrides(&spec.limits)
            .map_err(LoadFailure::Limits)?;
        let engine = self.engine_for(limits.stack_bytes)?;
        let Prepared { code, metadata } = self.code(&spec.module, &engine).await?;
        // Imports by name are checked once, here; host calls at each call.
        code.runtime()
            .check_grants(&spec.id, &spec.grants)
            .map_err(|import| LoadFailure::NotGranted { import })?;
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

    /// The code in the module at `path` prepared for `engine`: read and
    /// hashed once per path, compiled and pre-linked once per digest and
    /// engine.
    async fn code(&mut self, path: &Path, engine: &Engine) -> Result<Prepared, LoadFailure> {
        let (digest, size) = match self.digests_by_path.get(path) {
            Some(&known) => known,
            None => {
                let known = Digest::of_file(path).map_err(CodeError::Read)?;
                self.digests_by_path.insert(path.to_owned(), known);
                known
            }
        };
        let key = CodeKey::new(digest, engine);
        if !self.prepared.contains_key(&key) {
            if let Some(prepared) = self.reusable.remove(&key) {
                self.stats.reused += 1;
                self.prepared.insert(key, prepared.clone());
                return Ok(prepared);
            }
            let code = match self.prefetched.remove(&key) {
                Some(code) => code,
                None => engine.prepare_file(path, digest, size, self.cache).await?,
            };
            let prepared = self.describe(engine, path, code).await?;
            self.prepared.insert(key, prepared);
        }
        Ok(self.prepared[&key].clone())
    }

    /// Counts and logs prepared code and reads its metadata.
    async fn describe(
        &mut self,
        engine: &Engine,
        path: &Path,
        code: PolicyCode,
    ) -> Result<Prepared, LoadFailure> {
        let facts = code.facts();
        match facts.origin {
            CompileOrigin::Compiled => self.stats.compiled += 1,
            CompileOrigin::Cache => self.stats.from_cache += 1,
        }
        tracing::info!(
            digest = %facts.digest,
            path = %path.display(),
            size = facts.size,
            origin = ?facts.origin,
            ms = facts.compile_time.as_millis() as u64,
            kind = code.kind(),
            "policy prepared"
        );
        let limits = engine.limits();
        let context = PolicyContext {
            id: "(metadata)",
            grants: Arc::default(),
            capabilities: engine.capabilities().clone(),
        };
        let evaluation = evaluate(engine, &code, &context, limits, Call::Metadata)
            .await
            .map_err(|error| LoadFailure::Call {
                what: "metadata",
                error,
            })?;
        let Returned::Metadata(metadata) = evaluation.returned else {
            unreachable!("metadata returned {:?}", evaluation.returned)
        };
        Ok(Prepared {
            code,
            metadata: Arc::new(metadata),
        })
    }
}
