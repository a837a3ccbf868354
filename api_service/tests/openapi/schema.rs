//! A small JSON Schema validator for the subset utoipa emits into this API's document:
//! `$ref` (local), `type` (one or several), `properties`, `required`, `items`, `enum`,
//! `oneOf` / `anyOf` / `allOf`, `minimum` / `maximum`, `minLength` / `maxLength`, `pattern`
//! (read by Rust's `regex`, whose syntax the document's patterns keep to) and the `format`s `date-time`, `int32`, `int64`, `double`, `password`.
//!
//! Two deliberate choices keep it honest:
//! - a keyword it does not know is an error, never silently ignored, so a schema it cannot
//!   check fails the test instead of passing it;
//! - objects are closed: a property the schema does not list is an error (the document must
//!   describe every field the API sends), unless the schema says `additionalProperties`.

use serde_json::Value;

/// Keywords that describe but do not constrain.
const ANNOTATIONS: &[&str] = &[
    "description",
    "example",
    "examples",
    "title",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Every way `instance` breaks `schema`, as `location: reason` lines; empty when it conforms.
/// `document` is the whole OpenAPI document, for resolving `$ref`s.
pub fn validate(document: &Value, schema: &Value, instance: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(document, schema, instance, "$", &mut errors);
    errors
}

/// Follows a local `#/a/b/c` reference.
pub fn resolve<'a>(document: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local references are supported, got {reference}"));
    document
        .pointer(pointer)
        .unwrap_or_else(|| panic!("dangling reference {reference}"))
}

fn check(document: &Value, schema: &Value, instance: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                errors.push(format!("{at}: nothing is allowed here"));
                return;
            }
            other => panic!("schema at {at} is not an object: {other}"),
        }
    };
    for (keyword, value) in schema {
        match keyword.as_str() {
            "$ref" => {
                let target = resolve(document, value.as_str().expect("$ref is a string"));
                check(document, target, instance, at, errors);
            }
            "type" => {
                let allowed: Vec<&str> = match value {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) => many
                        .iter()
                        .map(|t| t.as_str().expect("type names are strings"))
                        .collect(),
                    other => panic!("bad type keyword at {at}: {other}"),
                };
                if !allowed.iter().any(|t| has_type(instance, t)) {
                    errors.push(format!(
                        "{at}: expected {}, got {}",
                        allowed.join(" or "),
                        type_name(instance)
                    ));
                }
            }
            "properties" => {
                let (Some(properties), Some(object)) = (value.as_object(), instance.as_object())
                else {
                    continue;
                };
                for (name, property) in properties {
                    if let Some(field) = object.get(name) {
                        check(document, property, field, &format!("{at}.{name}"), errors);
                    }
                }
                if !schema.contains_key("additionalProperties") {
                    for name in object.keys().filter(|k| !properties.contains_key(*k)) {
                        errors.push(format!("{at}: property {name:?} is not documented"));
                    }
                }
            }
            "additionalProperties" => {
                let Some(object) = instance.as_object() else {
                    continue;
                };
                let listed = schema.get("properties").and_then(Value::as_object);
                for (name, field) in object {
                    if listed.is_none_or(|p| !p.contains_key(name)) {
                        check(document, value, field, &format!("{at}.{name}"), errors);
                    }
                }
            }
            "required" => {
                let Some(object) = instance.as_object() else {
                    continue;
                };
                for name in value.as_array().expect("required is a list") {
                    let name = name.as_str().expect("required names are strings");
                    if !object.contains_key(name) {
                        errors.push(format!("{at}: required property {name:?} is missing"));
                    }
                }
            }
            "items" => {
                let Some(items) = instance.as_array() else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    check(document, value, item, &format!("{at}[{i}]"), errors);
                }
            }
            "enum" => {
                let options = value.as_array().expect("enum is a list");
                if !options.contains(instance) {
                    errors.push(format!("{at}: {instance} is not one of {value}"));
                }
            }
            "oneOf" | "anyOf" => {
                let matching = value
                    .as_array()
                    .expect("oneOf/anyOf is a list")
                    .iter()
                    .filter(|option| validate_at(document, option, instance, at).is_empty())
                    .count();
                let ok = if keyword == "oneOf" {
                    matching == 1
                } else {
                    matching >= 1
                };
                if !ok {
                    errors.push(format!(
                        "{at}: {matching} of the {keyword} alternatives match {instance}"
                    ));
                }
            }
            "allOf" => {
                for part in value.as_array().expect("allOf is a list") {
                    check(document, part, instance, at, errors);
                }
            }
            "minimum" | "maximum" => {
                let (Some(bound), Some(number)) = (value.as_f64(), instance.as_f64()) else {
                    continue;
                };
                let ok = if keyword == "minimum" {
                    number >= bound
                } else {
                    number <= bound
                };
                if !ok {
                    errors.push(format!("{at}: {number} breaks {keyword} {bound}"));
                }
            }
            "minLength" | "maxLength" => {
                let (Some(bound), Some(text)) = (value.as_u64(), instance.as_str()) else {
                    continue;
                };
                let length = text.chars().count() as u64;
                let ok = if keyword == "minLength" {
                    length >= bound
                } else {
                    length <= bound
                };
                if !ok {
                    errors.push(format!("{at}: length {length} breaks {keyword} {bound}"));
                }
            }
            "pattern" => {
                let Some(text) = instance.as_str() else {
                    continue;
                };
                let pattern = value.as_str().expect("pattern is a string");
                let regex = regex::Regex::new(pattern)
                    .unwrap_or_else(|err| panic!("pattern at {at} does not compile: {err}"));
                if !regex.is_match(text) {
                    errors.push(format!("{at}: {text:?} does not match {pattern:?}"));
                }
            }
            "format" => check_format(
                value.as_str().expect("format is a string"),
                instance,
                at,
                errors,
            ),
            other if ANNOTATIONS.contains(&other) => {}
            other => panic!(
                "schema at {at} uses {other:?}, which this validator does not check; \
                 teach it the keyword rather than ignoring it"
            ),
        }
    }
}

fn validate_at(document: &Value, schema: &Value, instance: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(document, schema, instance, at, &mut errors);
    errors
}

fn check_format(format: &str, instance: &Value, at: &str, errors: &mut Vec<String>) {
    let ok = match (format, instance) {
        ("date-time", Value::String(text)) => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        // RFC 3339 full-date, and partial-time (what a quote's `local_time` is).
        ("date", Value::String(text)) => {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
        }
        ("time", Value::String(text)) => {
            chrono::NaiveTime::parse_from_str(text, "%H:%M:%S%.f").is_ok()
        }
        ("int32", Value::Number(n)) => n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
        ("int64", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("double", Value::Number(_)) | ("password", Value::String(_)) => true,
        // A format applies only to its own type; `type` reports the mismatch.
        ("date-time" | "date" | "time" | "password", _) | ("int32" | "int64" | "double", _) => true,
        (other, _) => panic!("format {other:?} at {at} is not checked by this validator"),
    };
    if !ok {
        errors.push(format!("{at}: {instance} is not a valid {format}"));
    }
}

fn has_type(instance: &Value, name: &str) -> bool {
    match name {
        "null" => instance.is_null(),
        "boolean" => instance.is_boolean(),
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "number" => instance.is_number(),
        "integer" => instance.is_i64() || instance.is_u64(),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

fn type_name(instance: &Value) -> &'static str {
    match instance {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
