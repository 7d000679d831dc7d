//! Applies the registry's effects: commands and closes go to the control
//! session they name, status changes go into the event stream (and so to
//! the WebSocket clients that want them) and to HTTP requests waiting on a
//! command; device records that changed go to the history writer. Runs
//! under the state lock.

use crate::control::Outbound;
use crate::hub::Hub;
use crate::registry::{Effect, Registry};
use crate::stream::Event;

/// Applies the effects the registry queued, in order, and hands the device
/// records that changed to the history. Never blocks.
pub fn dispatch(hub: &Hub, registry: &mut Registry) {
    let changed = registry.take_changed();
    if let Some(history) = hub.history() {
        history.record_devices(changed);
    }
    for effect in registry.take_effects() {
        match effect {
            Effect::Send { session, id, body } => {
                hub.send_to_session(session, Outbound::Command { id, body });
            }
            Effect::CloseSession { session, reason } => {
                hub.send_to_session(session, Outbound::Close(reason));
            }
            Effect::Command(record) => {
                tracing::debug!(
                    command = record.id,
                    device = record.device,
                    state = record.state.name(),
                    "command"
                );
                hub.publish(Event::CommandStatus(Box::new(record.clone())));
                hub.publish_command(record);
            }
            Effect::DeviceStatus {
                device,
                status,
                previous,
                at_ms,
            } => {
                tracing::info!(
                    device,
                    status = status.name(),
                    previous = previous.map(|p| p.name()),
                    "device status"
                );
                hub.publish(Event::DeviceStatus {
                    device,
                    status,
                    previous,
                    at_ms,
                });
            }
        }
    }
}
