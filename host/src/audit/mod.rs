//! The background audit: the objects already in the cluster, each evaluated
//! by the policies whose rules cover it, as if it were being created now.
//!
//! A run reads in one sentence: [`scope`] (which resources each policy and
//! group covers, from its rules and the API server's discovery) → listing,
//! page by page → [`request`] (each object as a simulated `CREATE`) → the
//! same [`Environment`] `serve` uses, with `/audit` semantics (nothing is
//! mutated; monitor and protect both report) → [`report`] (one
//! PolicyReport per namespace, one ClusterPolicyReport, replacing the last
//! run's).

pub mod report;
pub mod request;
pub mod scope;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use tokio::task::JoinSet;

use self::request::{ObjectRef, simulated_create};
use self::scope::Target;
use crate::bindings::{AdmissionRequest, Rule};
use crate::enforcement::{Decision, Outcome, Purpose, decide, decide_group};
use crate::environment::{Environment, Policy};
use crate::group::{Group, Input};
use crate::policy::PolicyMode;

/// A policy or a group, as the audit runs it.
pub enum Auditor {
    /// A policy.
    Policy(Arc<Policy>),
    /// A group of policies with one verdict.
    Group(Arc<Group>),
}

/// Why a policy or group is left out of the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exclusion {
    /// `backgroundAudit: false` in policies.yml.
    OptedOut,
    /// The Kubewarden module's metadata says `backgroundAudit: false`.
    ModuleOptedOut,
    /// No rule matches a `CREATE`, the only operation the audit simulates.
    NoCreateRule,
}

impl Exclusion {
    /// Why, for people.
    pub fn reason(self) -> &'static str {
        match self {
            Self::OptedOut => "backgroundAudit: false in the policies file",
            Self::ModuleOptedOut => "its module's metadata says backgroundAudit: false",
            Self::NoCreateRule => "no rule covers CREATE",
        }
    }
}

impl Auditor {
    /// Every policy and group of `environment`, by id.
    pub fn every(environment: &Environment) -> Vec<Arc<Auditor>> {
        let policies = environment
            .policies()
            .map(|p| Auditor::Policy(Arc::clone(p)));
        let groups = environment.groups().map(|g| Auditor::Group(Arc::clone(g)));
        let mut auditors: Vec<Arc<Auditor>> = policies.chain(groups).map(Arc::new).collect();
        auditors.sort_by(|a, b| a.id().cmp(b.id()));
        auditors
    }

    /// Its id in policies.yml.
    pub fn id(&self) -> &str {
        match self {
            Self::Policy(policy) => policy.id(),
            Self::Group(group) => group.id(),
        }
    }

    /// Its mode (a result in monitor mode is reported all the same).
    pub fn mode(&self) -> PolicyMode {
        match self {
            Self::Policy(policy) => policy.spec().mode,
            Self::Group(group) => group.mode(),
        }
    }

    /// The admission rules it covers.
    pub fn rules(&self) -> Vec<Rule> {
        match self {
            Self::Policy(policy) => policy.metadata().rules.clone(),
            Self::Group(group) => group.rules(),
        }
    }

    /// Why the audit leaves it out, if it does.
    pub fn exclusion(&self) -> Option<Exclusion> {
        let opted_in = match self {
            Self::Policy(policy) => policy.spec().background_audit,
            Self::Group(group) => group.background_audit(),
        };
        if !opted_in {
            return Some(Exclusion::OptedOut);
        }
        let module_opted_out = |policy: &Policy| !policy.code().runtime().background_audit();
        let module_opts_out = match self {
            Self::Policy(policy) => module_opted_out(policy),
            Self::Group(group) => group.members().values().any(|m| module_opted_out(m)),
        };
        if module_opts_out {
            return Some(Exclusion::ModuleOptedOut);
        }
        let creates = self.rules().iter().any(scope::covers_create);
        (!creates).then_some(Exclusion::NoCreateRule)
    }

    /// A Kubewarden module's `io.kubewarden.policy.<key>` annotation (the
    /// catalog's severity and category).
    fn annotation(&self, key: &str) -> Option<String> {
        let Self::Policy(policy) = self else {
            return None;
        };
        policy
            .code()
            .runtime()
            .annotation(&format!("io.kubewarden.policy.{key}"))
            .map(str::to_owned)
    }

    /// Evaluates `request` with `/audit` semantics.
    pub async fn evaluate(&self, request: &AdmissionRequest) -> Finding {
        let decision = match self {
            Self::Policy(policy) => {
                let result = policy.validate(request).await.map(|v| v.response);
                decide(
                    policy,
                    &request.uid,
                    request.object.as_deref(),
                    result,
                    Purpose::Audit,
                )
            }
            Self::Group(group) => {
                let verdict = group.evaluate(Input::Request(request)).await;
                let mut decision = decide_group(group, &request.uid, &verdict, Purpose::Audit);
                // A report has one message: the group's, then each cause.
                if let Some(status) = decision.response.status.as_mut() {
                    let causes: Vec<String> = status
                        .details
                        .iter()
                        .flat_map(|d| &d.causes)
                        .filter_map(|c| {
                            let member = c.field.as_deref()?.rsplit('.').next()?;
                            Some(format!("{member}: {}", c.message.as_deref()?))
                        })
                        .collect();
                    if !causes.is_empty() {
                        let message = status.message.take().unwrap_or_default();
                        status.message = Some(format!("{message} ({})", causes.join("; ")));
                    }
                }
                decision
            }
        };
        Finding::from(decision)
    }
}

/// How one object fared with one policy, as a PolicyReport says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    /// The policy would admit it (mutations are not applied, so a policy
    /// that would only mutate passes).
    Pass,
    /// The policy would reject it.
    Fail,
    /// The policy gave no verdict: it trapped, timed out, ran out of memory.
    Error,
}

impl ResultKind {
    /// The lower-case name reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Error => "error",
        }
    }
}

/// A verdict on one object.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Pass, fail or error.
    pub result: ResultKind,
    /// Why it failed or erred.
    pub message: Option<String>,
}

impl From<Decision> for Finding {
    fn from(decision: Decision) -> Self {
        let result = match decision.outcome {
            Outcome::Accepted | Outcome::Mutated => ResultKind::Pass,
            Outcome::Rejected => ResultKind::Fail,
            Outcome::Error => ResultKind::Error,
        };
        let message = match result {
            ResultKind::Pass => None,
            _ => decision.response.status.and_then(|s| s.message),
        };
        Self { result, message }
    }
}

/// One policy's verdict on one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditResult {
    /// The policy's (or group's) id.
    pub policy: String,
    /// Its mode.
    pub mode: PolicyMode,
    /// The object.
    pub object: ObjectRef,
    /// Pass, fail or error.
    pub result: ResultKind,
    /// Why it failed or erred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A Kubewarden module's severity annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// A Kubewarden module's category annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// When it was found, in seconds since the epoch.
    pub timestamp: i64,
}

/// What every result of one policy says about the policy.
struct Labels {
    mode: PolicyMode,
    severity: Option<String>,
    category: Option<String>,
}

impl Labels {
    fn of(auditor: &Auditor) -> Self {
        let mode = auditor.mode();
        Self {
            mode,
            severity: match mode {
                // Kubewarden's rule: nothing is enforced, so it is news only.
                PolicyMode::Monitor => Some("info".to_owned()),
                PolicyMode::Protect => auditor.annotation("severity"),
            },
            category: auditor.annotation("category"),
        }
    }
}

/// How a run is bounded and what it looks at.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Objects asked for per list call.
    pub page_size: u32,
    /// Evaluations at once.
    pub concurrency: usize,
    /// Only this namespace (cluster-scoped objects are then skipped).
    pub namespace: Option<String>,
    /// Namespaces whose objects are not audited.
    pub ignored_namespaces: Vec<String>,
}

/// Counts a terminal's progress line shows while a run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Objects evaluated so far.
    pub objects: AtomicU64,
    /// Evaluations finished.
    pub evaluations: AtomicU64,
    /// Of which failed.
    pub failed: AtomicU64,
    /// Of which gave no verdict.
    pub errors: AtomicU64,
    /// Resources listed completely.
    pub resources_done: AtomicU64,
    /// Resources to list.
    pub resources: AtomicU64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct AuditRun {
    /// Every verdict, sorted by object, then policy.
    pub results: Vec<AuditResult>,
    /// Objects evaluated.
    pub objects: u64,
    /// Resources listed.
    pub resources: usize,
    /// Policies and groups left out, and why.
    pub excluded: Vec<(String, Exclusion)>,
    /// Rules that name what this API server does not serve (a resource of
    /// another Kubernetes version, a CRD not installed): nothing to audit.
    pub unserved: Vec<String>,
    /// What could not be done: a list the audit may not make.
    pub problems: Vec<String>,
    /// How long listing and evaluating took.
    pub elapsed: Duration,
}

/// Audits every object the `auditors` cover.
pub async fn run(
    client: &Client,
    auditors: &[Arc<Auditor>],
    options: &AuditOptions,
    progress: &Progress,
) -> Result<AuditRun, kube::Error> {
    let started = Instant::now();
    let mut run = AuditRun::default();
    let audited: Vec<Arc<Auditor>> = auditors
        .iter()
        .filter(|auditor| match auditor.exclusion() {
            Some(exclusion) => {
                run.excluded.push((auditor.id().to_owned(), exclusion));
                false
            }
            None => true,
        })
        .cloned()
        .collect();
    let plan = scope::plan(client, &audited).await?;
    run.unserved = plan.unserved;
    let targets: Vec<Target> = plan
        .targets
        .into_iter()
        .filter(|t| t.namespaced || options.namespace.is_none())
        .collect();
    run.resources = targets.len();
    progress
        .resources
        .store(targets.len() as u64, Ordering::Relaxed);
    for target in &targets {
        if let Err(problem) = audit_target(client, target, options, progress, &mut run).await {
            run.problems.push(problem);
        }
        progress.resources_done.fetch_add(1, Ordering::Relaxed);
    }
    run.results.sort_by(|a, b| {
        (
            &a.object.namespace,
            &a.object.kind,
            &a.object.name,
            &a.policy,
        )
            .cmp(&(
                &b.object.namespace,
                &b.object.kind,
                &b.object.name,
                &b.policy,
            ))
    });
    run.elapsed = started.elapsed();
    Ok(run)
}

/// Lists `target` page by page and evaluates each page's objects, at most
/// `options.concurrency` evaluations at once.
async fn audit_target(
    client: &Client,
    target: &Target,
    options: &AuditOptions,
    progress: &Progress,
    run: &mut AuditRun,
) -> Result<(), String> {
    let api: Api<DynamicObject> = match (&options.namespace, target.namespaced) {
        (Some(namespace), true) => {
            Api::namespaced_with(client.clone(), namespace, &target.resource)
        }
        _ => Api::all_with(client.clone(), &target.resource),
    };
    let mut params = ListParams::default().limit(options.page_size.max(1));
    let mut evaluations: JoinSet<AuditResult> = JoinSet::new();
    // What each result says about its policy, the same for every object.
    let auditors: Vec<(Arc<Auditor>, Arc<Labels>)> = target
        .auditors
        .iter()
        .map(|auditor| (Arc::clone(auditor), Arc::new(Labels::of(auditor))))
        .collect();
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(error) => {
                // What was evaluated so far still counts.
                while let Some(done) = evaluations.join_next().await {
                    collect(Some(done), progress, run);
                }
                return Err(format!("cannot list {}: {error}", target.name()));
            }
        };
        for object in page.items {
            let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
            if options.ignored_namespaces.iter().any(|n| n == namespace) {
                continue;
            }
            let (request, object) = simulated_create(&target.resource, object);
            let request = Arc::new(request);
            run.objects += 1;
            progress.objects.fetch_add(1, Ordering::Relaxed);
            for (auditor, labels) in &auditors {
                while evaluations.len() >= options.concurrency.max(1) {
                    collect(evaluations.join_next().await, progress, run);
                }
                let auditor = Arc::clone(auditor);
                let labels = Arc::clone(labels);
                let request = Arc::clone(&request);
                let object = object.clone();
                evaluations.spawn(async move {
                    let finding = auditor.evaluate(&request).await;
                    AuditResult {
                        policy: auditor.id().to_owned(),
                        mode: labels.mode,
                        object,
                        result: finding.result,
                        message: finding.message,
                        severity: labels.severity.clone(),
                        category: labels.category.clone(),
                        timestamp: chrono::Utc::now().timestamp(),
                    }
                });
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    while let Some(done) = evaluations.join_next().await {
        collect(Some(done), progress, run);
    }
    Ok(())
}

fn collect(
    done: Option<Result<AuditResult, tokio::task::JoinError>>,
    progress: &Progress,
    run: &mut AuditRun,
) {
    match done {
        Some(Ok(result)) => {
            progress.evaluations.fetch_add(1, Ordering::Relaxed);
            match result.result {
                ResultKind::Pass => {}
                ResultKind::Fail => {
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
                ResultKind::Error => {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            run.results.push(result);
        }
        Some(Err(error)) => run
            .problems
            .push(format!("an evaluation task failed: {error}")),
        None => {}
    }
}
