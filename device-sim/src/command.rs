//! How a simulated device answers the hub's commands: outcome, detail text
//! and the effect the session must carry out. Pure: the only state is the
//! device's small configuration store, passed in.

use std::collections::BTreeMap;

use sensor_hub_protocol::control::{fit, CommandBody, Outcome, Text};

/// Most configuration keys a simulated device stores.
pub const MAX_CONFIG_KEYS: usize = 32;

/// What the session must do after answering a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEffect {
    /// Nothing beyond the answer.
    None,
    /// Send datagrams every this many ms from now on (at least 1).
    SetInterval(u32),
    /// Make the device noticed (the simulator logs it).
    Identify,
    /// Close the session, pause, restart the sequence, reconnect.
    Reboot,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// How it went.
    pub outcome: Outcome,
    /// Explanation sent with the result.
    pub detail: Text,
    /// What the session must do.
    pub effect: CommandEffect,
}

/// A device's configuration values set with `SetConfig`, at most
/// [`MAX_CONFIG_KEYS`] keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigStore {
    entries: BTreeMap<String, String>,
}

impl ConfigStore {
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stores `value` under `key`; refuses a new key when full.
    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigFull> {
        if let Some(existing) = self.entries.get_mut(key) {
            value.clone_into(existing);
        } else if self.entries.len() >= MAX_CONFIG_KEYS {
            return Err(ConfigFull);
        } else {
            self.entries.insert(key.to_owned(), value.to_owned());
        }
        Ok(())
    }
}

struct ConfigFull;

/// Answers `body`, updating `config` for `SetConfig`.
pub fn handle_command(config: &mut ConfigStore, body: &CommandBody) -> CommandReply {
    match body {
        CommandBody::SetInterval { ms: 0 } => failed("interval must be at least 1 ms"),
        CommandBody::SetInterval { ms } => succeeded(
            &format!("interval {ms} ms"),
            CommandEffect::SetInterval(*ms),
        ),
        CommandBody::Identify => succeeded("identified (blinked LED)", CommandEffect::Identify),
        CommandBody::Reboot => succeeded("rebooting", CommandEffect::Reboot),
        CommandBody::SetConfig { key, value } => match config.set(key, value) {
            Ok(()) => succeeded(&format!("{key} = {value}"), CommandEffect::None),
            Err(ConfigFull) => failed(&format!(
                "config is full ({MAX_CONFIG_KEYS} keys); `{key}` not stored"
            )),
        },
        CommandBody::Custom { name, .. } => failed(&format!("unsupported command `{name}`")),
    }
}

/// Answers a command whose body this protocol version cannot decode.
pub fn unknown_command() -> CommandReply {
    failed("unknown command")
}

fn succeeded(detail: &str, effect: CommandEffect) -> CommandReply {
    CommandReply {
        outcome: Outcome::Succeeded,
        detail: fit(detail),
        effect,
    }
}

fn failed(detail: &str) -> CommandReply {
    CommandReply {
        outcome: Outcome::Failed,
        detail: fit(detail),
        effect: CommandEffect::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::control::Name;

    fn name(s: &str) -> Name {
        Name::try_from(s).expect("short")
    }

    fn text(s: &str) -> Text {
        Text::try_from(s).expect("short")
    }

    fn answer(body: CommandBody) -> (Outcome, String, CommandEffect) {
        let reply = handle_command(&mut ConfigStore::default(), &body);
        (
            reply.outcome,
            reply.detail.as_str().to_owned(),
            reply.effect,
        )
    }

    #[test]
    fn set_interval_needs_at_least_one_ms() {
        assert_eq!(
            answer(CommandBody::SetInterval { ms: 500 }),
            (
                Outcome::Succeeded,
                "interval 500 ms".into(),
                CommandEffect::SetInterval(500)
            )
        );
        assert_eq!(
            answer(CommandBody::SetInterval { ms: 0 }),
            (
                Outcome::Failed,
                "interval must be at least 1 ms".into(),
                CommandEffect::None
            )
        );
    }

    #[test]
    fn identify_and_reboot_succeed_with_their_effects() {
        assert_eq!(
            answer(CommandBody::Identify),
            (
                Outcome::Succeeded,
                "identified (blinked LED)".into(),
                CommandEffect::Identify
            )
        );
        assert_eq!(
            answer(CommandBody::Reboot),
            (
                Outcome::Succeeded,
                "rebooting".into(),
                CommandEffect::Reboot
            )
        );
    }

    #[test]
    fn set_config_stores_and_overwrites() {
        let mut config = ConfigStore::default();
        let set = |key: &str, value: &str| CommandBody::SetConfig {
            key: name(key),
            value: text(value),
        };
        let reply = handle_command(&mut config, &set("mode", "eco"));
        assert_eq!(reply.outcome, Outcome::Succeeded);
        assert_eq!(reply.detail, "mode = eco");
        handle_command(&mut config, &set("mode", "boost"));
        assert_eq!(config.get("mode"), Some("boost"));
        assert_eq!(config.len(), 1);
    }

    #[test]
    fn set_config_refuses_new_keys_when_full_but_still_overwrites() {
        let mut config = ConfigStore::default();
        for i in 0..MAX_CONFIG_KEYS {
            let body = CommandBody::SetConfig {
                key: name(&format!("k{i}")),
                value: text("v"),
            };
            assert_eq!(
                handle_command(&mut config, &body).outcome,
                Outcome::Succeeded
            );
        }
        let extra = CommandBody::SetConfig {
            key: name("one-too-many"),
            value: text("v"),
        };
        let reply = handle_command(&mut config, &extra);
        assert_eq!(reply.outcome, Outcome::Failed);
        assert!(reply.detail.contains("full"), "{}", reply.detail);
        assert_eq!(config.get("one-too-many"), None);
        let overwrite = CommandBody::SetConfig {
            key: name("k0"),
            value: text("w"),
        };
        assert_eq!(
            handle_command(&mut config, &overwrite).outcome,
            Outcome::Succeeded
        );
        assert_eq!(config.get("k0"), Some("w"));
    }

    #[test]
    fn a_long_config_detail_is_cut_to_fit() {
        let body = CommandBody::SetConfig {
            key: name(&"k".repeat(32)),
            value: text(&"é".repeat(64)),
        };
        let reply = handle_command(&mut ConfigStore::default(), &body);
        assert_eq!(reply.outcome, Outcome::Succeeded);
        assert!(reply.detail.len() <= 128);
        assert!(reply.detail.starts_with(&"k".repeat(32)));
    }

    #[test]
    fn custom_and_unknown_commands_fail() {
        let custom = CommandBody::Custom {
            name: name("self-destruct"),
            args: text("{}"),
        };
        assert_eq!(
            answer(custom),
            (
                Outcome::Failed,
                "unsupported command `self-destruct`".into(),
                CommandEffect::None
            )
        );
        let reply = unknown_command();
        assert_eq!(reply.outcome, Outcome::Failed);
        assert_eq!(reply.detail, "unknown command");
        assert_eq!(reply.effect, CommandEffect::None);
    }
}
