//! The WebSocket client's logic without a socket or a sleep: an in-memory
//! stream stands in for the core, time and queued bytes are passed in, and
//! every assertion reads the actions the client returns.

use std::cell::RefCell;

use sensor_hub_protocol::{Reading, Value};
use serde_json::{json, Value as Json};

use super::*;
use crate::registry::{CommandRecord, CommandState};
use crate::state::LiveDatagram;
use crate::stream::Stream;

const WALL: u64 = 1_700_000_000_000;

/// The hub as the client sees it: a real [`Stream`], an epoch, and the
/// commands submitted (device 404 is unknown).
struct Source {
    stream: RefCell<Stream>,
    submitted: RefCell<Vec<(DeviceId, Origin)>>,
}

impl Source {
    fn new(replay_bytes: usize) -> Source {
        Source {
            stream: RefCell::new(Stream::new(replay_bytes, "e1".into())),
            submitted: RefCell::new(Vec::new()),
        }
    }

    fn append(&self, event: Event) -> u64 {
        self.stream.borrow_mut().append(event)
    }

    fn readings(&self, device: DeviceId, channels: &[u8]) -> u64 {
        self.append(Event::Readings(vec![LiveDatagram {
            device,
            seq: 1,
            time_ms: WALL,
            received_ms: WALL,
            readings: channels
                .iter()
                .map(|&channel| Reading {
                    channel,
                    value: Value::F32(f32::from(channel)),
                })
                .collect(),
        }]))
    }

    fn command_status(&self, device: DeviceId, client: Option<u64>) -> u64 {
        self.append(Event::CommandStatus(Box::new(CommandRecord {
            id: 1,
            device,
            body: CommandBody::Identify,
            state: CommandState::Queued,
            detail: None,
            origin: Origin {
                request_id: Some(json!("req-1")),
                client,
                source: None,
                ..Default::default()
            },
            created_ms: WALL,
            updated_ms: WALL,
            deadline_mono_ms: 30_000,
        })))
    }
}

impl EventSource for Source {
    fn epoch(&self) -> Arc<str> {
        self.stream.borrow().epoch().clone()
    }
    fn epoch_changes(&self) -> u64 {
        // The test's stream has no counter: the address of its epoch
        // changes with every reset, which is all a client needs.
        Arc::as_ptr(self.stream.borrow().epoch()).cast::<u8>() as usize as u64
    }
    fn head(&self) -> u64 {
        self.stream.borrow().head()
    }
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Arc<Entry>>, Gone> {
        self.stream.borrow().read_from(from, max)
    }
    fn read_previous(&self, epoch: &Arc<str>, from: u64, max: usize) -> Vec<Arc<Entry>> {
        self.stream.borrow().read_previous(epoch, from, max)
    }
    fn continues(&self, epoch: &Arc<str>) -> Option<u64> {
        self.stream.borrow().continues(epoch)
    }
    fn snapshot(&self, _subscription: &Subscription, _now: Now) -> Snapshot {
        Snapshot {
            epoch: self.epoch(),
            seq: self.head(),
            devices: Vec::new(),
        }
    }
    fn submit(
        &self,
        device: DeviceId,
        _body: CommandBody,
        _wait: bool,
        origin: Origin,
        _now: Now,
    ) -> Result<(), SubmitError> {
        if device == 404 {
            return Err(SubmitError::UnknownDevice(device));
        }
        self.submitted.borrow_mut().push((device, origin));
        Ok(())
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        budget_bytes: 10_000,
        slow_grace_ms: 2_000,
        silence_limit_ms: 30_000,
        messages_per_s: 20,
        message_burst: 5,
        min_aggregate_interval_ms: 100,
        total_budget_bytes: 100_000,
        coalesce_ms: 0,
    }
}

fn t(mono_ms: u64) -> Tick {
    Tick {
        now: Now::at(mono_ms, WALL + mono_ms),
        queued: 0,
        coalesce: false,
    }
}

fn with_queued(mono_ms: u64, queued: usize) -> Tick {
    Tick {
        queued,
        ..t(mono_ms)
    }
}

/// A client with its hello taken, and its metrics.
fn client(source: &Source) -> (Client, Arc<WsMetrics>) {
    let metrics = Arc::new(WsMetrics::default());
    let mut c = Client::new(
        7,
        Role::Operator,
        config(),
        metrics.clone(),
        source,
        t(0).now,
    );
    let hello = sent(&mut c);
    assert_eq!(hello.len(), 1);
    assert_eq!(hello[0]["type"], "hello");
    (c, metrics)
}

/// Every message queued so far, as JSON; panics on any other action.
fn sent(c: &mut Client) -> Vec<Json> {
    let mut out = Vec::new();
    while let Some(action) = c.poll_action() {
        match action {
            Action::Send(text, _) => out.push(serde_json::from_str(text.as_str()).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn actions(c: &mut Client) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn types(messages: &[Json]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["type"].as_str().unwrap_or("?"))
        .collect()
}

fn subscribe(c: &mut Client, source: &Source, request: &str) -> Vec<Json> {
    c.handle_text(request, source, t(1));
    sent(c)
}

#[test]
fn hello_names_the_epoch_and_head() {
    let source = Source::new(100_000);
    source.readings(1, &[0]);
    let metrics = Arc::new(WsMetrics::default());
    let mut c = Client::new(1, Role::Operator, config(), metrics, &source, t(0).now);
    let hello = sent(&mut c);
    assert_eq!(hello[0]["epoch"], "e1");
    assert_eq!(hello[0]["seq"], 1);
    assert_eq!(hello[0]["server_time_ms"], WALL);
}

#[test]
fn nothing_streams_before_subscribe_but_own_command_statuses_do() {
    let source = Source::new(100_000);
    let (mut c, _) = client(&source);
    source.readings(1, &[0]);
    source.command_status(1, Some(99));
    c.pump(&source, t(1));
    assert!(sent(&mut c).is_empty());
    source.command_status(1, Some(7));
    c.pump(&source, t(2));
    let own = sent(&mut c);
    assert_eq!(types(&own), ["command_status"]);
    assert_eq!(own[0]["id"], "req-1", "its own request id comes back");
}

#[test]
fn subscribe_answers_with_a_snapshot_then_streams_live_readings() {
    let source = Source::new(100_000);
    let (mut c, _) = client(&source);
    source.readings(1, &[0]);
    let answer = subscribe(&mut c, &source, r#"{"type":"subscribe","id":"s"}"#);
    assert_eq!(types(&answer), ["snapshot"]);
    assert_eq!(answer[0]["id"], "s");
    assert_eq!(
        answer[0]["seq"], 1,
        "the snapshot includes what came before"
    );
    let seq = source.readings(2, &[0, 1]);
    c.pump(&source, t(2));
    let live = sent(&mut c);
    assert_eq!(types(&live), ["readings"]);
    assert_eq!(live[0]["seq"], seq);
    assert_eq!(live[0]["datagrams"][0]["device"], 2);
    assert_eq!(
        live[0]["datagrams"][0]["readings"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_full_subscription_shares_one_json_per_event() {
    let source = Source::new(100_000);
    let (mut a, _) = client(&source);
    let (mut b, _) = client(&source);
    subscribe(&mut a, &source, r#"{"type":"subscribe"}"#);
    subscribe(&mut b, &source, r#"{"type":"subscribe"}"#);
    source.readings(1, &[0]);
    a.pump(&source, t(2));
    b.pump(&source, t(2));
    let (Some(Action::Send(x, _)), Some(Action::Send(y, _))) = (a.poll_action(), b.poll_action())
    else {
        panic!("both get the readings");
    };
    assert_eq!(
        x.as_str().as_ptr(),
        y.as_str().as_ptr(),
        "made once, shared"
    );
}

#[test]
fn a_filtered_subscription_gets_only_its_devices_and_channels() {
    let source = Source::new(100_000);
    let (mut c, _) = client(&source);
    subscribe(
        &mut c,
        &source,
        r#"{"type":"subscribe","devices":[1],"sensors":[1]}"#,
    );
    source.readings(2, &[1]);
    source.readings(1, &[0, 1]);
    source.readings(1, &[0]);
    c.pump(&source, t(2));
    let got = sent(&mut c);
    assert_eq!(types(&got), ["readings", "readings"]);
    assert_eq!(
        got[0]["datagrams"][0]["readings"],
        json!([{"channel": 1, "value": 1.0}])
    );
    // A covered device with no covered channel still says it is alive.
    assert_eq!(got[1]["datagrams"][0]["readings"], json!([]));
}

#[test]
fn over_budget_a_live_client_waits_then_is_evicted_after_the_grace() {
    let source = Source::new(1_000_000);
    let (mut c, metrics) = client(&source);
    subscribe(&mut c, &source, r#"{"type":"subscribe"}"#);
    source.readings(1, &[0]);
    // Over budget: nothing is taken, nothing is skipped.
    c.pump(&source, with_queued(10, 10_000));
    assert!(sent(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(10 + 2_000 + 1));
    // Drained before the grace ends: the reading arrives after all.
    c.pump(&source, with_queued(1_000, 0));
    assert_eq!(types(&sent(&mut c)), ["readings"]);
    // Over budget again and still over after the grace: 4008, discarding.
    source.readings(1, &[0]);
    c.pump(&source, with_queued(2_000, 20_000));
    c.handle_timeout(&source, with_queued(4_001, 20_000));
    assert_eq!(
        actions(&mut c),
        [Action::Close(Close {
            code: SLOW_CONSUMER,
            reason: "slow consumer",
            discard: true
        })]
    );
    assert!(c.is_closed());
    assert_eq!(metrics.evictions.get(Eviction::SlowConsumer.index()), 1);
}

#[test]
fn a_live_client_behind_the_replay_ring_is_evicted() {
    let source = Source::new(300);
    let (mut c, _) = client(&source);
    subscribe(&mut c, &source, r#"{"type":"subscribe"}"#);
    for _ in 0..10 {
        source.readings(1, &[0, 1, 2]);
    }
    c.pump(&source, t(2));
    assert!(matches!(
        actions(&mut c).last(),
        Some(Action::Close(Close {
            code: SLOW_CONSUMER,
            ..
        }))
    ));
}

#[test]
fn aggregates_fold_and_flush_each_interval_and_skip_when_over_budget() {
    let source = Source::new(300);
    let (mut c, _) = client(&source);
    let answer = subscribe(
        &mut c,
        &source,
        r#"{"type":"subscribe","mode":"aggregate","interval_ms":500}"#,
    );
    assert_eq!(types(&answer), ["snapshot"]);
    assert_eq!(c.poll_timeout(), Some(501));
    // More events than the ring holds: aggregates continue from what is left.
    for _ in 0..10 {
        source.readings(1, &[0]);
    }
    c.pump(&source, t(100));
    assert!(sent(&mut c).is_empty(), "folded, not sent");
    c.handle_timeout(&source, t(501));
    let flushed = sent(&mut c);
    assert_eq!(types(&flushed), ["aggregates"]);
    assert_eq!(flushed[0]["interval_ms"], 500);
    let sensors = flushed[0]["sensors"].as_array().unwrap();
    assert_eq!(sensors.len(), 1);
    assert!(sensors[0]["count"].as_u64().unwrap() >= 1);
    // Over budget at the next interval: keep folding, send nothing.
    source.readings(1, &[0]);
    c.handle_timeout(&source, with_queued(1_001, 50_000));
    assert!(sent(&mut c).is_empty());
    c.handle_timeout(&source, t(1_501));
    assert_eq!(types(&sent(&mut c)), ["aggregates"]);
}

#[test]
fn a_silent_client_is_closed_with_4009() {
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    c.handle_heard(t(5_000));
    assert_eq!(c.poll_timeout(), Some(5_000 + 30_000 + 1));
    c.handle_timeout(&source, t(30_000));
    assert!(actions(&mut c).is_empty(), "not yet");
    c.handle_timeout(&source, t(35_001));
    assert_eq!(
        actions(&mut c),
        [Action::Close(Close {
            code: NO_PONG,
            reason: "no pong",
            discard: true
        })]
    );
    assert_eq!(metrics.evictions.get(Eviction::NoPong.index()), 1);
}

#[test]
fn a_flood_is_refused_then_closed() {
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    for _ in 0..5 {
        c.handle_text(r#"{"type":"ping"}"#, &source, t(0));
    }
    assert_eq!(types(&sent(&mut c)), ["pong"; 5]);
    for _ in 0..5 {
        c.handle_text(r#"{"type":"ping"}"#, &source, t(0));
    }
    let refused = sent(&mut c);
    assert!(refused.iter().all(|m| m["code"] == "rate_limited"));
    c.handle_text(r#"{"type":"ping"}"#, &source, t(0));
    assert!(matches!(
        actions(&mut c).last(),
        Some(Action::Close(Close { code: POLICY, .. }))
    ));
    assert_eq!(
        metrics.client_errors.get(ClientError::RateLimited.index()),
        5
    );
}

#[test]
fn a_message_over_the_limit_gets_too_large_before_1009() {
    // Regression: the close came without the documented `error`.
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    c.handle_too_large(65_536);
    let all = actions(&mut c);
    assert_eq!(all.len(), 2);
    let Action::Send(text, _) = &all[0] else {
        panic!("{all:?}")
    };
    let error: Json = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "too_large");
    assert!(error["message"].as_str().unwrap().contains("65536"));
    assert_eq!(
        all[1],
        Action::Close(Close {
            code: TOO_BIG,
            reason: "message too large",
            discard: false
        })
    );
    assert_eq!(metrics.client_errors.get(ClientError::TooLarge.index()), 1);
}

#[test]
fn text_that_is_not_utf8_is_closed_with_1007() {
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    c.handle_invalid_utf8();
    assert_eq!(
        actions(&mut c),
        [Action::Close(Close {
            code: INVALID_PAYLOAD,
            reason: "text is not valid UTF-8",
            discard: false
        })]
    );
    assert_eq!(metrics.evictions.get(Eviction::InvalidUtf8.index()), 1);
}

#[test]
fn resume_continues_after_last_seq_or_resyncs_saying_why() {
    let source = Source::new(100_000);
    let s1 = source.readings(1, &[0]);
    let s2 = source.readings(1, &[1]);
    let (mut c, _) = client(&source);
    c.handle_text(
        &format!(r#"{{"type":"resume","id":1,"epoch":"e1","last_seq":{s1}}}"#),
        &source,
        t(1),
    );
    let resumed = sent(&mut c);
    assert_eq!(types(&resumed), ["ack", "readings"]);
    assert_eq!(resumed[0]["seq"], s1);
    assert_eq!(resumed[1]["seq"], s2);

    for (request, reason) in [
        (
            r#"{"type":"resume","epoch":"other","last_seq":1}"#,
            "new epoch",
        ),
        (r#"{"type":"resume","epoch":"e1","last_seq":99}"#, "ahead"),
    ] {
        let (mut c, _) = client(&source);
        c.handle_text(request, &source, t(1));
        let answer = sent(&mut c);
        assert_eq!(types(&answer), ["resync"]);
        assert!(answer[0]["reason"].as_str().unwrap().contains(reason));
    }

    let small = Source::new(200);
    for _ in 0..5 {
        small.readings(1, &[0, 1, 2]);
    }
    let (mut c, _) = client(&small);
    c.handle_text(
        r#"{"type":"resume","epoch":"e1","last_seq":1}"#,
        &small,
        t(1),
    );
    let answer = sent(&mut c);
    assert_eq!(types(&answer), ["resync"]);
    assert!(answer[0]["reason"]
        .as_str()
        .unwrap()
        .contains("no longer buffered"));
}

#[test]
fn a_new_numbering_goes_on_without_loss_or_resyncs_after_a_gap() {
    let source = Source::new(100_000);
    let (mut subscriber, _) = client(&source);
    subscribe(&mut subscriber, &source, r#"{"type":"subscribe","id":"s"}"#);
    let (mut idle, _) = client(&source);
    source.readings(1, &[0]);
    subscriber.pump(&source, t(2));
    assert_eq!(types(&sent(&mut subscriber)), ["readings"]);
    // One more reading the client has not pumped yet; then a cluster hub
    // links: the stream continues, with nothing between, in another
    // epoch at a lower position.
    source.readings(4, &[0]);
    source.stream.borrow_mut().reset("cluster".into(), 1, true);
    source.readings(2, &[0]);
    subscriber.pump(&source, t(3));
    let messages = sent(&mut subscriber);
    // What it had not read of the old numbering, the new numbering, and
    // what follows: nothing missed, no snapshot needed.
    assert_eq!(types(&messages), ["readings", "renumbered", "readings"]);
    assert_eq!(messages[0]["datagrams"][0]["device"], 4);
    assert_eq!(messages[1]["epoch"], "cluster");
    assert_eq!(messages[1]["seq"], 0);
    assert_eq!(messages[2]["seq"], 1);
    // The same name but a new stream after a gap: a resync, unasked.
    source
        .stream
        .borrow_mut()
        .reset("cluster".into(), 10, false);
    subscriber.pump(&source, t(5));
    let resync = sent(&mut subscriber);
    assert_eq!(types(&resync), ["resync"]);
    assert!(resync[0]["id"].is_null(), "nobody asked for it");
    assert_eq!(resync[0]["seq"], 9);
    // Two changes before a client reads: it cannot know it missed
    // nothing, so it resyncs.
    source.stream.borrow_mut().reset("a".into(), 10, true);
    source.stream.borrow_mut().reset("b".into(), 10, true);
    subscriber.pump(&source, t(6));
    assert_eq!(types(&sent(&mut subscriber)), ["resync"]);
    // Without a subscription: no stream messages, own statuses still come.
    idle.pump(&source, t(6));
    assert!(types(&sent(&mut idle)).iter().all(|t| *t == "renumbered"));
    source.command_status(1, Some(7));
    idle.pump(&source, t(7));
    assert_eq!(types(&sent(&mut idle)), ["command_status"]);
    // A resume names the new epoch.
    idle.handle_text(
        r#"{"type":"resume","id":"r","epoch":"e1","last_seq":1}"#,
        &source,
        t(8),
    );
    let answer = sent(&mut idle);
    assert_eq!(answer[0]["type"], "resync");
    assert_eq!(answer[0]["epoch"], "b");
}

#[test]
fn command_statuses_carry_the_id_only_for_the_client_that_sent_them() {
    let source = Source::new(100_000);
    let (mut mine, _) = client(&source);
    subscribe(&mut mine, &source, r#"{"type":"subscribe"}"#);
    mine.handle_text(
        r#"{"type":"command","id":"a-1","device":3,"command":{"kind":"identify"}}"#,
        &source,
        t(2),
    );
    let (device, origin) = source.submitted.borrow()[0].clone();
    assert_eq!(device, 3);
    assert_eq!(origin.client, Some(7));
    assert_eq!(origin.request_id, Some(json!("a-1")));

    let metrics = Arc::new(WsMetrics::default());
    let mut other = Client::new(8, Role::Operator, config(), metrics, &source, t(0).now);
    sent(&mut other);
    subscribe(&mut other, &source, r#"{"type":"subscribe","devices":[3]}"#);
    let mut unsubscribed = Client::new(
        9,
        Role::Operator,
        config(),
        Arc::new(WsMetrics::default()),
        &source,
        t(0).now,
    );
    sent(&mut unsubscribed);

    source.command_status(3, Some(7));
    for c in [&mut mine, &mut other, &mut unsubscribed] {
        c.pump(&source, t(3));
    }
    let own = sent(&mut mine);
    assert_eq!(own[0]["type"], "command_status");
    assert_eq!(own[0]["id"], "req-1");
    let theirs = sent(&mut other);
    assert_eq!(theirs[0]["type"], "command_status");
    assert!(theirs[0].get("id").is_none(), "{}", theirs[0]);
    assert!(sent(&mut unsubscribed).is_empty());
}

#[test]
fn a_viewer_cannot_command_and_nothing_is_submitted() {
    let source = Source::new(100_000);
    let metrics = Arc::new(WsMetrics::default());
    let mut c = Client::new(
        4,
        Role::Viewer,
        config(),
        metrics.clone(),
        &source,
        t(0).now,
    );
    sent(&mut c);
    c.handle_text(
        r#"{"type":"command","id":"v","device":3,"command":{"kind":"reboot"}}"#,
        &source,
        t(1),
    );
    let answer = sent(&mut c);
    assert_eq!(answer[0]["type"], "error");
    assert_eq!(answer[0]["code"], "forbidden");
    assert_eq!(answer[0]["id"], "v");
    assert_eq!(metrics.client_errors.get(ClientError::Forbidden.index()), 1);
    assert_eq!(source.stream.borrow().head(), 0, "no command was submitted");
}

#[test]
fn a_client_whose_credentials_end_is_closed_with_4401_at_once() {
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    c.handle_logged_out();
    assert_eq!(
        actions(&mut c),
        [Action::Close(Close {
            code: LOGGED_OUT,
            reason: "logged out",
            discard: true
        })]
    );
    assert_eq!(metrics.evictions.get(Eviction::LoggedOut.index()), 1);
}

#[test]
fn a_command_to_an_unknown_device_is_a_bad_command() {
    let source = Source::new(100_000);
    let (mut c, _) = client(&source);
    c.handle_text(
        r#"{"type":"command","id":9,"device":404,"command":{"kind":"reboot"}}"#,
        &source,
        t(1),
    );
    let answer = sent(&mut c);
    assert_eq!(answer[0]["code"], "bad_command");
    assert_eq!(answer[0]["id"], 9);
    assert_eq!(answer[0]["message"], "unknown device 404");
}

#[test]
fn history_requests_are_bounded_per_client() {
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    for i in 0..HISTORY_IN_FLIGHT {
        c.handle_text(
            &format!(r#"{{"type":"history","id":{i},"device":1,"sensor":0}}"#),
            &source,
            t(1),
        );
    }
    let started = actions(&mut c);
    assert_eq!(started.len(), HISTORY_IN_FLIGHT);
    assert!(started
        .iter()
        .all(|a| matches!(a, Action::History(q) if q.device == 1)));
    c.handle_text(
        r#"{"type":"history","id":"x","device":1,"sensor":0}"#,
        &source,
        t(2),
    );
    let refused = sent(&mut c);
    assert_eq!(refused[0]["code"], "history_busy");
    assert_eq!(refused[0]["id"], "x");
    c.handle_history_answer(r#"{"type":"history"}"#.into());
    assert_eq!(types(&sent(&mut c)), ["history"]);
    // (A second later, so the rate limit has room again.)
    c.handle_text(
        r#"{"type":"history","device":1,"sensor":0}"#,
        &source,
        t(1_000),
    );
    assert!(matches!(c.poll_action(), Some(Action::History(_))));
    assert_eq!(
        metrics.client_errors.get(ClientError::HistoryBusy.index()),
        1
    );
}

#[test]
fn unsubscribe_stops_the_stream_and_shutdown_closes_with_1001() {
    let source = Source::new(100_000);
    let (mut c, _) = client(&source);
    subscribe(&mut c, &source, r#"{"type":"subscribe"}"#);
    c.handle_text(r#"{"type":"unsubscribe","id":2}"#, &source, t(2));
    assert_eq!(types(&sent(&mut c)), ["ack"]);
    source.readings(1, &[0]);
    c.pump(&source, t(3));
    assert!(sent(&mut c).is_empty());
    c.handle_shutdown();
    assert_eq!(
        actions(&mut c),
        [Action::Close(Close {
            code: GOING_AWAY,
            reason: "hub shutting down",
            discard: false
        })]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn binary_frames_and_bad_requests_get_typed_errors() {
    let source = Source::new(100_000);
    let (mut c, _) = client(&source);
    c.handle_binary(t(1));
    c.handle_text("{nope", &source, t(1));
    c.handle_text(r#"{"type":"launch","id":5}"#, &source, t(1));
    let errors = sent(&mut c);
    let codes: Vec<&str> = errors.iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["binary_unsupported", "bad_json", "unknown_type"]);
    assert_eq!(errors[2]["id"], 5);
}

/// A client that coalesces within `coalesce_ms`, subscribed to everything.
fn coalescing_client(source: &Source, coalesce_ms: u64) -> Client {
    let config = ClientConfig {
        coalesce_ms,
        ..config()
    };
    let metrics = Arc::new(WsMetrics::default());
    let mut c = Client::new(7, Role::Operator, config, metrics, source, t(0).now);
    subscribe(&mut c, source, r#"{"type":"subscribe"}"#);
    c
}

fn busy(mono_ms: u64) -> Tick {
    Tick {
        coalesce: true,
        ..t(mono_ms)
    }
}

fn devices_of(message: &Json) -> Vec<u64> {
    message["datagrams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_u64().unwrap())
        .collect()
}

#[test]
fn coalescing_sends_the_first_at_once_and_what_follows_together() {
    let source = Source::new(100_000);
    let mut c = coalescing_client(&source, 5);
    source.readings(1, &[0]);
    c.pump(&source, busy(10));
    let first = sent(&mut c);
    assert_eq!(types(&first), ["readings"], "after a quiet spell: at once");
    // Within the budget: held, and no wake-up needed until it ends.
    source.readings(2, &[0]);
    c.pump(&source, busy(11));
    source.readings(3, &[0]);
    let last = source.readings(4, &[0]);
    c.pump(&source, busy(12));
    assert!(sent(&mut c).is_empty());
    assert!(c.is_holding());
    assert_eq!(c.poll_timeout(), Some(15));
    c.handle_timeout(&source, busy(15));
    let together = sent(&mut c);
    assert_eq!(types(&together), ["readings"], "one message");
    assert_eq!(devices_of(&together[0]), [2, 3, 4], "in order");
    assert_eq!(together[0]["seq"], last, "at the last one's position");
    assert!(!c.is_holding());
}

#[test]
fn coalescing_keeps_the_order_of_other_events_and_needs_enough_clients() {
    let source = Source::new(100_000);
    let mut c = coalescing_client(&source, 5);
    source.readings(1, &[0]);
    source.readings(2, &[0]);
    source.append(Event::DeviceStatus {
        device: 2,
        status: crate::registry::DeviceStatus::Late,
        previous: Some(crate::registry::DeviceStatus::Online),
        at_ms: WALL,
    });
    source.readings(3, &[0]);
    // Too few clients to hold back: taken at once, but what waits is
    // still merged, around the status.
    c.pump(&source, t(10));
    let out = sent(&mut c);
    assert_eq!(types(&out), ["readings", "device_status", "readings"]);
    assert_eq!(devices_of(&out[0]), [1, 2]);
    assert_eq!(devices_of(&out[2]), [3]);
    source.readings(4, &[0]);
    c.pump(&source, t(11));
    assert_eq!(types(&sent(&mut c)), ["readings"], "no hold");
}

#[test]
fn without_coalescing_every_event_is_its_own_message() {
    let source = Source::new(100_000);
    let mut c = coalescing_client(&source, 0);
    source.readings(1, &[0]);
    source.readings(2, &[0]);
    c.pump(&source, busy(10));
    source.readings(3, &[0]);
    c.pump(&source, busy(11));
    assert_eq!(types(&sent(&mut c)), ["readings", "readings", "readings"]);
}

#[test]
fn over_the_hub_budget_a_client_waits_without_gap_or_grace() {
    let source = Source::new(100_000);
    let (mut c, metrics) = client(&source);
    subscribe(&mut c, &source, r#"{"type":"subscribe"}"#);
    source.readings(1, &[0]);
    // All clients together (the hub-wide gauge, read live) are full.
    let full = i64::try_from(config().total_budget_bytes).unwrap();
    metrics.queued_bytes.set(full);
    c.pump(&source, t(10));
    assert!(
        sent(&mut c).is_empty(),
        "takes nothing while the hub is full"
    );
    assert_eq!(c.poll_timeout(), Some(10 + HUB_FULL_RETRY_MS));
    // Long after the per-client grace: not evicted (it is not its doing).
    c.handle_timeout(&source, t(10_000));
    assert!(sent(&mut c).is_empty());
    assert_eq!(metrics.evictions.get(Eviction::SlowConsumer.index()), 0);
    // Room again: it goes on where it stopped.
    metrics.queued_bytes.set(0);
    c.handle_timeout(&source, t(10_020));
    let out = sent(&mut c);
    assert_eq!(types(&out), ["readings"]);
    assert_eq!(devices_of(&out[0]), [1]);
}

#[test]
fn a_client_stops_taking_once_its_own_intake_fills_the_hub_budget() {
    let source = Source::new(10_000_000);
    // Its own budget is no limit here: the hub's is.
    let roomy = ClientConfig {
        budget_bytes: 10_000_000,
        ..config()
    };
    let metrics = Arc::new(WsMetrics::default());
    let mut c = Client::new(7, Role::Operator, roomy, metrics.clone(), &source, t(0).now);
    subscribe(&mut c, &source, r#"{"type":"subscribe"}"#);
    for device in 0..(3 * READ_BATCH as u32) {
        source.readings(device, &[0]);
    }
    // Nearly full: one read's worth goes, then it holds back.
    let nearly = i64::try_from(config().total_budget_bytes - 1).unwrap();
    metrics.queued_bytes.set(nearly);
    c.pump(&source, t(10));
    let taken: usize = sent(&mut c).iter().map(|m| devices_of(m).len()).sum();
    assert_eq!(taken, READ_BATCH);
    assert!(c.is_holding());
}

#[test]
fn a_client_holding_back_does_not_wait_for_drain_but_for_its_hold() {
    let source = Source::new(1_000_000);
    let mut c = coalescing_client(&source, 5);
    // More than one read's worth: it takes one read, then is over budget.
    for device in 0..(READ_BATCH as u32 + 10) {
        source.readings(device, &[0]);
    }
    let nearly_full = config().budget_bytes - 1;
    c.pump(
        &source,
        Tick {
            queued: nearly_full,
            ..busy(10)
        },
    );
    assert!(c.waits_for_drain());
    // The queue drains at once, but the client holds back (coalescing): a
    // pump now takes nothing, so the driver must wait for the hold's end
    // rather than pump again in a loop.
    c.pump(&source, busy(11));
    assert!(c.is_holding());
    assert!(!c.waits_for_drain());
    assert_eq!(c.poll_timeout(), Some(15));
    sent(&mut c);
    c.handle_timeout(&source, busy(15));
    let rest = sent(&mut c);
    assert_eq!(types(&rest), ["readings"]);
    assert_eq!(devices_of(&rest[0]).len(), 10);
    assert!(!c.waits_for_drain());
}
