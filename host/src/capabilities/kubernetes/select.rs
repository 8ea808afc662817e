//! Choosing and trimming objects on the host's side: label selectors and
//! field selectors (evaluated on the cache, as Kubernetes does on the API
//! server), and field masks (what of an object reaches the policy).

use serde_json::{Map, Value};

/// A parsed Kubernetes label selector (`app=web,tier!=db,env in (a,b),!x`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    /// Parses `text`; empty selects everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(
                LabelRequirement::parse(term).ok_or_else(|| {
                    format!("invalid label selector `{text}`: cannot read `{term}`")
                })?,
            );
        }
        Ok(Self(requirements))
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        // Not `Value::pointer`: it allocates per segment, and this runs
        // once per object of a list.
        let labels = object
            .get("metadata")
            .and_then(|metadata| metadata.get("labels"))
            .and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

impl LabelRequirement {
    fn parse(term: &str) -> Option<Self> {
        if let Some(key) = term.strip_prefix('!') {
            return valid_key(key.trim()).map(|k| Self::DoesNotExist(k.to_owned()));
        }
        for (operator, negated) in [(" notin ", true), (" in ", false)] {
            if let Some((key, values)) = term.split_once(operator) {
                let values = values.trim().strip_prefix('(')?.strip_suffix(')')?;
                let values = values.split(',').map(|v| v.trim().to_owned()).collect();
                let key = valid_key(key.trim())?.to_owned();
                return Some(if negated {
                    Self::NotIn(key, values)
                } else {
                    Self::In(key, values)
                });
            }
        }
        if let Some((key, value)) = term.split_once("!=") {
            return Some(Self::NotEquals(
                valid_key(key.trim())?.to_owned(),
                value.trim().to_owned(),
            ));
        }
        if let Some((key, value)) = term.split_once('=') {
            let value = value.strip_prefix('=').unwrap_or(value);
            return Some(Self::Equals(
                valid_key(key.trim())?.to_owned(),
                value.trim().to_owned(),
            ));
        }
        valid_key(term).map(|k| Self::Exists(k.to_owned()))
    }
}

fn valid_key(key: &str) -> Option<&str> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then_some(key)
}

/// Splits at commas outside parentheses (`a in (x,y),b`).
fn split_terms(text: &str) -> Vec<&str> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// A parsed field selector: `path=value`, `path==value` or `path!=value`
/// terms, comma-separated, every one of which must hold.
///
/// Kubernetes' API server supports a few paths per kind; the host evaluates
/// selectors on its cache, so any dotted path works, and a path that goes
/// through a list holds for `=` if any element matches (and for `!=` if
/// none does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    /// Parses `text`; empty selects everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((path, value)) = term.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) = term.split_once('=') {
                (path, true, value.strip_prefix('=').unwrap_or(value))
            } else {
                return Err(format!(
                    "invalid field selector `{text}`: `{term}` is not `path=value` or `path!=value`"
                ));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!(
                    "invalid field selector `{text}`: empty segment in `{term}`"
                ));
            }
            terms.push((path, equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether `object` satisfies every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.0
            .iter()
            .all(|(path, equal, value)| any_equals(object, path, value) == *equal)
    }

    /// The first `path=value` term: what an index can answer.
    pub fn first_equality(&self) -> Option<(&[String], &str)> {
        self.0
            .iter()
            .find(|(_, equal, _)| *equal)
            .map(|(path, _, value)| (path.as_slice(), value.as_str()))
    }
}

/// Every value at `path` in `value` (through lists, each element) as a
/// field selector compares it: what [`FieldSelector::matches`] would find
/// equal to each of them.
pub fn values_at(value: &Value, path: &[String], out: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| values_at(item, path, out)),
        _ => match path.split_first() {
            None => match value {
                Value::String(text) => out.push(text.clone()),
                Value::Null => out.push(String::new()),
                Value::Object(_) | Value::Array(_) => {}
                Value::Bool(flag) => out.push(flag.to_string()),
                Value::Number(number) => out.push(number.to_string()),
            },
            Some((key, rest)) => {
                if let Some(inner) = value.get(key.as_str()) {
                    values_at(inner, rest, out);
                }
            }
        },
    }
}

/// Whether a value at `path` in `value` (through lists, any element)
/// equals `expected`, compared as text (so `spec.replicas=3` works).
fn any_equals(value: &Value, path: &[String], expected: &str) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| any_equals(item, path, expected)),
        _ => match path.split_first() {
            None => match value {
                Value::String(text) => text == expected,
                Value::Null => expected.is_empty(),
                Value::Object(_) | Value::Array(_) => false,
                Value::Bool(flag) => flag.to_string() == expected,
                Value::Number(number) => number.to_string() == expected,
            },
            Some((key, rest)) => value
                .get(key.as_str())
                .is_some_and(|inner| any_equals(inner, rest, expected)),
        },
    }
}

/// Field masks: the dotted paths of the fields to keep.
///
/// `metadata.name` keeps the name; `spec.rules.host` keeps `host` in every
/// element of the `rules` list; a path naming an object keeps all of it.
/// Everything else is dropped. No masks keep the whole object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMasks(Option<MaskTree>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MaskTree(std::collections::BTreeMap<String, Option<MaskTree>>);

impl FieldMasks {
    /// The masks `paths`; an empty list keeps everything.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<Self, String> {
        if paths.is_empty() {
            return Ok(Self(None));
        }
        let mut tree = MaskTree::default();
        for path in paths {
            let path = path.as_ref();
            let segments: Vec<&str> = path.split('.').collect();
            if segments.iter().any(|s| s.is_empty()) {
                return Err(format!("invalid field mask `{path}`: empty segment"));
            }
            tree.insert(&segments);
        }
        Ok(Self(Some(tree)))
    }

    /// Whether these masks keep everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// `object` with only the masked fields; always keeps `apiVersion` and
    /// `kind`, so the answer stays a typed object.
    pub fn apply(&self, object: &Value) -> Value {
        let Some(tree) = &self.0 else {
            return object.clone();
        };
        let mut masked = tree.apply(object);
        if let (Value::Object(masked), Value::Object(original)) = (&mut masked, object) {
            for key in ["apiVersion", "kind"] {
                if let Some(value) = original.get(key) {
                    masked.insert(key.to_owned(), value.clone());
                }
            }
        }
        masked
    }
}

impl MaskTree {
    fn insert(&mut self, segments: &[&str]) {
        let Some((first, rest)) = segments.split_first() else {
            return;
        };
        let entry = self
            .0
            .entry((*first).to_owned())
            .or_insert_with(|| Some(MaskTree::default()));
        match entry {
            // Already kept whole.
            None => {}
            Some(_) if rest.is_empty() => *entry = None,
            Some(child) => child.insert(rest),
        }
    }

    fn apply(&self, value: &Value) -> Value {
        match value {
            Value::Object(fields) => {
                let mut kept = Map::new();
                for (key, child) in &self.0 {
                    if let Some(inner) = fields.get(key) {
                        let inner = match child {
                            None => inner.clone(),
                            Some(child) => child.apply(inner),
                        };
                        kept.insert(key.clone(), inner);
                    }
                }
                Value::Object(kept)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| self.apply(i)).collect()),
            // A mask that goes deeper than the value: the value, as it is.
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn label_selectors_match_as_kubernetes_does() {
        let object = labelled(json!({"app": "web", "tier": "front"}));
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("env notin (prod)", true),
            ("app", true),
            ("!app", false),
            ("!env", true),
        ] {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&object), expected, "{selector}");
        }
        assert!(LabelSelector::parse("app in x").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors_reach_any_path_and_into_lists() {
        let ingress = json!({
            "metadata": {"name": "a", "namespace": "web"},
            "spec": {"rules": [{"host": "a.example"}, {"host": "b.example"}], "replicas": 3}
        });
        for (selector, expected) in [
            ("metadata.name=a", true),
            ("metadata.name==a,metadata.namespace=web", true),
            ("metadata.namespace!=web", false),
            ("spec.rules.host=b.example", true),
            ("spec.rules.host=c.example", false),
            ("spec.rules.host!=c.example", true),
            ("spec.replicas=3", true),
            ("spec.missing=", false),
        ] {
            let parsed = FieldSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&ingress), expected, "{selector}");
        }
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("metadata..name=x").is_err());
    }

    #[test]
    fn masks_keep_only_the_named_fields() {
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "a", "namespace": "web", "annotations": {"big": "x"}},
            "spec": {"rules": [{"host": "a.example", "http": {"paths": []}}], "tls": []}
        });
        let masks = FieldMasks::new(&["metadata.name", "spec.rules.host"]).unwrap();
        assert_eq!(
            masks.apply(&ingress),
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "a"},
                "spec": {"rules": [{"host": "a.example"}]}
            })
        );
        // A shorter path wins over a longer one, in either order.
        let whole = FieldMasks::new(&["metadata.name", "metadata"]).unwrap();
        assert_eq!(whole.apply(&ingress)["metadata"], ingress["metadata"]);
        assert!(FieldMasks::new::<&str>(&[]).unwrap().is_empty());
        assert!(FieldMasks::new(&["spec..x"]).is_err());
    }
}
