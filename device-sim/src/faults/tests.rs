//! The injector's rules on hand-made streams, then its reports checked
//! against the real hub's ingest core (sensor-hub's `HubState`, through
//! `tests/support/real_hub.rs`) over many seeds and specs. Datagrams are
//! real v1 datagrams, so a corrupted one meets the hub's own decoder.
//! Devices with a key, and the phantom flood, are in `tests/keyed.rs`.

use super::*;

#[path = "../../tests/support/real_hub.rs"]
mod real_hub;

mod keyed;

use real_hub::{hub_accounting, Counts, HubCounts};
use sensor_hub_protocol::{
    encode_datagram, restore_time_ms, Datagram, Reading, Readings, Value, MAX_DATAGRAM_LEN,
};

/// The hub's clock in these tests; device times are a little after it.
const HUB_NOW_MS: u64 = 1_700_000_000_000;

/// A v1 datagram of device 1 with two readings.
fn encode(seq: u32, time_ms: u64) -> Vec<u8> {
    let mut readings = Readings::new();
    for (channel, value) in [(0, Value::F32(21.5)), (1, Value::Bool(seq % 2 == 0))] {
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
    let bytes = encode_datagram(&datagram, &mut buf).expect("fits");
    bytes.to_vec()
}

/// Sequence number and time of an intact datagram, as a hub reads it.
fn intact(bytes: &[u8]) -> (u32, u64) {
    let (verdicts, _) = hub_accounting(&[bytes.to_vec()], HUB_NOW_MS);
    let accepted = verdicts[0].expect("an intact datagram");
    (accepted.seq, accepted.time_ms)
}

/// One device's run: what went on the wire, the report, and the reboots.
#[derive(Debug, PartialEq)]
struct Run {
    wire: Vec<Vec<u8>>,
    report: InjectedFaults,
    reboots: u64,
}

/// Feeds `len` datagrams 5 ms apart through an injector; before each one
/// (but the first) the device reboots with probability `reboot`: its
/// sequence restarts at 0 and its clock is a second further on. Ends the
/// run with a final datagram if the injector asks for one.
fn run(spec: FaultSpec, seed: u64, len: u32, reboot: f64) -> Run {
    let mut injector = FaultInjector::new(spec, seed);
    let mut device = fastrand::Rng::with_seed(seed ^ 0xD1CE);
    let (mut seq, mut time, mut reboots) = (0u32, HUB_NOW_MS, 0);
    let mut wire = Vec::new();
    for i in 0..len {
        if i > 0 && device.f64() < reboot {
            seq = 0;
            time += 1_000;
            reboots += 1;
        }
        let bytes = encode(seq, time);
        wire.extend(injector.push(seq, &bytes).datagrams().map(<[u8]>::to_vec));
        seq = seq.wrapping_add(1);
        time += 5;
    }
    if injector.needs_final() {
        let bytes = encode(seq, time);
        wire.extend(injector.finish(seq, &bytes).datagrams().map(<[u8]>::to_vec));
    }
    assert!(!injector.needs_final());
    Run {
        wire,
        report: injector.report(),
        reboots,
    }
}

/// What the hub counts of a run's wire.
fn hub(wire: &[Vec<u8>]) -> HubCounts {
    hub_accounting(wire, HUB_NOW_MS).1
}

/// What the hub made of each datagram on the wire: its sequence number,
/// or the reason it was dropped.
fn seqs(run: &Run) -> Vec<Result<u32, &'static str>> {
    let (verdicts, _) = hub_accounting(&run.wire, HUB_NOW_MS);
    verdicts
        .into_iter()
        .map(|verdict| verdict.map(|accepted| accepted.seq))
        .collect()
}

fn ok(seqs: &[u32]) -> Vec<Result<u32, &'static str>> {
    seqs.iter().map(|&seq| Ok(seq)).collect()
}

fn spec(loss: f64, reorder: f64, duplicate: f64) -> FaultSpec {
    FaultSpec::new(loss, reorder, duplicate).expect("a valid spec")
}

fn corrupting(corrupt: f64) -> FaultSpec {
    FaultSpec {
        corrupt,
        ..FaultSpec::NONE
    }
}

/// Asserts that the hub counts exactly what `run` reports; returns its
/// sequence counts.
fn assert_hub_agrees(run: &Run, context: &str) -> Counts {
    let hub = hub(&run.wire);
    let counts = hub.seq;
    let report = run.report;
    assert_eq!(hub.datagrams, report.on_wire(), "{context}");
    assert_eq!(counts.received, report.sent, "{context}");
    assert_eq!(counts.lost, report.lost, "{context}");
    assert_eq!(counts.reordered, report.reordered, "{context}");
    assert_eq!(counts.duplicated, report.duplicated, "{context}");
    assert_eq!(counts.restarts, report.restarts, "{context}");
    for kind in Corruption::ALL {
        let reason = kind.reason();
        assert_eq!(
            hub.dropped(reason),
            report.corrupted.get(kind),
            "{reason}: {context}"
        );
    }
    assert_eq!(hub.dropped("oversized"), 0, "{context}");
    counts
}

#[test]
fn without_faults_everything_passes_through_untouched() {
    let mut injector = FaultInjector::new(FaultSpec::NONE, 3);
    for seq in 0..500u32 {
        let bytes = encode(seq, u64::from(seq));
        let out = injector.push(seq, &bytes);
        assert_eq!(out.datagrams().collect::<Vec<_>>(), [bytes.as_slice()]);
    }
    assert!(!injector.needs_final());
    assert_eq!(
        injector.report(),
        InjectedFaults {
            sent: 500,
            ..InjectedFaults::default()
        }
    );
}

#[test]
fn a_held_datagram_follows_the_next_one() {
    let run = run(spec(0.0, 1.0, 0.0), 1, 6, 0.0);
    // 0 opens the epoch; 5 is held until the final datagram 6.
    assert_eq!(seqs(&run), ok(&[0, 2, 1, 4, 3, 6, 5]));
    let expected = InjectedFaults {
        sent: 7,
        reordered: 3,
        ..InjectedFaults::default()
    };
    assert_eq!(run.report, expected);
}

#[test]
fn duplicates_go_out_back_to_back() {
    let run = run(spec(0.0, 0.0, 1.0), 1, 4, 0.0);
    assert_eq!(seqs(&run), ok(&[0, 1, 1, 2, 2, 3, 3]));
    assert_eq!(run.report.duplicated, 3);
    assert_eq!(run.report.sent, 7);
}

#[test]
fn drops_count_once_a_later_datagram_shows_them() {
    let mut injector = FaultInjector::new(spec(1.0, 0.0, 0.0), 1);
    for seq in 0..4u32 {
        let bytes = encode(seq, 0);
        injector.push(seq, &bytes);
    }
    assert_eq!(injector.report().lost, 0, "not visible yet");
    assert!(injector.needs_final());
    let bytes = encode(4, 0);
    let out: Vec<_> = injector.finish(4, &bytes).datagrams().map(intact).collect();
    assert_eq!(out, [(4, restore_time_ms(0, HUB_NOW_MS))]);
    let expected = InjectedFaults {
        sent: 2,
        lost: 3,
        ..InjectedFaults::default()
    };
    assert_eq!(injector.report(), expected);
}

#[test]
fn drops_before_a_reboot_are_forgotten_and_a_held_one_is_flushed_in_order() {
    let mut injector = FaultInjector::new(spec(0.0, 1.0, 0.0), 1);
    let mut wire = Vec::new();
    // 0 opens the epoch, 1 is held; the reboot restarts at 0.
    for (seq, time) in [(0, 10), (1, 20), (0, 2_000), (1, 2_010)] {
        let bytes = encode(seq, HUB_NOW_MS + time);
        wire.extend(injector.push(seq, &bytes).datagrams().map(intact));
    }
    let at = |ms| HUB_NOW_MS + ms;
    assert_eq!(wire, [(0, at(10)), (1, at(20)), (0, at(2_000))]);
    assert_eq!(injector.report().reordered, 0);
    assert_eq!(injector.report().sent, 3);
    assert_eq!(injector.report().restarts, 1);

    let mut injector = FaultInjector::new(spec(1.0, 0.0, 0.0), 1);
    for (seq, time) in [(0, 10), (1, 20), (2, 30), (0, 2_000)] {
        let bytes = encode(seq, time);
        injector.push(seq, &bytes);
    }
    assert!(!injector.needs_final());
    assert_eq!(injector.report().lost, 0);
}

#[test]
fn a_run_of_drops_is_cut_short() {
    let run = run(spec(1.0, 0.0, 0.0), 1, 2_500, 0.0);
    let step = MAX_LOSS_RUN + 1;
    assert_eq!(seqs(&run), ok(&[0, step, 2 * step, 2_500]));
    assert_eq!(hub(&run.wire).seq.lost, run.report.lost);
}

#[test]
fn the_same_seed_gives_the_same_faults() {
    let faults = spec(0.2, 0.2, 0.2);
    assert_eq!(run(faults, 42, 300, 0.01), run(faults, 42, 300, 0.01));
    assert_ne!(run(faults, 42, 300, 0.0), run(faults, 43, 300, 0.0));
    assert_ne!(injector_seed(1, 1), injector_seed(1, 2));
    assert_ne!(injector_seed(1, 1), injector_seed(2, 1));
}

#[test]
fn corrupted_datagrams_take_turns_with_the_four_drop_reasons() {
    // Seed 4 starts its turns at the first kind (seed 5 at the second).
    let run = run(corrupting(1.0), 4, 9, 0.0);
    // 0 opens the epoch; 1..=8 are corrupted in turn; the final 9 shows
    // the hub that 8 numbers are missing.
    let reasons = ["truncated", "bad_magic", "bad_version", "undecodable"];
    let mut expected = vec![Ok(0)];
    expected.extend(reasons.iter().chain(&reasons).map(|&r| Err(r)));
    expected.push(Ok(9));
    assert_eq!(seqs(&run), expected);
    let report = run.report;
    assert_eq!(
        report.corrupted,
        CorruptedCounts {
            truncated: 2,
            bad_magic: 2,
            bad_version: 2,
            undecodable: 2,
        }
    );
    assert_eq!((report.sent, report.lost, report.on_wire()), (2, 8, 10));
    assert_hub_agrees(&run, "every datagram corrupted");
}

#[test]
fn devices_start_their_turns_at_different_kinds() {
    let first_reason = |seed| {
        let run = run(corrupting(1.0), seed, 2, 0.0);
        seqs(&run)[1]
    };
    assert_eq!(first_reason(4), Err("truncated"));
    assert_eq!(first_reason(5), Err("bad_magic"));
    assert_eq!(first_reason(6), Err("bad_version"));
    assert_eq!(first_reason(7), Err("undecodable"));
}

#[test]
fn a_corruption_counts_at_once_but_its_loss_only_once_visible() {
    let mut injector = FaultInjector::new(corrupting(1.0), 5);
    for seq in 0..3u32 {
        let bytes = encode(seq, HUB_NOW_MS);
        injector.push(seq, &bytes);
    }
    let report = injector.report();
    assert_eq!((report.corrupted.total(), report.lost), (2, 0));
    assert!(injector.needs_final());
    // A reboot: the hub never learns those two were lost.
    let bytes = encode(0, HUB_NOW_MS + 1_000);
    let out: Vec<_> = injector.push(0, &bytes).datagrams().map(intact).collect();
    assert_eq!(out.len(), 1);
    let report = injector.report();
    assert_eq!((report.corrupted.total(), report.lost), (2, 0));
    assert_eq!(report.restarts, 1);
    assert!(!injector.needs_final());
}

#[test]
fn restarts_are_new_epochs_after_the_first() {
    let mut injector = FaultInjector::new(FaultSpec::NONE, 1);
    for (seq, time) in [(0, 0), (1, 1), (0, 10), (0, 20), (1, 21), (5, 30), (6, 31)] {
        let bytes = encode(seq, HUB_NOW_MS + time);
        injector.push(seq, &bytes);
    }
    assert_eq!(injector.report().restarts, 3);
}

#[test]
fn reports_match_the_hub_exactly() {
    let mut pick = fastrand::Rng::with_seed(7);
    let (mut total, mut hub_total) = (InjectedFaults::default(), Counts::default());
    for seed in 0..2_000 {
        let mut faults = match seed % 5 {
            0 => spec(0.1, 0.1, 0.05),
            1 => spec(1.0, 1.0, 1.0),
            2 => spec(0.0, 1.0, 1.0),
            _ => spec(pick.f64(), pick.f64(), pick.f64()),
        };
        faults.corrupt = [0.0, 0.05, 0.5, 1.0][pick.usize(..4)];
        let len = pick.u32(1..400);
        let reboot = [0.0, 0.01, 0.2][pick.usize(..3)];
        let run = run(faults, seed, len, reboot);
        let context = format!("seed {seed}, {faults:?}, {len} datagrams");
        let counts = assert_hub_agrees(&run, &context);
        // Every reboot is followed by a datagram here, so each is a restart.
        assert_eq!(run.report.restarts, run.reboots, "{context}");
        total.add(&run.report);
        hub_total.add(&counts);
    }
    assert!(
        total.lost > 0 && total.reordered > 0 && total.duplicated > 0,
        "{total:?}"
    );
    assert!(
        Corruption::ALL
            .iter()
            .all(|&kind| total.corrupted.get(kind) > 0),
        "{total:?}"
    );
    assert!(hub_total.restarts > 0, "{hub_total:?}");
}
