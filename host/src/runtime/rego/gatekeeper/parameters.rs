//! Checking a constraint's parameters against its template's schema: the
//! structural OpenAPI v3 subset CRDs use (type, properties, items, enum,
//! required, additionalProperties, nullable), which is what the API server
//! checks of a Gatekeeper constraint. Fields the schema does not describe
//! are let through (the API server would prune them).

use serde_json::Value;

/// Checks `value`, found at `path`, against `schema`.
pub fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let fits = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            _ => true,
        };
        if !fits {
            let article = if expected == "object" || expected == "array" || expected == "integer" {
                "an"
            } else {
                "a"
            };
            return Err(format!("{path}: {value} is not {article} {expected}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!(
            "{path}: {value} is not one of {}",
            allowed.join(", ")
        ));
    }
    match value {
        Value::Object(fields) => {
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = required.as_str()
                    && !fields.contains_key(name)
                {
                    return Err(format!("{path}.{name}: required"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|s| s.is_object());
            for (name, field) in fields {
                let described = properties
                    .and_then(|properties| properties.get(name))
                    .or(additional);
                if let Some(field_schema) = described {
                    check(field_schema, field, &format!("{path}.{name}"))?;
                }
            }
            Ok(())
        }
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => items.iter().enumerate().try_for_each(|(index, item)| {
                check(item_schema, item, &format!("{path}[{index}]"))
            }),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_enums_items_and_required_fields_are_checked_where_they_are() {
        let schema = json!({
            "type": "object",
            "required": ["labels"],
            "properties": {
                "labels": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"key": {"type": "string"}, "allowedRegex": {"type": "string"}},
                }},
                "mode": {"type": "string", "enum": ["strict", "lax"]},
                "ratio": {"type": "number"},
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                "note": {"type": "string", "nullable": true},
            },
        });
        let ok = json!({"labels": [{"key": "a"}], "mode": "lax", "ratio": 1, "limits": {"cpu": 2}, "note": null, "extra": true});
        check(&schema, &ok, "spec.parameters").unwrap();
        let fails = |value: Value| check(&schema, &value, "spec.parameters").unwrap_err();
        assert_eq!(fails(json!({})), "spec.parameters.labels: required");
        assert_eq!(
            fails(json!({"labels": [{"key": 1}]})),
            "spec.parameters.labels[0].key: 1 is not a string"
        );
        assert_eq!(
            fails(json!({"labels": [], "mode": "x"})),
            "spec.parameters.mode: \"x\" is not one of \"strict\", \"lax\""
        );
        assert_eq!(
            fails(json!({"labels": [], "ratio": "1"})),
            "spec.parameters.ratio: \"1\" is not a number"
        );
        assert_eq!(
            fails(json!({"labels": [], "limits": {"cpu": 1.5}})),
            "spec.parameters.limits.cpu: 1.5 is not an integer"
        );
        assert_eq!(
            fails(json!({"labels": {}})),
            "spec.parameters.labels: {} is not an array"
        );
    }
}
