//! `PINPIPE__SECTION__KEY` environment overrides, typed by the config structs.
//!
//! Every value's type is the key's type in [`super::Config`] (read from the defaults), not
//! a guess from the text: `PINPIPE__KAFKA__GROUP_ID=0012` stays the string `"0012"`.
//!
//! - Strings (and keys unset by default) take the text as is; numbers and booleans must
//!   parse as their type (a fraction for an integer key is refused).
//! - Lists (`gateway.tokens`, `gateway.topics`, `gateway.streams`): comma-separated
//!   (`PINPIPE__GATEWAY__TOKENS=a,b`), or a JSON array.
//! - Maps (`kafka.properties`, `kafka.topics`, `kinesis.streams`, `gateway.aws_keys`): one
//!   entry per variable,
//!   `PINPIPE__KAFKA__PROPERTIES__<key>=<value>`, where the key keeps its case and each
//!   `__` in it stands for a dot (`PINPIPE__KAFKA__PROPERTIES__ssl__ca__location` sets
//!   `ssl.ca.location`); or the whole map as a JSON object in `PINPIPE__KAFKA__PROPERTIES`.

use serde_json::{Map, Value};

use super::ConfigError;

/// The prefix of every override.
const PREFIX: &str = "PINPIPE__";

/// The overrides among `vars` as a config tree, typed by `defaults` (the default config as
/// JSON). Keys that are not config keys are kept, so deserializing refuses them by name.
pub fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
    defaults: &Value,
) -> Result<Map<String, Value>, ConfigError> {
    let mut out = Map::new();
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(PREFIX)).collect();
    // Whole maps before their entries, so an entry lands in the map instead of under it.
    vars.sort_by_key(|(k, _)| k.matches("__").count());
    for (name, text) in vars {
        let path: Vec<&str> = name[PREFIX.len()..].split("__").collect();
        let [section, key, entry @ ..] = &path[..] else {
            return Err(bad(&name, "name a key: PINPIPE__<SECTION>__<KEY>"));
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let default = &defaults[&section][&key];
        let table = out
            .entry(section.clone())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("sections are tables");
        if entry.is_empty() {
            let value = typed(&text, default).map_err(|m| bad(&name, format!("{m} (config key {section}.{key})")))?;
            table.insert(key, value);
            continue;
        }
        if !default.is_object() {
            return Err(bad(
                &name,
                "only a map key (kafka.properties, kafka.topics, kinesis.streams, gateway.aws_keys) takes an entry",
            ));
        }
        let map = table.entry(key).or_insert_with(|| Value::Object(Map::new()));
        let Some(map) = map.as_object_mut() else {
            return Err(bad(&name, "the map was given whole as well"));
        };
        map.insert(entry.join("."), Value::String(text));
    }
    Ok(out)
}

fn bad(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: name.to_string(),
        message: message.into(),
    }
}

/// `text` as the type of `default`, or what was expected.
fn typed(text: &str, default: &Value) -> Result<Value, String> {
    let parsed = match default {
        Value::Bool(_) => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("expected true or false"),
        },
        Value::Number(n) if n.is_f64() => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .ok_or("expected a number"),
        // The range (a negative count, an i32 key) is the deserializer's to check.
        Value::Number(_) => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.trim().parse::<u64>().map(Value::from))
            .map_err(|_| "expected a whole number"),
        Value::Array(_) if text.trim_start().starts_with('[') => serde_json::from_str::<Vec<String>>(text)
            .map(|v| v.into())
            .map_err(|_| "expected a JSON array of strings"),
        Value::Array(_) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Value::from)
            .collect()),
        Value::Object(_) => serde_json::from_str::<Map<String, Value>>(text)
            .map(Value::Object)
            .map_err(|_| "expected a JSON object, or one variable per entry (PINPIPE__<SECTION>__<MAP>__<key>)"),
        Value::String(_) | Value::Null => Ok(Value::String(text.to_string())),
    };
    parsed.map_err(|m| format!("{m}, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Value {
        serde_json::to_value(super::super::Config::default()).unwrap()
    }

    fn with(vars: &[(&str, &str)]) -> Result<Value, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        overrides(vars, &defaults()).map(Value::Object)
    }

    #[test]
    fn values_take_the_type_of_their_key() {
        let v = with(&[
            ("PINPIPE__KAFKA__GROUP_ID", "0012"),
            ("PINPIPE__WRITER__MAX_ROWS", "50"),
            ("PINPIPE__KAFKA__ENABLED", "false"),
            ("PINPIPE__EMULATE__INVALID_SHARE", "0.25"),
            ("PINPIPE__TABLES__ENDPOINT", "http://127.0.0.1:9000"),
            ("PINPIPE__GATEWAY__TOKENS", "a, b,,c"),
            ("PINPIPE__GATEWAY__TOPICS", r#"["x,y"]"#),
            ("OTHER", "ignored"),
        ])
        .unwrap();
        assert_eq!(v["kafka"]["group_id"], "0012");
        assert_eq!(v["writer"]["max_rows"], 50);
        assert_eq!(v["kafka"]["enabled"], false);
        assert_eq!(v["emulate"]["invalid_share"], 0.25);
        assert_eq!(v["tables"]["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(v["gateway"]["tokens"], serde_json::json!(["a", "b", "c"]));
        assert_eq!(v["gateway"]["topics"], serde_json::json!(["x,y"]));
    }

    #[test]
    fn map_entries_keep_their_case_and_spell_dots_as_double_underscores() {
        let v = with(&[
            ("PINPIPE__KAFKA__PROPERTIES__ssl__ca__location", "/etc/ca.pem"),
            ("PINPIPE__KAFKA__PROPERTIES", r#"{"security.protocol":"SSL"}"#),
            ("PINPIPE__KAFKA__TOPICS__Events__Pins", "pin"),
        ])
        .unwrap();
        assert_eq!(
            v["kafka"]["properties"],
            serde_json::json!({"security.protocol": "SSL", "ssl.ca.location": "/etc/ca.pem"})
        );
        assert_eq!(v["kafka"]["topics"], serde_json::json!({"Events.Pins": "pin"}));
    }

    #[test]
    fn wrong_types_name_the_variable() {
        for (var, text) in [
            ("PINPIPE__WRITER__MAX_ROWS", "1.5"),
            ("PINPIPE__KAFKA__ENABLED", "yes"),
            ("PINPIPE__KAFKA__PROPERTIES", "ssl.ca.location=/x"),
            ("PINPIPE__WRITER__MAX_ROWS__X", "1"),
            ("PINPIPE__WRITER", "1"),
        ] {
            let e = with(&[(var, text)]).unwrap_err().to_string();
            assert!(e.contains(var), "{var}={text}: {e}");
        }
    }
}
