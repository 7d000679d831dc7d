//! The connection table's decisions with times passed in: admission and
//! every eviction order case, timeouts, and their counts.

use super::*;

const LIMITS: TableLimits = TableLimits {
    max_connections: 3,
    header_timeout_ms: 10_000,
    idle_timeout_ms: 60_000,
};

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 40_000))
}

/// A table with `stages.len()` connections admitted at 0, 1, 2… ms (ids
/// 1, 2, 3…), each then brought to its stage at 100 + its index ms.
fn table_with(stages: &[(Stage, bool)]) -> ConnectionTable {
    let mut t = ConnectionTable::new(TableLimits {
        max_connections: stages.len(),
        ..LIMITS
    });
    for i in 0..stages.len() as u64 {
        assert_eq!(t.admit(peer(1), i), Admission::Admit(i + 1));
    }
    for (i, &(stage, authenticated)) in stages.iter().enumerate() {
        let id = i as u64 + 1;
        let at = 100 + i as u64;
        match stage {
            Stage::Opening => {}
            Stage::Busy(_) => t.headers_complete(id, false, at),
            Stage::Idle => {
                t.headers_complete(id, false, at);
                assert!(t.request_done(id, authenticated, at));
            }
            Stage::Reading => {
                t.headers_complete(id, false, at);
                t.request_done(id, authenticated, at);
                t.bytes_arrived(id, at);
            }
            Stage::Upgraded => {
                t.headers_complete(id, false, at);
                t.upgraded(id);
            }
            Stage::Receiving => t.headers_complete(id, true, at),
            Stage::Closing => unreachable!("not a starting stage"),
        }
        if authenticated {
            t.authenticated(id);
        }
        assert_eq!(t.stage(id), Some(stage), "connection {id}");
    }
    t
}

#[test]
fn below_the_cap_every_connection_is_admitted_with_a_new_id() {
    let mut t = ConnectionTable::new(LIMITS);
    assert_eq!(t.admit(peer(1), 0), Admission::Admit(1));
    assert_eq!(t.admit(peer(2), 0), Admission::Admit(2));
    assert_eq!(t.admit(peer(1), 5), Admission::Admit(3));
    assert_eq!(t.open(), 3);
    assert_eq!(t.peer(2), Some(peer(2)));
    assert_eq!(t.stage(3), Some(Stage::Opening));
}

#[test]
fn when_full_the_oldest_connection_without_a_whole_head_goes_first() {
    // An idle unauthenticated connection (1) is older, but a connection
    // that never sent a whole head (2, then 3) goes before it.
    let mut t = table_with(&[
        (Stage::Idle, false),
        (Stage::Opening, false),
        (Stage::Opening, false),
    ]);
    assert_eq!(
        t.admit(peer(9), 200),
        Admission::AdmitEvicting { id: 4, victim: 2 }
    );
    assert_eq!(t.stage(2), Some(Stage::Closing));
    assert_eq!(
        t.admit(peer(9), 201),
        Admission::AdmitEvicting { id: 5, victim: 3 }
    );
    // The new connections (4, 5) are opening too, so they are next, oldest
    // first, still before the idle one.
    assert_eq!(
        t.admit(peer(9), 202),
        Admission::AdmitEvicting { id: 6, victim: 4 }
    );
    assert_eq!(t.closed_for(CloseReason::Evicted), 3);
}

#[test]
fn then_the_longest_idle_unauthenticated_connection_goes() {
    let mut t = table_with(&[
        (Stage::Idle, true),     // authenticated: stays
        (Stage::Busy(1), false), // busy: stays
        (Stage::Idle, false),    // idle since 102
        (Stage::Reading, false), // reading since 103: counts as idle
    ]);
    assert_eq!(
        t.admit(peer(9), 200),
        Admission::AdmitEvicting { id: 5, victim: 3 }
    );
    // Connection 5 is opening: it goes before the reading one.
    assert_eq!(
        t.admit(peer(9), 201),
        Admission::AdmitEvicting { id: 6, victim: 5 }
    );
}

#[test]
fn the_longest_idle_goes_first_not_the_oldest_connection() {
    let mut t = table_with(&[(Stage::Idle, false), (Stage::Idle, false)]);
    // Connection 1 answers a second request and is idle again, later than 2.
    t.headers_complete(1, false, 300);
    t.request_done(1, false, 301);
    assert_eq!(
        t.admit(peer(9), 400),
        Admission::AdmitEvicting { id: 3, victim: 2 }
    );
}

#[test]
fn when_every_connection_is_busy_upgraded_or_authenticated_the_new_one_is_refused() {
    let mut t = table_with(&[
        (Stage::Busy(1), false),
        (Stage::Upgraded, false),
        (Stage::Idle, true),
        (Stage::Reading, true),
    ]);
    assert_eq!(t.admit(peer(9), 200), Admission::Refuse);
    assert_eq!(t.admit(peer(9), 201), Admission::Refuse);
    assert_eq!(t.open(), 4);
    assert_eq!(t.closed_for(CloseReason::Refused), 2);
    // When one closes, there is room again.
    t.remove(2);
    assert_eq!(t.admit(peer(9), 202), Admission::Admit(5));
}

#[test]
fn a_request_answered_with_credentials_protects_the_connection() {
    let mut t = table_with(&[(Stage::Busy(1), false), (Stage::Opening, false)]);
    assert!(t.request_done(1, true, 200));
    t.headers_complete(2, false, 201);
    assert!(t.request_done(2, false, 202));
    // 1 is idle but authenticated: 2 goes although it was idle later.
    assert_eq!(
        t.admit(peer(9), 300),
        Admission::AdmitEvicting { id: 3, victim: 2 }
    );
}

#[test]
fn an_evicted_connection_is_not_chosen_twice_and_is_counted_until_removed() {
    let mut t = table_with(&[(Stage::Opening, false), (Stage::Busy(1), false)]);
    assert_eq!(
        t.admit(peer(9), 200),
        Admission::AdmitEvicting { id: 3, victim: 1 }
    );
    assert_eq!(t.open(), 3, "1 is closing, still open");
    assert_eq!(
        t.admit(peer(9), 201),
        Admission::AdmitEvicting { id: 4, victim: 3 }
    );
    t.remove(1);
    t.remove(3);
    assert_eq!(t.open(), 2);
    // Removing an id twice, or one never seen, changes nothing.
    t.remove(1);
    t.remove(99);
    assert_eq!(t.open(), 2);
}

#[test]
fn while_as_many_are_closing_as_the_cap_new_connections_are_refused() {
    let mut t = ConnectionTable::new(TableLimits {
        max_connections: 2,
        ..LIMITS
    });
    t.admit(peer(1), 0);
    t.admit(peer(1), 0);
    // Two evictions whose sockets have not closed yet.
    assert!(matches!(
        t.admit(peer(1), 1),
        Admission::AdmitEvicting { .. }
    ));
    assert!(matches!(
        t.admit(peer(1), 1),
        Admission::AdmitEvicting { .. }
    ));
    assert_eq!(t.admit(peer(1), 2), Admission::Refuse);
    assert_eq!(t.open(), 4, "bounded by twice the cap");
}

#[test]
fn a_connection_without_a_whole_head_times_out_from_its_accept() {
    let mut t = ConnectionTable::new(LIMITS);
    t.admit(peer(1), 1_000);
    t.admit(peer(1), 2_000);
    assert_eq!(t.next_deadline(), Some(11_000));
    assert_eq!(t.expire(10_999), []);
    assert_eq!(t.expire(11_000), [(1, CloseReason::HeaderTimeout)]);
    assert_eq!(t.stage(1), Some(Stage::Closing));
    // Reported once, though it stays until removed.
    assert_eq!(t.expire(11_500), []);
    assert_eq!(t.next_deadline(), Some(12_000));
    assert_eq!(t.closed_for(CloseReason::HeaderTimeout), 1);
}

#[test]
fn an_idle_connection_times_out_and_a_later_head_has_the_header_timeout() {
    let mut t = ConnectionTable::new(LIMITS);
    t.admit(peer(1), 0);
    t.admit(peer(1), 0);
    for id in [1, 2] {
        t.headers_complete(id, false, 100);
        t.request_done(id, false, 200);
    }
    assert_eq!(t.next_deadline(), Some(60_200));
    // Connection 2 starts its next request at 1 s and never finishes it.
    t.bytes_arrived(2, 1_000);
    assert_eq!(t.stage(2), Some(Stage::Reading));
    assert_eq!(t.next_deadline(), Some(11_000));
    assert_eq!(t.expire(11_000), [(2, CloseReason::HeaderTimeout)]);
    assert_eq!(t.expire(60_200), [(1, CloseReason::IdleTimeout)]);
    assert_eq!(t.closed_for(CloseReason::IdleTimeout), 1);
}

#[test]
fn busy_and_upgraded_connections_never_time_out() {
    let mut t = ConnectionTable::new(LIMITS);
    t.admit(peer(1), 0);
    t.admit(peer(1), 0);
    t.headers_complete(1, false, 10);
    t.headers_complete(2, false, 10);
    t.upgraded(2);
    // Bytes on a busy or upgraded connection change nothing.
    t.bytes_arrived(1, 20);
    t.bytes_arrived(2, 20);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.expire(u64::MAX), []);
    // Two requests in flight (pipelined): idle after both.
    t.headers_complete(1, false, 30);
    assert!(!t.request_done(1, false, 40));
    assert!(t.request_done(1, false, 50));
    assert_eq!(t.next_deadline(), Some(60_050));
}

#[test]
fn counts_are_kept_per_reason() {
    let mut t = table_with(&[(Stage::Opening, false), (Stage::Busy(1), false)]);
    t.admit(peer(9), 200); // evicts 1
    t.admit(peer(9), 201); // evicts 3
    t.remove(1);
    t.remove(3);
    t.headers_complete(4, false, 300);
    assert_eq!(t.admit(peer(9), 301), Admission::Refuse);
    t.expire(100_000); // nothing: both busy
    let counts: Vec<(&str, u64)> = t.closed().map(|(r, n)| (r.name(), n)).collect();
    assert_eq!(
        counts,
        [
            ("header_timeout", 0),
            ("body_timeout", 0),
            ("idle_timeout", 0),
            ("evicted", 2),
            ("refused", 1)
        ]
    );
}

#[test]
fn a_body_must_arrive_within_the_header_timeout_of_its_head() {
    let mut t = ConnectionTable::new(LIMITS);
    t.admit(peer(1), 0);
    t.admit(peer(1), 0);
    t.headers_complete(1, true, 1_000);
    t.headers_complete(2, true, 1_000);
    assert_eq!(t.stage(1), Some(Stage::Receiving));
    // 2's body arrives: it is busy, with no deadline.
    t.body_done(2, 1_500);
    assert_eq!(t.stage(2), Some(Stage::Busy(1)));
    assert_eq!(t.next_deadline(), Some(11_000));
    assert_eq!(t.expire(11_000), [(1, CloseReason::BodyTimeout)]);
    assert_eq!(t.closed_for(CloseReason::BodyTimeout), 1);
    // A request answered before its body was read leaves it idle.
    t.admit(peer(1), 12_000);
    t.headers_complete(3, true, 12_000);
    assert!(t.request_done(3, false, 12_100));
    assert_eq!(t.stage(3), Some(Stage::Idle));
}

#[test]
fn a_connection_trickling_a_body_is_evicted_like_an_idle_one() {
    let mut t = table_with(&[
        (Stage::Busy(1), false),
        (Stage::Receiving, true), // authenticated: stays
        (Stage::Receiving, false),
    ]);
    assert_eq!(
        t.admit(peer(9), 200),
        Admission::AdmitEvicting { id: 4, victim: 3 }
    );
}
