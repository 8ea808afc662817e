//! `gator verify` suites: the test files Gatekeeper users keep beside
//! their templates (`kind: Suite`, `test.gatekeeper.sh/v1alpha1`), and
//! their assertions, judged as gator judges them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A suite: tests of templates and constraints on objects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suite {
    /// The tests.
    #[serde(default)]
    pub tests: Vec<Test>,
    /// Skips the whole suite.
    #[serde(default)]
    pub skip: bool,
}

/// One template with one constraint, and the cases run against them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Test {
    /// Its name, as reports show it.
    #[serde(default)]
    pub name: String,
    /// The template's file, relative to the suite.
    #[serde(default)]
    pub template: String,
    /// The constraint's file, relative to the suite.
    #[serde(default)]
    pub constraint: String,
    /// ExpansionTemplates (generated objects), which Portcullis does not run.
    #[serde(default)]
    pub expansion: String,
    /// The cases.
    #[serde(default)]
    pub cases: Vec<Case>,
    /// The constraint is expected to fail the template's schema.
    #[serde(default)]
    pub invalid: bool,
    /// Skips the test.
    #[serde(default)]
    pub skip: bool,
}

/// One object reviewed, with the objects of the cluster it sees, and what
/// must come of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The file of the object under review (or of an AdmissionReview).
    #[serde(default)]
    pub object: String,
    /// Files of objects put in `data.inventory` first.
    #[serde(default)]
    pub inventory: Vec<String>,
    /// What the violations must be.
    #[serde(default)]
    pub assertions: Vec<Assertion>,
    /// Skips the case.
    #[serde(default)]
    pub skip: bool,
}

/// How many violations (whose message matches `message`, if given) there
/// must be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assertion {
    /// `yes` (at least one, the default), `no` (none), or exactly N.
    #[serde(default)]
    pub violations: Option<Count>,
    /// A regular expression the counted violations' messages match.
    #[serde(default)]
    pub message: Option<String>,
}

/// `violations:` — a number or `yes` / `no` (kept as written, so a bad
/// word is reported as gator reports it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Count {
    /// Exactly this many.
    Exactly(i64),
    /// `yes` or `no` as YAML 1.1 reads them (booleans), as gator's reader
    /// takes them.
    Flag(bool),
    /// `yes` or `no` as text (quoted, or JSON).
    Word(String),
}

impl Suite {
    /// Reads the suite at `path`. Paths in it are relative to its folder
    /// ([`Suite::resolve`]).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads a suite from its YAML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Header {
            #[serde(default)]
            kind: String,
            #[serde(default)]
            api_version: String,
        }
        let header: Header = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if header.kind != "Suite" || !header.api_version.starts_with("test.gatekeeper.sh/") {
            return Err(format!(
                "not a gator suite: apiVersion `{}`, kind `{}` (want test.gatekeeper.sh/v1alpha1, Suite)",
                header.api_version, header.kind
            ));
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// `file`, named in the suite at `suite_path`, as a path.
    pub fn resolve(suite_path: &Path, file: &str) -> PathBuf {
        suite_path.parent().unwrap_or(Path::new(".")).join(file)
    }
}

impl Assertion {
    /// Judges the messages of every violation of a case, as gator does;
    /// the error says what was found and what was wanted.
    pub fn check(&self, messages: &[String]) -> Result<(), String> {
        let matching = match &self.message {
            Some(pattern) => {
                let regex = regex::Regex::new(pattern)
                    .map_err(|e| format!("invalid regex `{pattern}`: {e}"))?;
                messages
                    .iter()
                    .filter(|message| regex.is_match(message))
                    .count()
            }
            None => messages.len(),
        } as i64;
        let containing = self
            .message
            .as_ref()
            .map(|pattern| format!(" containing {pattern:?}"))
            .unwrap_or_default();
        let wrong = |want: String| {
            Err(format!(
                "got {matching} violations{containing} but want {want}: got messages {messages:?}"
            ))
        };
        let wanted = match &self.violations {
            None | Some(Count::Flag(true)) => Wanted::AtLeastOne,
            Some(Count::Flag(false)) => Wanted::None,
            Some(Count::Word(word)) if word == "yes" => Wanted::AtLeastOne,
            Some(Count::Word(word)) if word == "no" => Wanted::None,
            Some(Count::Exactly(count)) if *count >= 0 => Wanted::Exactly(*count),
            Some(Count::Word(_) | Count::Exactly(_)) => return Err(INVALID_COUNT.into()),
        };
        match wanted {
            Wanted::AtLeastOne if matching == 0 => wrong("at least 1".into()),
            Wanted::None if matching > 0 => wrong("none".into()),
            Wanted::Exactly(count) if count != matching => wrong(format!("exactly {count}")),
            _ => Ok(()),
        }
    }
}

/// What an assertion's `violations` asks for.
enum Wanted {
    AtLeastOne,
    None,
    Exactly(i64),
}

const INVALID_COUNT: &str =
    r#"assertion.violation, if set, must be a nonnegative integer, "yes", or "no""#;

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = r#"
kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
metadata:
  name: demo
tests:
- name: owner-label
  template: template.yaml
  constraint: samples/owner/constraint.yaml
  cases:
  - name: missing
    object: samples/owner/pod.yaml
    inventory: [samples/owner/namespace.yaml]
    assertions:
    - violations: 1
      message: owner
    - violations: no
      message: team
  - name: default-assertion
    object: samples/owner/ok.yaml
    assertions:
    - {}
"#;

    #[test]
    fn a_suite_reads_as_gator_writes_it() {
        let suite = Suite::parse(SUITE).unwrap();
        assert!(!suite.skip);
        let test = &suite.tests[0];
        assert_eq!(test.constraint, "samples/owner/constraint.yaml");
        assert_eq!(test.cases[0].inventory, ["samples/owner/namespace.yaml"]);
        assert_eq!(
            test.cases[0].assertions[0].violations,
            Some(Count::Exactly(1))
        );
        assert_eq!(
            test.cases[0].assertions[1].violations,
            Some(Count::Flag(false))
        );
        assert_eq!(
            test.cases[1].assertions[0],
            Assertion {
                violations: None,
                message: None
            }
        );
        assert_eq!(
            Suite::resolve(Path::new("lib/owner/suite.yaml"), &test.template),
            Path::new("lib/owner/template.yaml")
        );
        let error = Suite::parse("kind: Pod\napiVersion: v1\n").unwrap_err();
        assert!(error.starts_with("not a gator suite"), "{error}");
    }

    fn assertion(violations: Option<Count>, message: Option<&str>) -> Assertion {
        Assertion {
            violations,
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn counts_and_messages_are_judged_as_gator_judges_them() {
        // The templates' own messages, without the `[constraint]` prefix.
        let messages = ["owner is missing".to_owned(), "team is missing".to_owned()];
        assertion(None, None).check(&messages).unwrap();
        assertion(Some(Count::Exactly(2)), None)
            .check(&messages)
            .unwrap();
        assertion(Some(Count::Exactly(1)), Some("^owner"))
            .check(&messages)
            .unwrap();
        assertion(Some(Count::Word("no".into())), Some("image"))
            .check(&messages)
            .unwrap();
        assertion(Some(Count::Word("no".into())), None)
            .check(&[])
            .unwrap();
        assertion(Some(Count::Flag(false)), None)
            .check(&[])
            .unwrap();
        assert!(assertion(Some(Count::Flag(true)), None).check(&[]).is_err());
        let error = assertion(Some(Count::Exactly(1)), None)
            .check(&messages)
            .unwrap_err();
        assert!(
            error.starts_with("got 2 violations but want exactly 1"),
            "{error}"
        );
        let error = assertion(None, Some("image")).check(&messages).unwrap_err();
        assert!(
            error.starts_with("got 0 violations containing \"image\" but want at least 1"),
            "{error}"
        );
        let error = assertion(Some(Count::Word("no".into())), Some("team"))
            .check(&messages)
            .unwrap_err();
        assert!(
            error.starts_with("got 1 violations containing \"team\" but want none"),
            "{error}"
        );
        let error = assertion(Some(Count::Word("maybe".into())), None)
            .check(&messages)
            .unwrap_err();
        assert!(error.contains("must be a nonnegative integer"), "{error}");
        let error = assertion(Some(Count::Exactly(-1)), None)
            .check(&messages)
            .unwrap_err();
        assert!(error.contains("must be a nonnegative integer"), "{error}");
        let error = assertion(None, Some("(")).check(&messages).unwrap_err();
        assert!(error.starts_with("invalid regex `(`"), "{error}");
    }
}
