//! Sequence accounting: hand-made cases, then property tests against a
//! model that computes the counts from the whole delivery at once.

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn run(deliveries: &[(u32, u64)]) -> SeqCounts {
    let mut t = SeqTracker::default();
    for &(seq, time) in deliveries {
        t.observe(seq, time);
    }
    *t.counts()
}

#[test]
fn in_order_stream_has_no_loss() {
    let c = run(&(0..100).map(|s| (s, u64::from(s) * 10)).collect::<Vec<_>>());
    assert_eq!(
        c,
        SeqCounts {
            received: 100,
            ..Default::default()
        }
    );
}

#[test]
fn gap_is_lost_until_the_missing_one_arrives_late() {
    let mut t = SeqTracker::default();
    t.observe(0, 0);
    assert_eq!(t.observe(3, 30), SeqVerdict::InOrder { skipped: 2 });
    assert_eq!(t.counts().lost, 2);
    assert_eq!(t.observe(1, 10), SeqVerdict::Reordered);
    assert_eq!(t.counts().lost, 1);
    assert_eq!(t.observe(1, 10), SeqVerdict::Duplicate);
    assert_eq!(t.observe(3, 30), SeqVerdict::Duplicate);
    let c = t.counts();
    assert_eq!(
        (c.received, c.lost, c.reordered, c.duplicated),
        (5, 1, 1, 2)
    );
}

#[test]
fn wrap_around_is_continuous() {
    let c = run(&[(u32::MAX - 1, 1), (u32::MAX, 2), (0, 3), (2, 5), (1, 4)]);
    assert_eq!(
        (c.lost, c.reordered, c.duplicated, c.restarts),
        (0, 1, 0, 0)
    );
}

#[test]
fn reboot_restarts_without_counting_loss() {
    let mut t = SeqTracker::default();
    for s in 0..500 {
        t.observe(s, 1_000 + u64::from(s));
    }
    // Rebooted: back to 0, with a newer clock.
    assert_eq!(t.observe(0, 5_000), SeqVerdict::Restart);
    for s in 1..10 {
        assert_eq!(
            t.observe(s, 5_000 + u64::from(s)),
            SeqVerdict::InOrder { skipped: 0 }
        );
    }
    let c = t.counts();
    assert_eq!(
        (c.lost, c.reordered, c.duplicated, c.restarts),
        (0, 0, 0, 1)
    );
    // A late copy from before the reboot, numbered within the new epoch's
    // range, is old news: not a restart.
    assert_eq!(t.observe(3, 1_003), SeqVerdict::Duplicate);
    assert_eq!(t.counts().restarts, 1);
}

#[test]
fn huge_forward_jump_with_newer_clock_is_a_restart() {
    let c = run(&[(5, 1), (6, 2), (3_000_000, 3)]);
    assert_eq!((c.lost, c.restarts), (0, 1));
    // Within MAX_GAP it is loss.
    let c = run(&[(5, 1), (5 + MAX_GAP, 2)]);
    assert_eq!((c.lost, c.restarts), (u64::from(MAX_GAP) - 1, 0));
}

#[test]
fn arrivals_before_the_first_one_are_late_not_negative_loss() {
    let c = run(&[(10, 10), (9, 9), (8, 8), (11, 11)]);
    assert_eq!((c.lost, c.reordered), (0, 2));
}

#[test]
fn shifting_keeps_bits_across_words() {
    let mut t = SeqTracker::default();
    t.observe(0, 0);
    t.observe(70, 70); // bit for 0 moves to position 70 (second word)
    assert_eq!(t.observe(0, 0), SeqVerdict::Duplicate);
    t.observe(200, 200);
    assert_eq!(t.observe(70, 70), SeqVerdict::Duplicate);
    assert_eq!(t.observe(69, 69), SeqVerdict::Reordered);
    t.observe(200 + REORDER_WINDOW, 5_000);
    // 69 fell out of the window: counted late without touching loss.
    let lost = t.counts().lost;
    assert_eq!(t.observe(69, 69), SeqVerdict::Reordered);
    assert_eq!(t.counts().lost, lost);
}

#[test]
fn loss_ratio_counts_unique_datagrams() {
    let c = SeqCounts {
        received: 12,
        duplicated: 2,
        lost: 10,
        ..Default::default()
    };
    assert!((c.loss_ratio() - 0.5).abs() < 1e-9);
    assert_eq!(SeqCounts::default().loss_ratio(), 0.0);
}

/// The model: counts computed from the whole delivery (seqs unwrapped).
fn model(delivered: &[u64]) -> SeqCounts {
    let mut c = SeqCounts::default();
    let mut seen = HashSet::new();
    let mut max = None::<u64>;
    for &s in delivered {
        c.received += 1;
        if !seen.insert(s) {
            c.duplicated += 1;
            continue;
        }
        if max.is_some_and(|m| s < m) {
            c.reordered += 1;
        }
        max = Some(max.map_or(s, |m| m.max(s)));
    }
    if let (Some(&first), Some(max)) = (delivered.first(), max) {
        let in_range = seen.iter().filter(|&&s| s >= first).count() as u64;
        c.lost = max - first + 1 - in_range;
    }
    c
}

/// A delivery of `n` datagrams with loss, duplication and local reordering.
fn delivery() -> impl Strategy<Value = (u32, Vec<u64>)> {
    (
        any::<u32>(),
        proptest::collection::vec((0u8..100, 0u8..100, 0u8..100), 1..400),
    )
        .prop_map(|(base, fates)| {
            let mut out: Vec<u64> = Vec::new();
            for (seq, (lose, dup, swap)) in fates.into_iter().enumerate() {
                let seq = seq as u64;
                if lose < 10 {
                    continue;
                }
                out.push(seq);
                if dup < 5 {
                    out.push(seq);
                }
                if swap < 15 && out.len() >= 2 {
                    let n = out.len();
                    out.swap(n - 1, n - 2);
                }
            }
            (base, out)
        })
        .prop_filter("something delivered", |(_, out)| !out.is_empty())
}

proptest! {
    #[test]
    fn tracker_matches_the_model((base, delivered) in delivery()) {
        let mut t = SeqTracker::default();
        for &s in &delivered {
            // Device time follows the send order; sequence numbers wrap.
            t.observe(base.wrapping_add(s as u32), 1_000_000 + s);
        }
        prop_assert_eq!(*t.counts(), model(&delivered));
    }

    #[test]
    fn reboot_in_the_middle_counts_each_epoch_on_its_own(
        (_, first) in delivery(),
        (_, mut second) in delivery(),
    ) {
        // A rebooted device starts again at 0, and that datagram arrives.
        if second.first() != Some(&0) {
            second.insert(0, 0);
        }
        let mut t = SeqTracker::default();
        for &s in &first {
            t.observe(s as u32, 1_000 + s);
        }
        let reboot_time = 1_000_000;
        prop_assert_eq!(t.observe(0, reboot_time), SeqVerdict::Restart);
        for &s in &second[1..] {
            t.observe(s as u32, reboot_time + s);
        }
        let mut expected = model(&first);
        expected.add(&model(&second));
        expected.restarts = 1;
        prop_assert_eq!(*t.counts(), expected);
    }
}
