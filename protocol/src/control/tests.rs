//! Control protocol: preamble, frame limits, round trips of every message,
//! bounded fields, and commands unknown to the device.

use super::*;
use serde::Serialize;

fn name(s: &str) -> Name {
    Name::try_from(s).unwrap()
}

fn text(s: &str) -> Text {
    Text::try_from(s).unwrap()
}

fn hello() -> Hello {
    Hello {
        device_id: 17,
        name: name("kitchen"),
        firmware: name("1.4.2"),
        token: text("s3cret"),
        interval_ms: 1000,
        device_time_ms: 1_700_000_000_000,
        sensors: [SensorInfo {
            channel: 0,
            name: name("temperature"),
            unit: String::try_from("°C").unwrap(),
            kind: ValueKind::F32,
            min: Some(-40.0),
            max: Some(85.0),
        }]
        .into_iter()
        .collect(),
    }
}

fn frame_of<M: Serialize>(m: &M) -> std::vec::Vec<u8> {
    let mut buf = [0u8; 1024];
    encode_frame(m, &mut buf).unwrap().to_vec()
}

extern crate std;

#[test]
fn preamble_is_checked() {
    assert_eq!(check_preamble(PREAMBLE), Ok(()));
    assert_eq!(check_preamble([0x47, 0x45]), Err(ControlError::BadMagic));
    assert_eq!(check_preamble([MAGIC, 9]), Err(ControlError::BadVersion(9)));
}

#[test]
fn frame_length_is_checked_against_the_limit() {
    assert_eq!(frame_body_len([0x00, 0x10], 4096), Ok(16));
    assert_eq!(frame_body_len([0x10, 0x00], 4096), Ok(4096));
    assert_eq!(
        frame_body_len([0x10, 0x01], 4096),
        Err(ControlError::Oversized { len: 4097 })
    );
    assert_eq!(
        frame_body_len([0xFF, 0xFF], 4096),
        Err(ControlError::Oversized { len: 65_535 })
    );
}

#[test]
fn every_device_message_round_trips() {
    let messages = [
        DeviceMessage::Hello(hello()),
        DeviceMessage::Heartbeat {
            device_time_ms: 1_700_000_000_123,
        },
        DeviceMessage::CommandAck { id: 9 },
        DeviceMessage::CommandResult {
            id: 9,
            outcome: Outcome::Failed,
            detail: Some(text("unsupported command `x`")),
        },
        DeviceMessage::Bye,
    ];
    for m in messages {
        let frame = frame_of(&m);
        let len = frame_body_len([frame[0], frame[1]], MAX_FRAME_BODY).unwrap();
        assert_eq!(len, frame.len() - FRAME_HEADER_LEN);
        assert_eq!(decode_device_message(&frame[FRAME_HEADER_LEN..]), Ok(m));
    }
}

#[test]
fn every_hub_message_round_trips() {
    let messages = [
        HubMessage::Welcome {
            session_id: 3,
            hub_time_ms: 1_700_000_000_000,
            heartbeat_ms: 5_000,
        },
        HubMessage::Reject {
            reason: RejectReason::BadToken,
            detail: text("wrong token for device 17"),
        },
        HubMessage::Command {
            id: 1,
            body: CommandBody::SetInterval { ms: 500 },
        },
        HubMessage::Command {
            id: 2,
            body: CommandBody::SetConfig {
                key: name("led"),
                value: text("off"),
            },
        },
        HubMessage::Command {
            id: 3,
            body: CommandBody::Custom {
                name: name("open_valve"),
                args: text("{\"percent\":40}"),
            },
        },
        HubMessage::Command {
            id: 4,
            body: CommandBody::Identify,
        },
        HubMessage::Command {
            id: 5,
            body: CommandBody::Reboot,
        },
        HubMessage::HeartbeatAck { hub_time_ms: 5 },
    ];
    for m in messages {
        let frame = frame_of(&m);
        assert_eq!(
            decode_hub_message(&frame[FRAME_HEADER_LEN..]),
            Ok(DecodedHubMessage::Known(m))
        );
    }
}

#[test]
fn a_command_the_device_does_not_know_keeps_its_id() {
    // Tag 2 (Command), id 300, then a body variant from a future version.
    let body = [0x02, 0xAC, 0x02, 0x63, 0x01, 0x02];
    assert_eq!(
        decode_hub_message(&body),
        Ok(DecodedHubMessage::UnknownCommand { id: 300 })
    );
    // Any other unknown message stays an error.
    assert_eq!(decode_hub_message(&[0x09]), Err(ControlError::Undecodable));
    assert_eq!(decode_hub_message(&[]), Err(ControlError::Undecodable));
}

#[test]
fn over_long_fields_and_leftovers_are_undecodable() {
    #[derive(Serialize)]
    struct WideHello<'a> {
        device_id: u32,
        name: &'a str,
    }
    #[derive(Serialize)]
    enum Wide<'a> {
        Hello(WideHello<'a>),
    }
    let long = "n".repeat(33);
    let frame = frame_of(&Wide::Hello(WideHello {
        device_id: 1,
        name: &long,
    }));
    assert_eq!(
        decode_device_message(&frame[FRAME_HEADER_LEN..]),
        Err(ControlError::Undecodable)
    );

    let mut frame = frame_of(&DeviceMessage::Bye);
    frame.push(0);
    assert_eq!(
        decode_device_message(&frame[FRAME_HEADER_LEN..]),
        Err(ControlError::Undecodable)
    );
    let frame = frame_of(&DeviceMessage::Hello(hello()));
    assert_eq!(
        decode_device_message(&frame[FRAME_HEADER_LEN..frame.len() - 1]),
        Err(ControlError::Undecodable)
    );
}

#[test]
fn encode_reports_small_buffers() {
    let mut tiny = [0u8; 4];
    assert_eq!(
        encode_frame(&DeviceMessage::Hello(hello()), &mut tiny).map(|f| f.len()),
        Err(ControlError::BufferTooSmall)
    );
}

#[test]
fn fit_cuts_at_a_character_boundary() {
    let short: Name = fit("interval 500 ms");
    assert_eq!(short, "interval 500 ms");
    // 'é' is two bytes: 32 bytes would split the 16th after the 'a'.
    let long = std::format!("a{}", "é".repeat(20));
    let cut: Name = fit(&long);
    assert_eq!(cut.len(), 31);
    assert!(long.starts_with(cut.as_str()));
    let text: Text = fit(&"x".repeat(200));
    assert_eq!(text.len(), TEXT_LEN);
}
