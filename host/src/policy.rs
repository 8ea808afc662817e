//! What an operator declares about one policy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::capabilities::Grants;
use crate::group::Expression;
use crate::limits::LimitOverrides;
use crate::source::{Fetch, Source};

/// How a policy's verdict is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Rejections are enforced.
    #[default]
    Protect,
    /// Every request is admitted; what the verdict would have been is logged
    /// and counted.
    Monitor,
}

impl PolicyMode {
    /// The lower-case name used in configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protect => "protect",
            Self::Monitor => "monitor",
        }
    }
}

/// One policy to load: an id, the code that implements it (a component or a
/// Kubewarden module), and how it is configured.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    /// The id requests address it by (`/validate/{id}`).
    pub id: String,
    /// The policy's file (a component or a Kubewarden module). For a module
    /// from a registry or URL, its copy in the download store, once
    /// [`Fetcher::fetch_policies`] ran (empty before).
    ///
    /// [`Fetcher::fetch_policies`]: crate::source::Fetcher::fetch_policies
    pub module: PathBuf,
    /// Where the module comes from, as the operator wrote it (`None`: the
    /// file `module`, given in code).
    pub source: Option<Source>,
    /// How the module was obtained, once fetched; shared by the policies
    /// that name the same module.
    pub fetch: Option<Arc<Fetch>>,
    /// The policy's settings, handed to it as JSON (`{}` when none).
    pub settings: serde_json::Value,
    /// Whether rejections are enforced.
    pub mode: PolicyMode,
    /// Whether the policy may change the object it admits.
    pub allowed_to_mutate: bool,
    /// Per-policy limits (timeout, memory, output); the engine's otherwise.
    pub limits: LimitOverrides,
    /// A rejection message that replaces the policy's own.
    pub message: Option<String>,
    /// The host capabilities and Kubernetes resources it may use
    /// (`hostCapabilities`, `contextAwareResources`); none by default.
    pub grants: Grants,
    /// Whether `portcullis audit` evaluates existing objects with it
    /// (`backgroundAudit`, default true).
    pub background_audit: bool,
}

impl PolicySpec {
    /// A protect-mode, non-mutating policy with empty settings.
    pub fn new(id: impl Into<String>, module: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            module: module.into(),
            source: None,
            fetch: None,
            settings: serde_json::Value::Object(Default::default()),
            mode: PolicyMode::default(),
            allowed_to_mutate: false,
            limits: LimitOverrides::default(),
            message: None,
            grants: Grants::default(),
            background_audit: true,
        }
    }

    /// The same spec with `settings`.
    pub fn with_settings(mut self, settings: serde_json::Value) -> Self {
        self.settings = settings;
        self
    }

    /// The same spec with `mode`.
    pub fn with_mode(mut self, mode: PolicyMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same spec with an evaluation timeout of its own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = Some(timeout);
        self
    }

    /// The same spec with `grants`.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }

    /// The same spec, allowed (or not) to mutate.
    pub fn allowed_to_mutate(mut self, allowed: bool) -> Self {
        self.allowed_to_mutate = allowed;
        self
    }
}

/// A policy group: members combined by a boolean expression into one
/// verdict, with one message (Kubewarden's policy groups).
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// The id requests address it by (`/validate/{id}`).
    pub id: String,
    /// Whether rejections are enforced.
    pub mode: PolicyMode,
    /// Which members must accept, e.g. `signed() || (trusted() && !latest())`.
    pub expression: Expression,
    /// The rejection's message; each rejecting member adds a cause.
    pub message: String,
    /// The members, by name.
    pub members: Vec<MemberSpec>,
    /// Whether `portcullis audit` evaluates existing objects with it
    /// (`backgroundAudit`, default true).
    pub background_audit: bool,
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// The name the expression calls it by (`name()`).
    pub name: String,
    /// The policy; its id is `group/name` (ids of policies never contain a
    /// `/`, so it is unique and no route reaches a member alone). A member
    /// never mutates.
    pub spec: PolicySpec,
}

impl MemberSpec {
    /// The id of a group's member: `group/name`.
    pub fn id(group: &str, name: &str) -> String {
        format!("{group}/{name}")
    }
}

/// Everything a `policies.yml` declares: policies and groups.
#[derive(Debug, Clone, Default)]
pub struct Configuration {
    /// The policies, in file order.
    pub policies: Vec<PolicySpec>,
    /// The groups, in file order.
    pub groups: Vec<GroupSpec>,
}

impl From<Vec<PolicySpec>> for Configuration {
    fn from(policies: Vec<PolicySpec>) -> Self {
        Self {
            policies,
            groups: Vec::new(),
        }
    }
}

impl Configuration {
    /// Every policy to load: the policies, then each group's members.
    pub fn specs(&self) -> impl Iterator<Item = &PolicySpec> {
        self.policies.iter().chain(
            self.groups
                .iter()
                .flat_map(|group| group.members.iter().map(|member| &member.spec)),
        )
    }

    /// The same, to change (to point each at its fetched module, say).
    pub fn specs_mut(&mut self) -> impl Iterator<Item = &mut PolicySpec> {
        self.policies.iter_mut().chain(
            self.groups
                .iter_mut()
                .flat_map(|group| group.members.iter_mut().map(|member| &mut member.spec)),
        )
    }
}
