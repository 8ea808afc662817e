//! Typed policy settings.
//!
//! The host hands settings to a policy as JSON text (`{}` when the operator
//! gave none). A policy declares a type implementing [`Settings`]; the SDK
//! parses the JSON into it and runs [`Settings::validate`] before every call,
//! so a policy only ever sees settings that passed validation.
//!
//! ```
//! use portcullis_sdk::Settings;
//! use portcullis_sdk::settings::load_settings;
//! use serde::Deserialize;
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Limits {
//!     max_replicas: u32,
//! }
//!
//! impl Settings for Limits {
//!     fn validate(&self) -> Result<(), String> {
//!         if self.max_replicas == 0 {
//!             return Err("max_replicas must be at least 1".into());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! assert_eq!(load_settings::<Limits>(r#"{"max_replicas": 3}"#).unwrap().max_replicas, 3);
//! assert_eq!(
//!     load_settings::<Limits>(r#"{"max_replicas": "3"}"#).unwrap_err(),
//!     "invalid settings: max_replicas: invalid type: string \"3\", expected u32"
//! );
//! assert_eq!(
//!     load_settings::<Limits>("{}").unwrap_err(),
//!     "invalid settings: max_replicas must be at least 1"
//! );
//! ```

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, MapAccess};
use serde_json::{Map, Value};

/// A policy's settings.
///
/// Implementors are deserialized from the operator's JSON with serde; use
/// `#[serde(default, deny_unknown_fields)]` so that omitted fields take their
/// defaults and misspelled ones are reported. Settings given as `{}`, `null`
/// or an empty string are [`Default::default`].
pub trait Settings: DeserializeOwned + Default {
    /// Checks the settings beyond what their type enforces (value ranges,
    /// mutually exclusive options, ...). The error is shown to the operator,
    /// prefixed with `invalid settings: `.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Settings for a policy that takes none: only `{}` (or `null`) is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl Settings for NoSettings {}

/// Parses settings JSON into `S` and validates them: the exact steps the
/// `validate-settings` export and every `validate` call take.
///
/// Errors read `invalid settings: <reason>`; when a top-level field has the
/// wrong type the reason starts with the field's name, e.g.
/// `invalid settings: skip_init_containers: invalid type: string "yes", expected a boolean`.
pub fn load_settings<S: Settings>(json: &str) -> Result<S, String> {
    let settings =
        parse_settings::<S>(json).map_err(|error| format!("invalid settings: {error}"))?;
    settings
        .validate()
        .map_err(|error| format!("invalid settings: {error}"))?;
    Ok(settings)
}

fn parse_settings<S: Settings>(json: &str) -> Result<S, String> {
    if json.trim().is_empty() {
        return Ok(S::default());
    }
    let value: Value = serde_json::from_str(json)
        .map_err(|error| format!("the settings are not valid JSON: {error}"))?;
    match value {
        Value::Null => Ok(S::default()),
        Value::Object(fields) if fields.is_empty() => Ok(S::default()),
        Value::Object(fields) => {
            S::deserialize(MapAccessDeserializer::new(NamedFields::new(fields)))
                .map_err(|error| error.to_string())
        }
        // Serde happily maps a list onto a struct's fields by position,
        // which gives baffling errors; say what is expected instead.
        other => {
            let found = match &other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            };
            S::deserialize(other)
                .map_err(|_| format!("expected a JSON object of settings, found {found}"))
        }
    }
}

/// Walks the top-level fields of the settings object for a deserializer,
/// prefixing any error raised while deserializing a field's value with the
/// field's name (serde_json's own messages say what was wrong, not where).
struct NamedFields {
    fields: serde_json::map::IntoIter,
    pending: Option<(String, Value)>,
}

impl NamedFields {
    fn new(fields: Map<String, Value>) -> Self {
        NamedFields {
            fields: fields.into_iter(),
            pending: None,
        }
    }
}

impl<'de> MapAccess<'de> for NamedFields {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((name, value)) = self.fields.next() else {
            return Ok(None);
        };
        let key = seed.deserialize(name.as_str().into_deserializer())?;
        self.pending = Some((name, value));
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (name, value) = self.pending.take().ok_or_else(|| {
            serde_json::Error::custom("a settings value was requested before its key")
        })?;
        seed.deserialize(value)
            .map_err(|error| serde_json::Error::custom(format_args!("{name}: {error}")))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        skip_init_containers: bool,
        names: Vec<String>,
        nested: Nested,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Nested {
        limit: u8,
    }

    impl Settings for Example {
        fn validate(&self) -> Result<(), String> {
            if self.names.iter().any(String::is_empty) {
                return Err("names must not be empty strings".into());
            }
            Ok(())
        }
    }

    #[test]
    fn empty_null_and_blank_settings_are_defaults() {
        for json in ["{}", "null", "", "  \n", " { } "] {
            assert_eq!(
                load_settings::<Example>(json).unwrap(),
                Example::default(),
                "{json:?}"
            );
        }
    }

    #[test]
    fn fields_are_parsed() {
        let settings: Example = load_settings(
            r#"{"skip_init_containers": true, "names": ["a"], "nested": {"limit": 7}}"#,
        )
        .unwrap();
        assert_eq!(
            settings,
            Example {
                skip_init_containers: true,
                names: vec!["a".into()],
                nested: Nested { limit: 7 },
            }
        );
    }

    #[test]
    fn an_ill_typed_field_is_named() {
        let error = load_settings::<Example>(r#"{"skip_init_containers": "yes"}"#).unwrap_err();
        assert_eq!(
            error,
            "invalid settings: skip_init_containers: invalid type: string \"yes\", expected a boolean"
        );
        let error = load_settings::<Example>(r#"{"nested": {"limit": 300}}"#).unwrap_err();
        assert_eq!(
            error,
            "invalid settings: nested: invalid value: integer `300`, expected u8"
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let error = load_settings::<Example>(r#"{"skip_init_container": true}"#).unwrap_err();
        assert!(
            error.starts_with(
                "invalid settings: unknown field `skip_init_container`, expected one of"
            ),
            "{error}"
        );
    }

    #[test]
    fn invalid_json_is_reported_with_its_position() {
        let error = load_settings::<Example>(r#"{"names": [}"#).unwrap_err();
        assert_eq!(
            error,
            "invalid settings: the settings are not valid JSON: expected value at line 1 column 12"
        );
    }

    #[test]
    fn a_non_object_is_rejected() {
        let error = load_settings::<Example>("[1, 2]").unwrap_err();
        assert_eq!(
            error,
            "invalid settings: expected a JSON object of settings, found an array"
        );
        let error = load_settings::<Example>("true").unwrap_err();
        assert_eq!(
            error,
            "invalid settings: expected a JSON object of settings, found a boolean"
        );
    }

    #[test]
    fn validate_errors_are_prefixed() {
        let error = load_settings::<Example>(r#"{"names": [""]}"#).unwrap_err();
        assert_eq!(error, "invalid settings: names must not be empty strings");
    }

    #[test]
    fn no_settings_accepts_only_nothing() {
        assert_eq!(load_settings::<NoSettings>("{}").unwrap(), NoSettings {});
        assert_eq!(load_settings::<NoSettings>("null").unwrap(), NoSettings {});
        let error = load_settings::<NoSettings>(r#"{"verbose": true}"#).unwrap_err();
        assert!(
            error.starts_with("invalid settings: unknown field `verbose`"),
            "{error}"
        );
    }
}
