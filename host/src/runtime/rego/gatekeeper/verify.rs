//! Running `gator verify` suites: each test's template and constraint
//! loaded as `serve` loads them, each case's object reviewed as `serve`
//! reviews a request, and the assertions judged on the violations.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::inventory::Inventory;
use super::policy::PreparedTemplate;
use super::review::Review;
use super::suite::{Case, Suite, Test};
use crate::cache::CompiledCache;
use crate::limits::Limits;
use crate::runtime::rego::RegoRuntime;

/// What running one suite file came to.
#[derive(Debug)]
pub struct SuiteResult {
    /// The suite's file.
    pub path: PathBuf,
    /// Why the suite could not run at all (unreadable, not a suite).
    pub error: Option<String>,
    /// Each test's result, in the suite's order.
    pub tests: Vec<TestResult>,
    /// How long it ran.
    pub runtime: Duration,
}

/// What running one test came to.
#[derive(Debug)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Skipped (`skip: true`).
    pub skipped: bool,
    /// Why the test failed before its cases (its template or constraint).
    pub error: Option<String>,
    /// Each case's result.
    pub cases: Vec<CaseResult>,
    /// How long it ran.
    pub runtime: Duration,
}

/// What running one case came to.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Skipped (`skip: true`).
    pub skipped: bool,
    /// Why it failed: the first assertion that does not hold, or the error.
    pub error: Option<String>,
    /// How long it ran.
    pub runtime: Duration,
}

impl SuiteResult {
    /// Whether anything in it failed.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.tests.iter().any(TestResult::failed)
    }
}

impl TestResult {
    /// Whether the test or one of its cases failed.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.cases.iter().any(|case| case.error.is_some())
    }
}

/// Runs suites with one Rego runtime, under one engine's limits.
pub struct Verifier<'a> {
    rego: &'a RegoRuntime,
    limits: &'a Limits,
    cache: Option<&'a CompiledCache>,
}

impl<'a> Verifier<'a> {
    /// A verifier preparing templates with `rego` (and `cache`), each
    /// review evaluated under `limits`.
    pub fn new(
        rego: &'a RegoRuntime,
        limits: &'a Limits,
        cache: Option<&'a CompiledCache>,
    ) -> Self {
        Self {
            rego,
            limits,
            cache,
        }
    }

    /// Runs the suite in the file at `path`.
    pub async fn run(&self, path: &Path) -> SuiteResult {
        let started = Instant::now();
        let mut result = SuiteResult {
            path: path.to_owned(),
            error: None,
            tests: Vec::new(),
            runtime: Duration::ZERO,
        };
        match Suite::read(path) {
            Err(error) => result.error = Some(error),
            Ok(suite) if suite.skip => {}
            Ok(suite) => {
                for test in &suite.tests {
                    result.tests.push(self.test(path, test).await);
                }
            }
        }
        result.runtime = started.elapsed();
        result
    }

    async fn test(&self, suite: &Path, test: &Test) -> TestResult {
        let started = Instant::now();
        let mut result = TestResult {
            name: test.name.clone(),
            skipped: test.skip,
            error: None,
            cases: Vec::new(),
            runtime: Duration::ZERO,
        };
        if !test.skip {
            match self.prepare(suite, test).await {
                Err(error) => result.error = Some(error),
                Ok(None) => {}
                Ok(Some((template, constraints))) => {
                    for case in &test.cases {
                        result
                            .cases
                            .push(self.case(suite, &template, &constraints, case).await);
                    }
                }
            }
        }
        result.runtime = started.elapsed();
        result
    }

    /// The test's template and constraint; `None` when the constraint is
    /// `invalid` as the test expects (no case runs then, as in gator).
    async fn prepare(
        &self,
        suite: &Path,
        test: &Test,
    ) -> Result<Option<(PreparedTemplate, Vec<super::Constraint>)>, String> {
        if !test.expansion.is_empty() {
            return Err("expansion templates (generated objects) are not supported".into());
        }
        if test.template.is_empty() {
            return Err("the test names no template".into());
        }
        let template_path = Suite::resolve(suite, &test.template);
        let template = PreparedTemplate::load(self.rego, &template_path, self.cache)
            .await
            .map_err(|e| e.to_string())?;
        if test.constraint.is_empty() {
            return Err("the test names no constraint".into());
        }
        let constraint_path = Suite::resolve(suite, &test.constraint);
        let documents = super::read_documents(&constraint_path)?;
        let constraints = template.constraints(&constraint_path.display().to_string(), documents);
        match (constraints, test.invalid) {
            (Ok(constraints), false) => Ok(Some((template, constraints))),
            (Err(_), true) => Ok(None),
            (Ok(_), true) => Err(format!(
                "the constraint {} is valid but the test expects it invalid",
                constraint_path.display()
            )),
            (Err(error), false) => Err(error),
        }
    }

    async fn case(
        &self,
        suite: &Path,
        template: &PreparedTemplate,
        constraints: &[super::Constraint],
        case: &Case,
    ) -> CaseResult {
        let started = Instant::now();
        let error = if case.skip {
            None
        } else {
            self.judge(suite, template, constraints, case).await.err()
        };
        CaseResult {
            name: case.name.clone(),
            skipped: case.skip,
            error,
            runtime: started.elapsed(),
        }
    }

    async fn judge(
        &self,
        suite: &Path,
        template: &PreparedTemplate,
        constraints: &[super::Constraint],
        case: &Case,
    ) -> Result<(), String> {
        let mut inventory = Inventory::default();
        for file in &case.inventory {
            for object in super::read_documents(&Suite::resolve(suite, file))? {
                inventory.add(object)?;
            }
        }
        if case.object.is_empty() {
            return Err("the case names no object".into());
        }
        let object_path = Suite::resolve(suite, &case.object);
        let mut documents = super::read_documents(&object_path)?;
        if documents.len() != 1 {
            return Err(format!(
                "{}: an object file holds one object, this one {}",
                object_path.display(),
                documents.len()
            ));
        }
        let review = Review::from_document(documents.remove(0))
            .map_err(|e| format!("{}: {e}", object_path.display()))?;
        let violations = template
            .review(self.limits, constraints, &review, &inventory)
            .await?;
        // gator judges the templates' own messages, without the
        // `[constraint]` prefix the admission response adds.
        let messages: Vec<String> = violations
            .into_iter()
            .map(|violation| violation.violation.msg)
            .collect();
        case.assertions
            .iter()
            .try_for_each(|assertion| assertion.check(&messages))
    }
}
