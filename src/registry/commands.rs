//! Command records: the lifecycle states, what a command is called, and the
//! snapshot the shell publishes at every transition. The transitions
//! themselves are driven by [`Registry`](super::Registry).

use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::DeviceId;
use serde::{Deserialize, Serialize};

/// Hub-assigned command id (unique while the hub runs).
pub type CommandId = u32;

/// Where a command is in its life.
///
/// `queued → sent → acked → succeeded | failed`, or `rejected` at once,
/// or `timed_out` from any non-final state when its TTL passes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumCount,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CommandState {
    /// Waiting for the device's control session (or for its turn).
    Queued,
    /// Written to the device's session.
    Sent,
    /// The device confirmed receipt.
    Acked,
    /// The device reported success.
    Succeeded,
    /// The device reported failure.
    Failed,
    /// Refused by the hub (unknown device, offline and not to wait, queue full).
    Rejected,
    /// Its TTL passed before a result.
    TimedOut,
}

impl CommandState {
    /// No further transition follows.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandState::Succeeded
                | CommandState::Failed
                | CommandState::Rejected
                | CommandState::TimedOut
        )
    }

    /// snake_case name (as in JSON and metrics).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Position in lifecycle order (for counters indexed by state).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The `kind` of a command as clients name it.
pub fn kind_of(body: &CommandBody) -> &str {
    match body {
        CommandBody::SetInterval { .. } => "set_interval",
        CommandBody::Identify => "identify",
        CommandBody::Reboot => "reboot",
        CommandBody::SetConfig { .. } => "set_config",
        CommandBody::Custom { name, .. } => name.as_str(),
    }
}

/// Who asked for a command, so its status can be routed back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    /// The client's own id for the request, echoed in every status.
    pub request_id: Option<serde_json::Value>,
    /// The WebSocket client that sent it, if any.
    pub client: Option<u64>,
    /// Where it came from when not a WebSocket or HTTP client (`"mqtt"`),
    /// shown to every client so dashboards can list it.
    pub source: Option<&'static str>,
    /// In a cluster: the hub whose client sent it, when not this one
    /// (`client` and `request_id` are that hub's, not this one's).
    pub hub: Option<std::sync::Arc<str>>,
    /// In a cluster: the sending hub's mark for a command it handed to
    /// the device's hub, to find its statuses again.
    pub ticket: Option<u64>,
}

/// One command and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// Its id.
    pub id: CommandId,
    /// Target device.
    pub device: DeviceId,
    /// What to do.
    pub body: CommandBody,
    /// Current state.
    pub state: CommandState,
    /// Explanation of the current state (device detail, rejection reason).
    pub detail: Option<String>,
    /// Who asked.
    pub origin: Origin,
    /// Wall time it was submitted, Unix ms.
    pub created_ms: u64,
    /// Wall time of the latest transition, Unix ms.
    pub updated_ms: u64,
    /// Monotonic time (ms, the hub's [`Clock`](crate::clock::Clock)) after
    /// which it times out: a wall-clock step cannot expire it early.
    pub deadline_mono_ms: u64,
}
