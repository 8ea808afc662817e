//! A loaded group and its evaluation: the expression decides which members
//! run, each in a fresh instance as any policy, one after another.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{Expression, Step};
use crate::bindings::{AdmissionRequest, Rule};
use crate::environment::{Policy, Verdict};
use crate::evaluation::EvaluationError;
use crate::policy::{GroupSpec, PolicyMode};

/// Kubewarden's words for a member that returned a patch.
pub const MUTATION_NOT_ALLOWED: &str = "mutation is not allowed inside a policy group";

/// A group ready to evaluate requests: its members are loaded policies.
#[derive(Debug)]
pub struct Group {
    id: String,
    mode: PolicyMode,
    expression: Expression,
    message: String,
    /// By member name.
    members: BTreeMap<String, Arc<Policy>>,
    background_audit: bool,
}

/// What a group is asked to evaluate.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An admission request (`/validate`, `/audit`).
    Request(&'a AdmissionRequest),
    /// A raw JSON document (`/validate_raw`).
    Raw(&'a str),
}

/// How one member's evaluation ended.
#[derive(Debug)]
pub struct MemberRun {
    /// The member's name in the expression.
    pub name: String,
    /// Its verdict, or why it gave none.
    pub result: Result<Verdict, EvaluationError>,
}

impl MemberRun {
    /// Whether the member accepted: admitted, without a patch (a member may
    /// not mutate).
    pub fn accepted(&self) -> bool {
        matches!(&self.result, Ok(v) if v.response.allowed && v.response.mutated_object.is_none())
    }

    /// Why it did not accept (`None` when it did, or gave no verdict).
    pub fn rejection(&self) -> Option<String> {
        let verdict = self.result.as_ref().ok()?;
        if verdict.response.mutated_object.is_some() {
            return Some(MUTATION_NOT_ALLOWED.to_owned());
        }
        (!verdict.response.allowed).then(|| {
            verdict
                .response
                .message
                .clone()
                .unwrap_or_else(|| "rejected".to_owned())
        })
    }
}

/// A group's verdict and the members that ran to reach it, in order.
#[derive(Debug)]
pub struct GroupVerdict {
    /// The expression's value; `None` when a member the value depended on
    /// gave no verdict (the last of `runs`): then the group fails, closed.
    pub allowed: Option<bool>,
    /// The members that ran.
    pub runs: Vec<MemberRun>,
    /// Time spent in all of them.
    pub total: Duration,
}

impl Group {
    /// The group of `spec`, with its members loaded (by name).
    pub fn new(spec: GroupSpec, members: BTreeMap<String, Arc<Policy>>) -> Self {
        Self {
            id: spec.id,
            mode: spec.mode,
            expression: spec.expression,
            message: spec.message,
            members,
            background_audit: spec.background_audit,
        }
    }

    /// Whether `portcullis audit` evaluates existing objects with it.
    pub fn background_audit(&self) -> bool {
        self.background_audit
    }

    /// The admission rules it covers: every member's, each once.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = Vec::new();
        // The generated binding types compare by their Debug form only.
        let mut seen: Vec<String> = Vec::new();
        for member in self.members.values() {
            for rule in &member.metadata().rules {
                let key = format!("{rule:?}");
                if !seen.contains(&key) {
                    seen.push(key);
                    rules.push(rule.clone());
                }
            }
        }
        rules
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether rejections are enforced.
    pub fn mode(&self) -> PolicyMode {
        self.mode
    }

    /// The rejection message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The expression over the members.
    pub fn expression(&self) -> &Expression {
        &self.expression
    }

    /// The members by name.
    pub fn members(&self) -> &BTreeMap<String, Arc<Policy>> {
        &self.members
    }

    /// The longest an evaluation may take: every member running to its
    /// deadline, one after another.
    pub fn timeout(&self) -> Duration {
        self.members.values().map(|m| m.timeout()).sum()
    }

    /// Evaluates `input`: runs the members the expression needs, in its
    /// order, each at most once, and stops at the first that gives no
    /// verdict.
    pub async fn evaluate(&self, input: Input<'_>) -> GroupVerdict {
        let mut known: HashMap<String, bool> = HashMap::new();
        let mut runs = Vec::new();
        let mut total = Duration::ZERO;
        loop {
            let name = match self.expression.next(&known) {
                Step::Decided(allowed) => {
                    return GroupVerdict {
                        allowed: Some(allowed),
                        runs,
                        total,
                    };
                }
                Step::Run(name) => name,
            };
            let member = &self.members[name];
            let result = match input {
                Input::Request(request) => member.validate(request).await,
                Input::Raw(document) => member.validate_raw(document).await,
            };
            if let Ok(verdict) = &result {
                total += verdict.total;
            }
            let run = MemberRun {
                name: name.to_owned(),
                result,
            };
            let failed = run.result.is_err();
            known.insert(run.name.clone(), run.accepted());
            runs.push(run);
            if failed {
                return GroupVerdict {
                    allowed: None,
                    runs,
                    total,
                };
            }
        }
    }
}
