//! JSON documents kept as text and parsed on demand.
//!
//! The host hands a policy the request's objects as JSON text. Parsing that
//! text into a [`serde_json::Value`] tree allocates a node per field, which is
//! most of the work of a typical policy; parsing it straight into the typed
//! model the policy needs (or only the part it looks at) does not.
//! [`RawJson`] therefore keeps the text, checked to be valid JSON, and parses
//! on demand: [`RawJson::parse`] into any `Deserialize` type,
//! [`RawJson::fields`] to pick a few members of an object without building
//! the rest.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON document, kept as its (valid) text.
///
/// "Valid" is as strict as parsing into a [`Value`]: numbers must fit an
/// `f64`, `\u` escapes must be Unicode text, nesting is limited to 128
/// levels. Two documents are equal when they hold the same JSON value,
/// whatever their spacing or member order.
#[derive(Clone)]
pub struct RawJson(Box<str>);

impl RawJson {
    /// Checks that `text` is one valid JSON document and keeps it (without
    /// copying when it has no surrounding whitespace).
    pub fn from_string(text: String) -> serde_json::Result<Self> {
        // The check parses every number and string but stores nothing. It is
        // the only pass over the text: a `RawValue` would validate it again
        // (a whole second scan of the object for every evaluation).
        serde_json::from_str::<Checked>(&text)?;
        let document = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        if document.len() == text.len() {
            Ok(RawJson(text.into_boxed_str()))
        } else {
            Ok(RawJson(document.into()))
        }
    }

    /// The document of `value`.
    pub fn from_value(value: &Value) -> Self {
        // A `Value` always serializes, and always to one valid document.
        RawJson(value.to_string().into_boxed_str())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the document into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.as_str())
    }

    /// The document as a [`Value`] tree (allocates a node per element).
    pub fn to_value(&self) -> Value {
        // The text was checked when the document was made.
        self.parse().expect("a RawJson holds valid JSON")
    }

    /// Whether the document is `null`.
    pub fn is_null(&self) -> bool {
        self.as_str() == "null"
    }

    /// How an error message names the document's JSON type ("a string", ...);
    /// the same words as [`k8s::json_type`](crate::k8s::json_type).
    pub fn json_type(&self) -> &'static str {
        json_type_of(&self.0)
    }

    /// The members `keys` of an object document, in the order asked, each
    /// `None` when absent or `null`; the rest of the object is skipped, not
    /// built. When a key occurs twice, the last occurrence wins (as in a
    /// [`Value`]).
    ///
    /// Fails with the document's JSON type ("an array", ...) when it is not
    /// an object.
    pub fn fields<const N: usize>(
        &self,
        keys: [&str; N],
    ) -> Result<[Option<&RawValue>; N], &'static str> {
        fields_of(&self.0, keys)
    }
}

/// Like [`RawJson::fields`], for a member found by an earlier call.
pub fn fields<'a, const N: usize>(
    document: &'a RawValue,
    keys: [&str; N],
) -> Result<[Option<&'a RawValue>; N], &'static str> {
    fields_of(document.get(), keys)
}

fn fields_of<'a, const N: usize>(
    document: &'a str,
    keys: [&str; N],
) -> Result<[Option<&'a RawValue>; N], &'static str> {
    let mut deserializer = serde_json::Deserializer::from_str(document);
    match deserializer.deserialize_any(FieldsVisitor { keys }) {
        Ok(found) => Ok(found),
        // Only a non-object ends here: the text was checked when it was made.
        Err(_) => Err(json_type_of(document)),
    }
}

/// How an error message names the JSON type of `document`.
pub fn raw_json_type(document: &RawValue) -> &'static str {
    json_type_of(document.get())
}

fn json_type_of(document: &str) -> &'static str {
    match document.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A serde error message without serde_json's ` at line L column C`, which
/// would point into a document the user never sees whole.
pub fn error_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(message) => message.to_owned(),
        None => message,
    }
}

/// Parses a document as strictly as a [`Value`] would, keeping nothing.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

struct FieldsVisitor<'k, const N: usize> {
    keys: [&'k str; N],
}

impl<'de, const N: usize> Visitor<'de> for FieldsVisitor<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(Key(key)) = map.next_key()? {
            match self.keys.iter().position(|wanted| *wanted == key) {
                Some(index) => {
                    let value: &'de RawValue = map.next_value()?;
                    found[index] = (value.get() != "null").then_some(value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// An object key, borrowed from the text unless it contains escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        RawJson::from_value(&value)
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as is, not re-encoded; borrowing it as a `RawValue` (a skim
        // of already checked text) is the way to say so to serde_json.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| RawJson(raw.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> RawJson {
        RawJson::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn keeps_valid_json_and_refuses_the_rest() {
        assert_eq!(raw(r#"{"a": [1, 2]}"#).as_str(), r#"{"a": [1, 2]}"#);
        assert!(RawJson::from_string("{".into()).is_err());
        assert!(RawJson::from_string("1 2".into()).is_err());
        // As strict as a Value: numbers, escapes and nesting are checked.
        for (text, error) in [
            ("[1e999999]", "number out of range"),
            (r#"["\ud800"]"#, "unexpected end of hex escape"),
            (&"[".repeat(200), "recursion limit exceeded"),
        ] {
            let message = RawJson::from_string(text.to_owned())
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(error), "{text}: {message}");
            let message = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert!(message.starts_with(error), "{text}: {message}");
        }
        assert!(raw("null").is_null());
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(raw(r#"{"a":1,"b":2}"#), raw(r#"{ "b": 2, "a": 1 }"#));
        assert_ne!(raw(r#"{"a":1}"#), raw(r#"{"a":2}"#));
        assert_eq!(RawJson::from(json!({"a": [true]})), raw(r#"{"a":[true]}"#));
    }

    #[test]
    fn fields_picks_members_and_skips_the_rest() {
        let object = raw(r#"{"kind":"Pod","spec":{"x":[1,{"y":"z"}]},"n":null,"kind":"Job"}"#);
        let [kind, spec, n, missing] = object.fields(["kind", "spec", "n", "missing"]).unwrap();
        // The last occurrence of a repeated key wins, as in a Value.
        assert_eq!(kind.unwrap().get(), r#""Job""#);
        assert_eq!(spec.unwrap().get(), r#"{"x":[1,{"y":"z"}]}"#);
        assert!(n.is_none() && missing.is_none());

        let [x] = fields(spec.unwrap(), ["x"]).unwrap();
        assert_eq!(x.unwrap().get(), r#"[1,{"y":"z"}]"#);
        // Keys with escapes are compared after unescaping.
        let escaped = raw(r#"{"\u0061": 1}"#);
        let [a] = escaped.fields(["a"]).unwrap();
        assert_eq!(a.unwrap().get(), "1");
    }

    #[test]
    fn fields_of_a_non_object_names_its_type() {
        assert_eq!(raw("[1]").fields(["a"]).unwrap_err(), "an array");
        assert_eq!(raw(r#""s""#).fields(["a"]).unwrap_err(), "a string");
        assert_eq!(raw("-1.5").fields(["a"]).unwrap_err(), "a number");
        assert_eq!(raw("false").fields(["a"]).unwrap_err(), "a boolean");
        assert_eq!(raw("null").fields(["a"]).unwrap_err(), "null");
    }

    #[test]
    fn error_messages_drop_the_position() {
        let error = raw(r#"{"a": "x"}"#).parse::<Vec<u8>>().unwrap_err();
        assert_eq!(
            error_message(&error),
            "invalid type: map, expected a sequence"
        );
    }
}
