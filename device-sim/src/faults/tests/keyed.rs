//! The injector of a device with a key, against the real hub's ingest core
//! with the device's sessions started as the hub starts them: extra copies
//! are replays, held datagrams of an ended session bad tags, and forged
//! copies, replays within and across sessions and spoofs are each counted
//! as the hub drops them, without moving the device's own figures. Then the
//! phantom flood against the hub's bound on discovered devices.

use sensor_hub_protocol::auth::DatagramKey;
use sensor_hub_protocol::{decode_datagram, AUTH_TAG_LEN};

use super::real_hub::{Counts, Hub, HubCounts, Verdict};
use super::*;
use crate::faults::phantom::PhantomFlood;
use crate::faults::PHANTOM_FIRST_ID;

/// The key of the device's session number `session`.
fn session_key(session: u8) -> DatagramKey {
    DatagramKey::new(&[session; 32])
}

/// A v1 datagram of device 1 with two readings, tagged with `key`.
fn sealed(seq: u32, time_ms: u64, key: &DatagramKey) -> Vec<u8> {
    let mut readings = Readings::new();
    for (channel, value) in [(0, Value::F32(21.5)), (1, Value::I32(seq as i32))] {
        readings.push(Reading { channel, value }).expect("room");
    }
    let datagram = Datagram {
        device_id: 1,
        seq,
        time_ms: time_ms as u32,
        readings,
        auth_tag: None,
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    key.seal(&datagram, &mut buf).expect("fits").to_vec()
}

/// What happened on the way to the hub, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// The hub began the device's session number `n` (a keyed hello).
    Session(u8),
    /// A datagram from the device's socket.
    Device(Vec<u8>),
    /// A datagram from the stranger's socket.
    Stranger(Vec<u8>),
}

/// One keyed device's run.
#[derive(Debug, PartialEq)]
struct KeyedRun {
    events: Vec<Event>,
    report: InjectedFaults,
    reboots: u64,
    sessions: u8,
}

impl KeyedRun {
    /// What the hub made of each datagram, and what it counted.
    fn hub(&self) -> (Vec<Verdict>, HubCounts) {
        let mut hub = Hub::default();
        let mut verdicts = Vec::new();
        for event in &self.events {
            match event {
                Event::Session(n) => hub.start_session(1, session_key(*n)),
                Event::Device(bytes) | Event::Stranger(bytes) => {
                    verdicts.push(hub.read(bytes, HUB_NOW_MS));
                }
            }
        }
        (verdicts, hub.counts())
    }

    /// The hub's verdicts on the device's socket's datagrams: sequence
    /// numbers accepted, or drop reasons.
    fn device_verdicts(&self) -> Vec<Result<u32, &'static str>> {
        let mut hub = Hub::default();
        let mut verdicts = Vec::new();
        for event in &self.events {
            match event {
                Event::Session(n) => hub.start_session(1, session_key(*n)),
                Event::Device(bytes) => {
                    verdicts.push(hub.read(bytes, HUB_NOW_MS).map(|a| a.seq));
                }
                Event::Stranger(bytes) => {
                    let _ = hub.read(bytes, HUB_NOW_MS);
                }
            }
        }
        verdicts
    }

    fn stranger(&self) -> Vec<&[u8]> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Stranger(bytes) => Some(bytes.as_slice()),
                _ => None,
            })
            .collect()
    }
}

/// Feeds `len` datagrams 5 ms apart through a keyed injector. Before each
/// one (but the first), the device reboots with probability `reboot`
/// (sequence from 0, clock a second on, new session), or else says hello
/// again with probability `rehello` (new session, sequence goes on). The
/// hub begins each session before the device's first datagram in it.
fn keyed_run(spec: FaultSpec, seed: u64, len: u32, reboot: f64, rehello: f64) -> KeyedRun {
    let mut injector = FaultInjector::keyed(spec, seed);
    let mut device = fastrand::Rng::with_seed(seed ^ 0x5E55);
    let (mut seq, mut time, mut reboots, mut session) = (0u32, HUB_NOW_MS, 0, 1u8);
    let mut events = vec![Event::Session(session)];
    injector.new_session();
    let put = |events: &mut Vec<Event>, out: &Outgoing<'_>| {
        events.extend(out.datagrams().map(|b| Event::Device(b.to_vec())));
        events.extend(out.spoofed().map(|b| Event::Stranger(b.to_vec())));
    };
    for i in 0..len {
        let rebooted = i > 0 && device.f64() < reboot;
        if rebooted {
            seq = 0;
            time += 1_000;
            reboots += 1;
        }
        if rebooted || (i > 0 && device.f64() < rehello) {
            session = session.wrapping_add(1);
            events.push(Event::Session(session));
            injector.new_session();
        }
        let bytes = sealed(seq, time, &session_key(session));
        put(&mut events, &injector.push(seq, &bytes));
        seq = seq.wrapping_add(1);
        time += 5;
    }
    if injector.needs_final() {
        let bytes = sealed(seq, time, &session_key(session));
        put(&mut events, &injector.finish(seq, &bytes));
    }
    assert!(!injector.needs_final());
    KeyedRun {
        events,
        report: injector.report(),
        reboots,
        sessions: session,
    }
}

/// Asserts that the hub counts exactly what `run` reports, and nothing
/// else; returns its sequence counts.
fn assert_keyed_hub_agrees(run: &KeyedRun, context: &str) -> Counts {
    let (_, hub) = run.hub();
    let (counts, report) = (hub.seq, run.report);
    assert_eq!(hub.datagrams, report.on_wire(), "{context}");
    assert_eq!(counts.received, report.sent, "{context}");
    assert_eq!(counts.lost, report.lost, "{context}");
    assert_eq!(counts.reordered, report.reordered, "{context}");
    assert_eq!(counts.duplicated, 0, "{context}");
    assert_eq!(report.duplicated, 0, "{context}");
    assert_eq!(counts.restarts, report.restarts, "{context}");
    assert_eq!(hub.dropped("replayed"), report.replayed, "{context}");
    assert_eq!(hub.dropped("bad_tag"), report.bad_tag, "{context}");
    assert_eq!(
        hub.dropped("unauthenticated"),
        report.unauthenticated,
        "{context}"
    );
    for kind in Corruption::ALL {
        assert_eq!(
            hub.dropped(kind.reason()),
            report.corrupted.get(kind),
            "{context}"
        );
    }
    let dropped: u64 = hub.dropped.values().sum();
    assert_eq!(
        dropped,
        report.corrupted.total() + report.impersonations(),
        "{context}: {hub:?}"
    );
    counts
}

#[test]
fn a_keyed_devices_extra_copy_is_a_replay_not_a_duplicate() {
    let run = keyed_run(spec(0.0, 0.0, 1.0), 1, 4, 0.0, 0.0);
    assert_eq!(
        run.device_verdicts(),
        [
            Ok(0),
            Ok(1),
            Err("replayed"),
            Ok(2),
            Err("replayed"),
            Ok(3),
            Err("replayed")
        ]
    );
    let expected = InjectedFaults {
        sent: 4,
        replayed: 3,
        ..InjectedFaults::default()
    };
    assert_eq!(run.report, expected);
    assert_keyed_hub_agrees(&run, "duplicates");
    // The same spec on a device without a key: duplicates.
    let mut plain = FaultInjector::new(spec(0.0, 0.0, 1.0), 1);
    for seq in 0..4 {
        let bytes = encode(seq, HUB_NOW_MS);
        plain.push(seq, &bytes);
    }
    assert_eq!((plain.report().duplicated, plain.report().sent), (3, 7));
    assert!(FaultInjector::keyed(FaultSpec::NONE, 1).is_keyed());
    assert!(!plain.is_keyed());
}

#[test]
fn a_forged_copy_follows_each_datagram() {
    let forging = FaultSpec {
        forge: 1.0,
        ..FaultSpec::NONE
    };
    let run = keyed_run(forging, 2, 3, 0.0, 0.0);
    let verdicts = run.device_verdicts();
    assert_eq!(
        verdicts,
        [
            Ok(0),
            Err("bad_tag"),
            Ok(1),
            Err("bad_tag"),
            Ok(2),
            Err("bad_tag")
        ]
    );
    // A forged copy is its datagram with one tag byte changed.
    let device: Vec<&Vec<u8>> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Device(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    for pair in device.chunks(2) {
        let (real, forged) = (pair[0], pair[1]);
        let tag = real.len() - AUTH_TAG_LEN;
        assert_eq!(real[..tag], forged[..tag]);
        let differing = (tag..real.len()).filter(|&i| real[i] != forged[i]).count();
        assert_eq!(differing, 1);
    }
    assert_eq!((run.report.bad_tag, run.report.sent), (3, 3));
    assert_keyed_hub_agrees(&run, "forgeries");
}

#[test]
fn replays_pick_accepted_datagrams_inside_and_beyond_the_window() {
    let replaying = FaultSpec {
        replay: 1.0,
        ..FaultSpec::NONE
    };
    let run = keyed_run(replaying, 3, 300, 0.0, 0.0);
    let verdicts = run.device_verdicts();
    // Every datagram is followed by a replay the window refuses.
    assert_eq!(verdicts.len(), 600);
    for (i, pair) in verdicts.chunks(2).enumerate() {
        assert_eq!(pair, [Ok(i as u32), Err("replayed")], "{i}");
    }
    // Among them the session's first datagram, replayed long after it
    // fell out of the hub's 128-wide window, and recent ones inside it.
    let replayed: Vec<u32> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Device(bytes) => decode_datagram(bytes).ok(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| i as u32 - pair[1].seq)
        .collect();
    assert!(replayed.iter().any(|&behind| behind > 128), "{replayed:?}");
    assert!(replayed.iter().any(|&behind| behind <= 8), "{replayed:?}");
    assert_eq!(run.report.replayed, 300);
    assert_keyed_hub_agrees(&run, "replays");
}

#[test]
fn lost_corrupted_and_held_datagrams_are_never_replayed() {
    // Only accepted datagrams are candidates: were a lost or corrupted one
    // replayed inside the window, the hub would accept it.
    let faults = FaultSpec {
        corrupt: 0.3,
        replay: 0.5,
        ..spec(0.3, 0.3, 0.1)
    };
    for seed in 0..100 {
        let run = keyed_run(faults, seed, 150, 0.0, 0.0);
        let context = format!("seed {seed}");
        assert_keyed_hub_agrees(&run, &context);
        assert!(run.report.replayed > 0, "{context}");
    }
}

#[test]
fn after_a_reboot_datagrams_of_the_old_session_are_bad_tags() {
    let faults = FaultSpec {
        replay_after_reboot: 3,
        ..FaultSpec::NONE
    };
    let mut injector = FaultInjector::keyed(faults, 1);
    injector.new_session();
    let mut wire = Vec::new();
    for seq in 0..5 {
        let bytes = sealed(seq, HUB_NOW_MS + u64::from(seq), &session_key(1));
        wire.extend(injector.push(seq, &bytes).datagrams().map(<[u8]>::to_vec));
    }
    // The reboot: the new session's first datagram, then 2, 3 and 4 of
    // the old one.
    injector.new_session();
    let first = sealed(0, HUB_NOW_MS + 1_000, &session_key(2));
    let out: Vec<Vec<u8>> = injector
        .push(0, &first)
        .datagrams()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(out[0], first);
    assert_eq!(out[1..], wire[2..5]);
    assert_eq!(
        (injector.report().bad_tag, injector.report().restarts),
        (3, 1)
    );
    // A session that sent less replays less; nothing more afterwards.
    injector.new_session();
    let again = sealed(0, HUB_NOW_MS + 2_000, &session_key(3));
    assert_eq!(injector.push(0, &again).datagrams().count(), 2);
    let next = sealed(1, HUB_NOW_MS + 2_005, &session_key(3));
    assert_eq!(injector.push(1, &next).datagrams().count(), 1);
    assert_eq!(injector.report().bad_tag, 4);

    let run = keyed_run(faults, 4, 400, 0.02, 0.0);
    assert!(run.reboots >= 3, "{}", run.reboots);
    let counts = assert_keyed_hub_agrees(&run, "replays after reboots");
    assert_eq!(counts.restarts, run.reboots);
    assert_eq!(counts.lost, 0);
}

#[test]
fn a_datagram_held_across_a_new_session_is_a_bad_tag_and_its_number_lost() {
    let holding = spec(0.0, 1.0, 0.0);
    // A new hello (no reboot) while 1 is held: 1 goes out with the next
    // datagram, tagged with the old key, and the hub counts it missing.
    let mut injector = FaultInjector::keyed(holding, 1);
    let mut run = KeyedRun {
        events: vec![Event::Session(1)],
        report: InjectedFaults::default(),
        reboots: 0,
        sessions: 2,
    };
    injector.new_session();
    for (seq, session) in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 2)] {
        if session == 2 && seq == 2 {
            injector.new_session();
            run.events.push(Event::Session(2));
        }
        let bytes = sealed(seq, HUB_NOW_MS + u64::from(seq), &session_key(session));
        let out = injector.push(seq, &bytes);
        run.events
            .extend(out.datagrams().map(|b| Event::Device(b.to_vec())));
    }
    assert!(injector.needs_final(), "4 is held");
    let last = sealed(5, HUB_NOW_MS + 5, &session_key(2));
    let out = injector.finish(5, &last);
    run.events
        .extend(out.datagrams().map(|b| Event::Device(b.to_vec())));
    run.report = injector.report();
    // 2 is held in turn, so the old session's 1 goes out alone.
    assert_eq!(
        run.device_verdicts(),
        [Ok(0), Err("bad_tag"), Ok(3), Ok(2), Ok(5), Ok(4)]
    );
    let report = run.report;
    assert_eq!(
        (report.bad_tag, report.lost, report.reordered, report.sent),
        (1, 1, 2, 5)
    );
    assert_keyed_hub_agrees(&run, "held across a new hello");

    // Across a reboot the held one is a bad tag too, and its number is
    // forgotten with the old sequence.
    let rebooting = keyed_run(holding, 5, 60, 0.1, 0.0);
    assert!(rebooting.reboots > 0 && rebooting.report.bad_tag > 0);
    assert_keyed_hub_agrees(&rebooting, "held across reboots");
}

#[test]
fn spoofs_come_from_the_stranger_and_change_none_of_the_devices_figures() {
    let faults = FaultSpec {
        corrupt: 0.1,
        ..spec(0.1, 0.1, 0.1)
    };
    let spoofing = FaultSpec {
        spoof: 1.0,
        ..faults
    };
    let honest = keyed_run(faults, 6, 200, 0.01, 0.01);
    let spoofed = keyed_run(spoofing, 6, 200, 0.01, 0.01);
    let stranger = spoofed.stranger();
    assert_eq!(stranger.len(), 200, "one spoof per datagram pushed");
    for bytes in &stranger {
        let datagram = decode_datagram(bytes).expect("a valid datagram");
        assert_eq!((datagram.device_id, datagram.auth_tag), (1, None));
    }
    assert_eq!(spoofed.report.unauthenticated, 200);
    let honest_counts = assert_keyed_hub_agrees(&honest, "honest");
    let spoofed_counts = assert_keyed_hub_agrees(&spoofed, "spoofed");
    // Impersonations draw from their own stream: the network's faults,
    // and so the device's figures, are the same with and without them.
    assert_eq!(spoofed_counts, honest_counts);
    let without_spoofs = InjectedFaults {
        unauthenticated: 0,
        ..spoofed.report
    };
    assert_eq!(without_spoofs, honest.report);
}

#[test]
fn impersonations_leave_the_network_faults_where_they_were() {
    let network = FaultSpec {
        corrupt: 0.05,
        ..spec(0.1, 0.1, 0.1)
    };
    let attacked = FaultSpec {
        forge: 0.3,
        replay: 0.3,
        replay_after_reboot: 2,
        spoof: 0.3,
        ..network
    };
    let honest = keyed_run(network, 8, 300, 0.02, 0.0);
    let run = keyed_run(attacked, 8, 300, 0.02, 0.0);
    let report = run.report;
    assert!(report.bad_tag > 0 && report.replayed > 0 && report.unauthenticated > 0);
    let counts = assert_keyed_hub_agrees(&run, "attacked");
    assert_eq!(counts, assert_keyed_hub_agrees(&honest, "honest"));
    assert_eq!(
        (report.sent, report.lost, report.reordered, report.restarts),
        (
            honest.report.sent,
            honest.report.lost,
            honest.report.reordered,
            honest.report.restarts
        )
    );
}

#[test]
fn a_device_without_a_key_is_never_impersonated() {
    let everything = FaultSpec {
        forge: 1.0,
        replay: 1.0,
        replay_after_reboot: 3,
        spoof: 1.0,
        ..FaultSpec::NONE
    };
    let mut injector = FaultInjector::new(everything, 1);
    for seq in 0..50 {
        let bytes = encode(seq, HUB_NOW_MS);
        if seq == 25 {
            injector.new_session();
        }
        let out = injector.push(seq, &bytes);
        assert_eq!(out.datagrams().count(), 1);
        assert_eq!(out.spoofed(), None);
    }
    assert_eq!(injector.report().impersonations(), 0);
}

#[test]
fn keyed_reports_match_the_hub_exactly() {
    let mut pick = fastrand::Rng::with_seed(11);
    let mut total = InjectedFaults::default();
    for seed in 0..300 {
        let mut faults = match seed % 4 {
            0 => spec(0.1, 0.1, 0.05),
            1 => spec(1.0, 1.0, 1.0),
            _ => spec(pick.f64(), pick.f64(), pick.f64()),
        };
        faults.corrupt = [0.0, 0.05, 0.5][pick.usize(..3)];
        faults.forge = [0.0, 0.1, 1.0][pick.usize(..3)];
        faults.replay = [0.0, 0.1, 1.0][pick.usize(..3)];
        faults.spoof = [0.0, 0.1][pick.usize(..2)];
        faults.replay_after_reboot = pick.u32(..=MAX_REPLAY_AFTER_REBOOT);
        let len = pick.u32(1..400);
        let reboot = [0.0, 0.01, 0.2][pick.usize(..3)];
        let rehello = [0.0, 0.01, 0.1][pick.usize(..3)];
        let run = keyed_run(faults, seed, len, reboot, rehello);
        let context = format!("seed {seed}, {faults:?}, {len} datagrams");
        let counts = assert_keyed_hub_agrees(&run, &context);
        assert_eq!(counts.restarts, run.reboots, "{context}");
        assert!(run.sessions >= 1);
        total.add(&run.report);
    }
    assert!(
        total.lost > 0
            && total.reordered > 0
            && total.replayed > 0
            && total.bad_tag > 0
            && total.unauthenticated > 0,
        "{total:?}"
    );
}

/// Sends `sent` phantom datagrams from `ids` ids to a hub that has one
/// adopted device and room for `max_discovered` discovered ones.
fn flood_hub(ids: u32, sent: u64, max_discovered: usize) -> (InjectedFaults, HubCounts) {
    let ids: Vec<u32> = (0..ids).map(|i| PHANTOM_FIRST_ID + 3 * i).collect();
    let mut flood = PhantomFlood::new(ids, 100.0).expect("a flood");
    let mut hub = Hub::with_max_discovered(max_discovered);
    hub.adopt(1);
    for seq in 0..5 {
        hub.read(&encode(seq, HUB_NOW_MS), HUB_NOW_MS)
            .expect("adopted");
    }
    for i in 0..sent {
        let _ = hub.read(&flood.next_datagram(HUB_NOW_MS + i), HUB_NOW_MS);
    }
    let report = InjectedFaults {
        phantom_sent: flood.sent(),
        phantom_ids: flood.ids_used(),
        ..InjectedFaults::default()
    };
    (report, hub.counts())
}

#[test]
fn phantoms_fill_the_discovered_slots_and_the_rest_are_refused() {
    for (ids, sent, max_discovered) in [
        (10, 95, 64),
        (10, 95, 4),
        (10, 7, 4),
        (3, 3, 0),
        (64, 640, 64),
    ] {
        let (report, hub) = flood_hub(ids, sent, max_discovered);
        let context = format!("{ids} ids, {sent} sent, {max_discovered} slots");
        let free = max_discovered as u64;
        assert_eq!(report.phantom_sent, sent, "{context}");
        assert_eq!(hub.datagrams, 5 + sent, "{context}");
        assert_eq!(
            hub.dropped("discovered_limit"),
            report.phantom_refused(free),
            "{context}"
        );
        assert_eq!(
            hub.seq.received,
            5 + report.phantom_admitted(free),
            "{context}"
        );
        assert_eq!(hub.seq.lost + hub.seq.duplicated, 0, "{context}");
        assert_eq!(
            hub.discovered as u64,
            report.phantom_ids.min(free),
            "{context}"
        );
        assert_eq!(hub.devices, 1 + hub.discovered, "{context}");
    }
}
