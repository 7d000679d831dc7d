//! The injector's rules on hand-made streams, then its reports checked
//! against a copy of the hub's accounting over many seeds and specs.

use super::*;

#[path = "../../tests/support/hub_model.rs"]
mod hub_model;

use hub_model::{Counts, HubModel};

/// A test datagram: its sequence number and device time, little-endian.
fn encode(seq: u32, time_ms: u64) -> Vec<u8> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend_from_slice(&time_ms.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> (u32, u64) {
    let (seq, time) = bytes.split_at(4);
    let seq = u32::from_le_bytes(seq.try_into().expect("4 bytes"));
    let time = u64::from_le_bytes(time.try_into().expect("8 bytes"));
    (seq, time)
}

/// One device's run: what went on the wire, the report, and the reboots.
#[derive(Debug, PartialEq)]
struct Run {
    wire: Vec<(u32, u64)>,
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
    let (mut seq, mut time, mut reboots) = (0u32, 1_700_000_000_000u64, 0);
    let mut wire = Vec::new();
    for i in 0..len {
        if i > 0 && device.f64() < reboot {
            seq = 0;
            time += 1_000;
            reboots += 1;
        }
        let bytes = encode(seq, time);
        wire.extend(injector.push(seq, &bytes).datagrams().map(decode));
        seq = seq.wrapping_add(1);
        time += 5;
    }
    if injector.needs_final() {
        let bytes = encode(seq, time);
        wire.extend(injector.finish(seq, &bytes).datagrams().map(decode));
    }
    assert!(!injector.needs_final());
    Run {
        wire,
        report: injector.report(),
        reboots,
    }
}

fn hub_counts(wire: &[(u32, u64)]) -> Counts {
    let mut hub = HubModel::default();
    for &(seq, time) in wire {
        hub.observe(seq, time);
    }
    hub.counts
}

fn seqs(run: &Run) -> Vec<u32> {
    run.wire.iter().map(|&(seq, _)| seq).collect()
}

fn spec(loss: f64, reorder: f64, duplicate: f64) -> FaultSpec {
    FaultSpec::new(loss, reorder, duplicate).expect("a valid spec")
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
    assert_eq!(seqs(&run), [0, 2, 1, 4, 3, 6, 5]);
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
    assert_eq!(seqs(&run), [0, 1, 1, 2, 2, 3, 3]);
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
    let out: Vec<_> = injector.finish(4, &bytes).datagrams().map(decode).collect();
    assert_eq!(out, [(4, 0)]);
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
        let bytes = encode(seq, time);
        wire.extend(injector.push(seq, &bytes).datagrams().map(decode));
    }
    assert_eq!(wire, [(0, 10), (1, 20), (0, 2_000)]);
    assert_eq!(injector.report().reordered, 0);
    assert_eq!(injector.report().sent, 3);

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
    assert_eq!(seqs(&run), [0, step, 2 * step, 2_500]);
    assert_eq!(hub_counts(&run.wire).lost, run.report.lost);
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
fn out_of_range_probabilities_are_refused() {
    for (loss, reorder, duplicate) in [(-0.1, 0.0, 0.0), (0.0, 1.5, 0.0), (0.0, 0.0, f64::NAN)] {
        assert!(FaultSpec::new(loss, reorder, duplicate).is_err());
    }
    let err = FaultSpec::new(0.0, 2.0, 0.0).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "the reorder probability must be within 0..=1, not 2"
    );
    assert!(FaultSpec::new(0.0, 1.0, 1.0).is_ok());
    assert!(FaultSpec::NONE.is_none() && FaultSpec::default().is_none());
}

#[test]
fn reports_match_the_hub_exactly() {
    let mut pick = fastrand::Rng::with_seed(7);
    let (mut total, mut hub_total) = (InjectedFaults::default(), Counts::default());
    for seed in 0..2_000 {
        let faults = match seed % 5 {
            0 => spec(0.1, 0.1, 0.05),
            1 => spec(1.0, 1.0, 1.0),
            2 => spec(0.0, 1.0, 1.0),
            _ => spec(pick.f64(), pick.f64(), pick.f64()),
        };
        let len = pick.u32(1..400);
        let reboot = [0.0, 0.01, 0.2][pick.usize(..3)];
        let run = run(faults, seed, len, reboot);
        let hub = hub_counts(&run.wire);
        let context = format!("seed {seed}, {faults:?}, {len} datagrams");
        assert_eq!(hub.received, run.report.sent, "{context}");
        assert_eq!(hub.lost, run.report.lost, "{context}");
        assert_eq!(hub.reordered, run.report.reordered, "{context}");
        assert_eq!(hub.duplicated, run.report.duplicated, "{context}");
        assert_eq!(hub.restarts, run.reboots, "{context}");
        total.add(&run.report);
        hub_total.add(&hub);
    }
    assert!(
        total.lost > 0 && total.reordered > 0 && total.duplicated > 0,
        "{total:?}"
    );
    assert!(hub_total.restarts > 0, "{hub_total:?}");
}
