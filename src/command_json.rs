//! Commands as clients write them in JSON (`{"kind": "set_interval",
//! "ms": 500}`), turned into wire [`CommandBody`]s with errors that say
//! what is wrong. Pure; shared by the WebSocket and the HTTP API.

use sensor_hub_protocol::control::{CommandBody, Name, Text};
use serde_json::{Map, Value};

/// Longest report interval a `set_interval` may ask for: one day.
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// Parses one command object.
pub fn parse_command(command: &Value) -> Result<CommandBody, String> {
    let Some(object) = command.as_object() else {
        return Err("`command` must be an object like {\"kind\": \"identify\"}".into());
    };
    let Some(kind) = object.get("kind").and_then(Value::as_str) else {
        return Err("`command.kind` must be a string such as \"set_interval\"".into());
    };
    match kind {
        "set_interval" => {
            let ms = object
                .get("ms")
                .and_then(Value::as_u64)
                .filter(|ms| (1..=MAX_INTERVAL_MS).contains(ms));
            match ms {
                Some(ms) => Ok(CommandBody::SetInterval { ms: ms as u32 }),
                None => Err(format!(
                    "`set_interval` needs `ms`, a whole number of milliseconds from 1 to {MAX_INTERVAL_MS}"
                )),
            }
        }
        "identify" => Ok(CommandBody::Identify),
        "reboot" => Ok(CommandBody::Reboot),
        "set_config" => {
            let key = object
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let value = object.get("value").and_then(Value::as_str);
            let key = Name::try_from(key)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or("`set_config` needs `key`, a string of 1 to 32 bytes")?;
            let value = value
                .and_then(|v| Text::try_from(v).ok())
                .ok_or("`set_config` needs `value`, a string of at most 128 bytes")?;
            Ok(CommandBody::SetConfig { key, value })
        }
        custom => custom_command(custom, object),
    }
}

/// Any other kind is passed to the device by name, with the remaining
/// fields as JSON text; the device decides whether it knows it.
fn custom_command(kind: &str, object: &Map<String, Value>) -> Result<CommandBody, String> {
    let valid = !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let name = Name::try_from(kind)
        .ok()
        .filter(|_| valid)
        .ok_or("`command.kind` must be 1 to 32 characters of a-z, 0-9 and _")?;
    let args: Map<String, Value> = object
        .iter()
        .filter(|(k, _)| k.as_str() != "kind")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let args = Value::Object(args).to_string();
    let args = Text::try_from(args.as_str())
        .map_err(|_| "the command's arguments exceed 128 bytes of JSON".to_string())?;
    Ok(CommandBody::Custom { name, args })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_kinds_parse() {
        assert_eq!(
            parse_command(&json!({"kind": "set_interval", "ms": 500})),
            Ok(CommandBody::SetInterval { ms: 500 })
        );
        assert_eq!(
            parse_command(&json!({"kind": "identify"})),
            Ok(CommandBody::Identify)
        );
        assert_eq!(
            parse_command(&json!({"kind": "reboot"})),
            Ok(CommandBody::Reboot)
        );
        assert_eq!(
            parse_command(&json!({"kind": "set_config", "key": "led", "value": "off"})),
            Ok(CommandBody::SetConfig {
                key: Name::try_from("led").unwrap(),
                value: Text::try_from("off").unwrap()
            })
        );
    }

    #[test]
    fn other_kinds_go_to_the_device_with_their_arguments() {
        assert_eq!(
            parse_command(&json!({"kind": "open_valve", "percent": 40})),
            Ok(CommandBody::Custom {
                name: Name::try_from("open_valve").unwrap(),
                args: Text::try_from(r#"{"percent":40}"#).unwrap()
            })
        );
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        let cases = [
            (json!("identify"), "must be an object"),
            (json!({}), "`command.kind` must be a string"),
            (json!({"kind": "set_interval"}), "needs `ms`"),
            (json!({"kind": "set_interval", "ms": 0}), "needs `ms`"),
            (json!({"kind": "set_interval", "ms": -5}), "needs `ms`"),
            (
                json!({"kind": "set_interval", "ms": 100_000_000}),
                "needs `ms`",
            ),
            (json!({"kind": "set_config", "value": "x"}), "needs `key`"),
            (json!({"kind": "set_config", "key": "k"}), "needs `value`"),
            (json!({"kind": "Launch Rockets"}), "a-z, 0-9 and _"),
            (json!({"kind": "x".repeat(33)}), "a-z, 0-9 and _"),
            (
                json!({"kind": "blob", "data": "y".repeat(200)}),
                "exceed 128 bytes",
            ),
        ];
        for (input, expected) in cases {
            let err = parse_command(&input).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }
}
