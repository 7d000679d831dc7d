//! Cluster mode against a real Redis: several real `sensor-hub run`
//! processes share one fleet through Redis (`[cluster]`). Checked here:
//! fleets on two hubs reach a client of the third exactly once, in order,
//! with the cluster's epoch and the same event `seq` on every hub; a
//! client resumes on another hub after its hub is SIGKILLed, without a
//! gap or a repeat, while the devices fail over; a Redis restart under
//! load degrades `/healthz`, keeps each hub streaming its own devices, and
//! loses nothing that was not counted as unshared; a command submitted on
//! one hub runs on the hub holding the device's control session.
//!
//! Each test runs its own Redis (Debian package `redis-server`, see
//! tests/cluster_support) and three hubs "a", "b", "c" with a key prefix
//! of its own. The first test checks the harness's Redis alone.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod cluster_support;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use cluster_support::{
    datagrams, tail, ClusterHub, Dg, Entry, Fleet, Recorder, RedisServer, ResumeAnswer, Seen,
};
use serde_json::{json, Value as Json};
use tokio::time::{sleep, sleep_until, Instant};

/// Counters of every hub (docs/METRICS.md).
const ACCEPTED: &str = "sensor_hub_udp_datagrams_accepted_total";
const DUPLICATED: &str = "sensor_hub_udp_datagrams_duplicated_total";
const LINK_UP: &str = "sensor_hub_cluster_link_up";
const LINK_LOSSES: &str = "sensor_hub_cluster_link_losses_total";
const EVENTS_SHARED: &str = "sensor_hub_cluster_events_shared_total";
const EVENTS_SHARED_LATE: &str = "sensor_hub_cluster_events_shared_late_total";
const EVENTS_UNSHARED: &str = "sensor_hub_cluster_events_unshared_total";
const DATAGRAMS_UNSHARED: &str = "sensor_hub_cluster_datagrams_unshared_total";
const EVENTS_RECEIVED: &str = "sensor_hub_cluster_events_received_total";

/// Report interval of the simulated devices.
const INTERVAL_MS: u64 = 50;

// --- helpers -------------------------------------------------------------------

/// A key prefix of this test alone.
fn prefix(test: &str) -> String {
    format!("sensor-hub-test-{}-{test}", std::process::id())
}

/// Hubs "a", "b" and "c" on `redis`, started together.
async fn three_hubs(redis: &RedisServer, prefix: &str) -> (ClusterHub, ClusterHub, ClusterHub) {
    tokio::join!(
        ClusterHub::start("a", redis, prefix, &[]),
        ClusterHub::start("b", redis, prefix, &[]),
        ClusterHub::start("c", redis, prefix, &[]),
    )
}

/// Polls `check` every 100 ms until it is `Ok`, for up to `deadline`;
/// panics with its last `Err` (what it saw) otherwise.
async fn within<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let end = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(why) => why,
        };
        if Instant::now() > end {
            panic!("within {deadline:?}, not: {what}\nlast seen: {last}");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Samples `sample` every 250 ms until `done` holds or the sample has not
/// changed for 2 s (15 s at most); returns the last sample. For "let things
/// settle": the caller asserts on what it returns.
async fn settle<T, F, Fut>(what: &str, mut sample: F, done: impl Fn(&T) -> bool) -> T
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let end = Instant::now() + Duration::from_secs(15);
    let mut last = sample().await;
    let mut since = Instant::now();
    loop {
        if done(&last) || since.elapsed() >= Duration::from_secs(2) {
            return last;
        }
        if Instant::now() > end {
            eprintln!("{what}: still changing after 15 s: {last:?}");
            return last;
        }
        sleep(Duration::from_millis(250)).await;
        let now = sample().await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Datagrams `hub` accepted minus the duplicates among them: what it
/// streams.
async fn streamed(hub: &ClusterHub) -> u64 {
    hub.metric(ACCEPTED).await - hub.metric(DUPLICATED).await
}

/// Device id → its `hub` in `GET /api/devices` (`None`: no such field or
/// not a string).
async fn device_hubs(hub: &ClusterHub) -> BTreeMap<u32, Option<String>> {
    hub.devices()
        .await
        .iter()
        .map(|d| {
            (
                d["id"].as_u64().unwrap() as u32,
                d["hub"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Device ids in the `readings` of `entries`.
fn devices_in(entries: &[Entry]) -> BTreeSet<u32> {
    datagrams(entries).iter().map(|s| s.dg.device).collect()
}

/// (device, seq) pairs seen more than once, with how often.
fn repeated(seen: &[Seen]) -> Vec<(Dg, usize)> {
    let mut counts: BTreeMap<Dg, usize> = BTreeMap::new();
    for s in seen {
        *counts.entry(s.dg).or_default() += 1;
    }
    counts.into_iter().filter(|&(_, n)| n > 1).collect()
}

/// Datagrams whose sequence number did not increase over the previous one
/// of the same device, in arrival order.
fn out_of_order(seen: &[Seen]) -> Vec<String> {
    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut wrong = Vec::new();
    for s in seen {
        if let Some(&before) = last.get(&s.dg.device) {
            if s.dg.seq <= before {
                wrong.push(format!(
                    "device {} seq {} after seq {before} (event {})",
                    s.dg.device, s.dg.seq, s.event_seq
                ));
            }
        }
        last.insert(s.dg.device, s.dg.seq);
    }
    wrong
}

/// Events whose `seq` did not increase over the previous event's.
fn event_seqs_not_increasing(entries: &[Entry]) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut last: Option<(usize, u64)> = None;
    for (i, e) in entries.iter().enumerate() {
        let Some(seq) = e.event_seq() else { continue };
        if let Some((j, before)) = last {
            if seq <= before {
                wrong.push(format!("[{i}] seq {seq} after [{j}] seq {before}"));
            }
        }
        last = Some((i, seq));
    }
    wrong
}

/// `GET /healthz` is 200 `{"status":"ok","cluster":{"link":"up",…}}`.
async fn linked(hub: &ClusterHub) -> Result<(), String> {
    match hub.healthz().await {
        Some((200, v)) if v["status"] == "ok" && v["cluster"]["link"] == "up" => Ok(()),
        other => Err(format!("hub {}: /healthz {other:?}", hub.name)),
    }
}

/// For the first few datagrams of `missing` (seen by the reference record
/// `rec2`, not by `rec1`): the event that carried them on `rec2`, and what
/// `rec1` had under that event `seq`, if anything (a dropped event, or its
/// datagrams under another `seq`).
fn where_missing(
    missing: &BTreeSet<&Dg>,
    seen2: &[Seen],
    rec1: &[Entry],
    rec2: &[Entry],
) -> String {
    let mut lines = Vec::new();
    for s in seen2.iter().filter(|s| missing.contains(&s.dg)).take(8) {
        let on1 = rec1.iter().enumerate().find_map(|(i, e)| match e {
            Entry::Readings { seq, datagrams } if *seq == s.event_seq => {
                Some(format!("[{i}] {}", fmt_dgs(datagrams)))
            }
            _ => None,
        });
        lines.push(format!(
            "  {}#{}: event {} at [{}] of the reference ({}); the other record under that seq: {}",
            s.dg.device,
            s.dg.seq,
            s.event_seq,
            s.index,
            match &rec2[s.index] {
                Entry::Readings { datagrams, .. } => fmt_dgs(datagrams),
                other => format!("{other:?}"),
            },
            on1.unwrap_or_else(|| "nothing".into())
        ));
    }
    lines.join("\n")
}

fn fmt_dgs<'a>(dgs: impl IntoIterator<Item = &'a Dg>) -> String {
    let all: Vec<String> = dgs
        .into_iter()
        .map(|d| format!("{}#{}", d.device, d.seq))
        .collect();
    let shown: Vec<&str> = all.iter().take(40).map(String::as_str).collect();
    format!(
        "{} in all: {}{}",
        all.len(),
        shown.join(" "),
        if all.len() > 40 { " …" } else { "" }
    )
}

// --- the harness ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_keeps_its_streams_across_a_restart() {
    let mut redis = RedisServer::start();
    assert_ne!(redis.port(), 0);
    assert!(redis.url().starts_with("redis://:"), "{}", redis.url());
    // A password is required.
    let open = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port()).as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("GET").arg("x").query::<redis::Value>(&mut c));
    assert!(
        open.is_err(),
        "Redis answered without the password: {open:?}"
    );
    for i in 0..100 {
        redis.cmd(&["XADD", "harness:stream", "*", "i", &i.to_string()]);
    }
    redis.cmd(&["SET", "harness:key", "kept"]);
    assert!(redis.used_memory() > 0);
    assert!(redis.pid() > 0);
    let _ = redis.cpu_ms();
    let port = redis.port();

    // SIGTERM and again: everything is back, on the same port.
    redis.stop();
    assert!(redis.try_cmd(&["PING"]).is_err(), "stopped, yet answering");
    redis.start_again();
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.cmd(&["XLEN", "harness:stream"]),
        redis::Value::Int(100)
    );
    assert_eq!(
        cluster_support::value_text(&redis.cmd(&["GET", "harness:key"])),
        "kept"
    );

    // SIGKILL: with appendfsync always, every write that was answered is
    // in the append-only file.
    redis.cmd(&["XADD", "harness:stream", "*", "i", "100"]);
    redis.kill();
    redis.start_again();
    assert_eq!(
        redis.cmd(&["XLEN", "harness:stream"]),
        redis::Value::Int(101)
    );
    assert_eq!(
        redis.keys("harness:"),
        ["harness:key".to_string(), "harness:stream".to_string()]
    );
}

// --- the contract ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_on_two_hubs_reach_a_client_on_the_third() {
    let redis = RedisServer::start();
    // Every event its own message: this test checks that a datagram is in
    // the event of the same position on every hub, which a message merging
    // several events (it carries the last one's position) would hide.
    let prefix = prefix("fleets");
    let one_per_event = [("SENSOR_HUB__WS__COALESCE_MS", "0")];
    let (a, b, c) = tokio::join!(
        ClusterHub::start("a", &redis, &prefix, &one_per_event),
        ClusterHub::start("b", &redis, &prefix, &one_per_event),
        ClusterHub::start("c", &redis, &prefix, &one_per_event),
    );
    for hub in [&a, &b, &c] {
        within(
            "/healthz ok with the cluster link up",
            Duration::from_secs(10),
            || linked(hub),
        )
        .await;
    }
    let on_c = Recorder::start(&c).await;
    let on_a = Recorder::start(&a).await;
    // One epoch, the cluster's, on every hub.
    let mut ws_b = b.ws().await;
    let hello_b = support::next_json(&mut ws_b).await;
    drop(ws_b);
    let epoch = on_c.hello_epoch().unwrap();
    assert_eq!(on_c.snapshot_epoch().unwrap(), epoch, "{}", on_c.report(5));
    assert_eq!(
        on_a.hello_epoch().unwrap(),
        epoch,
        "hub a's hello: {}",
        on_a.report(5)
    );
    assert_eq!(on_a.snapshot_epoch().unwrap(), epoch, "{}", on_a.report(5));
    assert_eq!(hello_b["epoch"], epoch.as_str(), "hub b's hello: {hello_b}");

    let fleet_a = Fleet::start(&a, 1, 5, INTERVAL_MS);
    let fleet_b = Fleet::start(&b, 101, 5, INTERVAL_MS);
    let started = Instant::now();
    let fleet_ids: BTreeSet<u32> = (1..=5).chain(101..=105).collect();
    // While their sessions are open: C lists each device with the hub
    // holding its control session.
    let expected: BTreeMap<u32, Option<String>> = (1..=5)
        .map(|id| (id, Some("a".to_string())))
        .chain((101..=105).map(|id| (id, Some("b".to_string()))))
        .collect();
    within(
        "C's /api/devices lists 1..=5 with hub \"a\" and 101..=105 with hub \"b\"",
        Duration::from_secs(15),
        || async {
            let hubs = device_hubs(&c).await;
            if hubs == expected {
                Ok(())
            } else {
                Err(format!("{hubs:?}"))
            }
        },
    )
    .await;
    on_c.wait_for(
        "readings of all ten devices",
        Duration::from_secs(15),
        |e| devices_in(e) == fleet_ids,
    )
    .await;
    sleep_until(started + Duration::from_secs(5)).await;
    assert!(fleet_a.is_running() && fleet_b.is_running());
    let stats_a = fleet_a.stop().await;
    let stats_b = fleet_b.stop().await;
    eprintln!("fleet on a: {stats_a:?}\nfleet on b: {stats_b:?}");

    // Settled: C's record no longer grows and A's and B's counters are
    // still (or C has exactly what they streamed).
    let (got, on_a_hub, on_b_hub) = settle(
        "C's record and A's and B's accepted datagrams",
        || async {
            (
                on_c.datagram_count() as u64,
                streamed(&a).await,
                streamed(&b).await,
            )
        },
        |&(got, x, y)| got == x + y,
    )
    .await;

    let record = on_c.entries();
    let seen = datagrams(&record);
    let twice = repeated(&seen);
    assert!(
        twice.is_empty(),
        "datagrams C received more than once: {twice:?}\n{}",
        tail(&record, 40)
    );
    let disorder = out_of_order(&seen);
    assert!(
        disorder.is_empty(),
        "per device, C's datagram seqs do not increase in arrival order:\n{}",
        disorder.join("\n")
    );
    let seqs = event_seqs_not_increasing(&record);
    assert!(
        seqs.is_empty(),
        "C's event seqs do not increase:\n{}",
        seqs.join("\n")
    );
    assert!(
        !record
            .iter()
            .any(|e| matches!(e, Entry::Resync { .. } | Entry::Closed { .. })),
        "C's client was resynced or closed while Redis was up:\n{}",
        tail(&record, 40)
    );
    assert_eq!(
        devices_in(&record),
        fleet_ids,
        "every device of both fleets reaches C"
    );
    assert_eq!(
        got,
        on_a_hub + on_b_hub,
        "C streamed {got} datagrams; A accepted {on_a_hub} and B {on_b_hub} (minus duplicates)"
    );
    let hubs = device_hubs(&c).await;
    assert_eq!(
        hubs.keys().copied().collect::<BTreeSet<u32>>(),
        fleet_ids,
        "C's /api/devices: {hubs:?}"
    );

    // A's client saw the same events with the same seqs.
    let record_a = on_a.entries();
    let on_a_seq: HashMap<Dg, u64> = datagrams(&record_a)
        .iter()
        .map(|s| (s.dg, s.event_seq))
        .collect();
    let mut differ = Vec::new();
    let mut common = 0;
    for s in &seen {
        if let Some(&seq) = on_a_seq.get(&s.dg) {
            common += 1;
            if seq != s.event_seq {
                differ.push(format!(
                    "device {} seq {}: event {} on C, {seq} on A",
                    s.dg.device, s.dg.seq, s.event_seq
                ));
            }
        }
    }
    assert!(common > 0, "A's and C's clients saw no datagram in common");
    assert!(
        differ.is_empty(),
        "the same datagram in events of different seqs ({} of {common}):\n{}",
        differ.len(),
        differ
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let by_seq = |r: &[Entry]| -> HashMap<u64, Vec<Dg>> {
        r.iter()
            .filter_map(|e| match e {
                Entry::Readings { seq, datagrams } => Some((*seq, datagrams.clone())),
                _ => None,
            })
            .collect()
    };
    let (events_a, events_c) = (by_seq(&record_a), by_seq(&record));
    for (seq, dgs) in &events_c {
        if let Some(on_a) = events_a.get(seq) {
            assert_eq!(on_a, dgs, "event {seq}: A's datagrams, then C's");
        }
    }

    // The counters say the same.
    for hub in [&a, &b] {
        assert!(hub.metric(EVENTS_SHARED).await > 0, "hub {}", hub.name);
    }
    assert!(c.metric(EVENTS_RECEIVED).await > 0);
    for hub in [&a, &b, &c] {
        assert_eq!(hub.metric(LINK_UP).await, 1, "hub {}", hub.name);
        assert_eq!(hub.metric(LINK_LOSSES).await, 0, "hub {}", hub.name);
        assert_eq!(hub.metric(EVENTS_UNSHARED).await, 0, "hub {}", hub.name);
    }

    // Last: A's client, like C's, got every datagram, its own hub's
    // devices' as well as B's (docs/WEBSOCKET.md: nothing subscribed is
    // missed).
    let on_a_set: HashSet<Dg> = datagrams(&record_a).iter().map(|s| s.dg).collect();
    let missing_on_a: BTreeSet<&Dg> = seen
        .iter()
        .map(|s| &s.dg)
        .filter(|d| !on_a_set.contains(d))
        .collect();
    assert!(
        missing_on_a.is_empty(),
        "A's client missed datagrams that C's got: {}\nThe first of them, by event:\n{}",
        fmt_dgs(missing_on_a.iter().copied()),
        where_missing(&missing_on_a, &seen, &record_a, &record)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resumes_on_another_hub_after_a_sigkill() {
    let redis = RedisServer::start();
    let (mut a, b, c) = three_hubs(&redis, &prefix("resume")).await;
    let mut r1 = Recorder::start(&a).await;
    let r2 = Recorder::start(&c).await;
    let fleet = Fleet::start_with_failover(&a, 1, 5, INTERVAL_MS, &[&b]);
    let started = Instant::now();
    let ids: BTreeSet<u32> = (1..=5).collect();
    r1.wait_for(
        "readings of all five devices",
        Duration::from_secs(15),
        |e| devices_in(e) == ids,
    )
    .await;
    sleep_until(started + Duration::from_secs(3)).await;

    let (epoch, last_seq) = r1.disconnect().await;
    let r2_at_kill = r2.len();
    let killed = a.kill();
    assert_eq!(killed.signal(), Some(9), "{killed:?}");
    let killed_at = Instant::now();

    let answer = r1.resume(&b).await;
    assert_eq!(
        answer,
        ResumeAnswer::Ack { seq: last_seq },
        "resume on b from epoch {epoch} seq {last_seq}: {}",
        r1.report(20)
    );
    let resumed = r1.len();
    r1.wait_for("readings after the ack", Duration::from_secs(10), |e| {
        e[resumed..]
            .iter()
            .any(|e| matches!(e, Entry::Readings { .. }))
    })
    .await;

    within(
        "B's /api/devices lists 1..=5 with hub \"b\", online",
        Duration::from_secs(15).saturating_sub(killed_at.elapsed()),
        || async {
            let devices = b.devices().await;
            let here: BTreeSet<u32> = devices
                .iter()
                .filter(|d| d["hub"] == "b" && d["status"] == "online")
                .filter_map(|d| d["id"].as_u64().map(|id| id as u32))
                .collect();
            if ids.is_subset(&here) {
                Ok(())
            } else {
                let brief: Vec<String> = devices
                    .iter()
                    .map(|d| format!("{} hub={} status={}", d["id"], d["hub"], d["status"]))
                    .collect();
                Err(brief.join(", "))
            }
        },
    )
    .await;
    r2.wait_for(
        "readings of all five devices after the kill",
        Duration::from_secs(15),
        |e| ids.is_subset(&devices_in(&e[r2_at_kill..])),
    )
    .await;

    sleep_until(killed_at + Duration::from_secs(4)).await;
    assert!(fleet.is_running());
    let stats = fleet.stop().await;
    eprintln!("fleet: {stats:?}");
    settle(
        "both records",
        || async { (r1.datagram_count(), r2.datagram_count()) },
        |_| false,
    )
    .await;

    let rec1 = r1.entries();
    let rec2 = r2.entries();
    let seen1 = datagrams(&rec1);
    let seen2 = datagrams(&rec2);
    let twice = repeated(&seen1);
    assert!(
        twice.is_empty(),
        "R1 (a, then b) received datagrams more than once: {twice:?}\n{}",
        tail(&rec1, 40)
    );
    let set1: HashSet<Dg> = seen1.iter().map(|s| s.dg).collect();
    let set2: HashSet<Dg> = seen2.iter().map(|s| s.dg).collect();
    let first1 = seen1.first().expect("R1 saw readings").event_seq;
    let extra: BTreeSet<&Dg> = set1.difference(&set2).collect();
    assert!(
        extra.is_empty(),
        "R1 has datagrams the reference client on c never saw: {}",
        fmt_dgs(extra)
    );
    let missing: BTreeSet<&Dg> = seen2
        .iter()
        .filter(|s| s.event_seq > first1 && !set1.contains(&s.dg))
        .map(|s| &s.dg)
        .collect();
    assert!(
        missing.is_empty(),
        "R1 missed datagrams (events after its first, seq {first1}) that the reference client saw: {}\n\
         R1 disconnected at epoch {epoch} seq {last_seq}, resumed at record index {resumed}.\n\
         The first of them, by event:\n{}\nR1:\n{}",
        fmt_dgs(missing.iter().copied()),
        where_missing(&missing, &seen2, &rec1, &rec2),
        tail(&rec1, 40)
    );
    let disorder = out_of_order(&seen1);
    assert!(disorder.is_empty(), "R1:\n{}", disorder.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load() {
    let mut redis = RedisServer::start();
    let (mut a, mut b, mut c) = three_hubs(&redis, &prefix("restart")).await;
    let ra = Recorder::start(&a).await;
    let rc = Recorder::start(&c).await;
    let fleet_a = Fleet::start(&a, 1, 5, INTERVAL_MS);
    let fleet_b = Fleet::start(&b, 101, 5, INTERVAL_MS);
    let started = Instant::now();
    let ids_a: BTreeSet<u32> = (1..=5).collect();
    let all: BTreeSet<u32> = (1..=5).chain(101..=105).collect();
    rc.wait_for(
        "readings of all ten devices",
        Duration::from_secs(15),
        |e| devices_in(e) == all,
    )
    .await;
    sleep_until(started + Duration::from_secs(2)).await;

    // Redis goes away.
    let ra_at_stop = ra.len();
    tokio::task::block_in_place(|| redis.stop());
    let stopped_at = Instant::now();
    within(
        "A's /healthz: 503 degraded, cluster link down",
        Duration::from_secs(6),
        || async {
            match a.healthz().await {
                Some((503, v)) if v["status"] == "degraded" && v["cluster"]["link"] == "down" => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(a.metric(LINK_UP).await, 0);
    // A's own devices still reach A's client, in a new numbering.
    ra.wait_for(
        "a new numbering, then readings of each of A's devices",
        Duration::from_secs(10),
        |e| {
            e[ra_at_stop..]
                .iter()
                .position(Entry::is_renumbering)
                .is_some_and(|at| ids_a.is_subset(&devices_in(&e[ra_at_stop + at + 1..])))
        },
    )
    .await;

    // Redis comes back with its data.
    sleep_until(stopped_at + Duration::from_secs(3)).await;
    let ra_at_start = ra.len();
    tokio::task::block_in_place(|| redis.start_again());
    for hub in [&a, &b, &c] {
        within(
            "/healthz ok with the cluster link up again",
            Duration::from_secs(15),
            || linked(hub),
        )
        .await;
    }
    ra.wait_for(
        "a new numbering after the link came back, then readings",
        Duration::from_secs(10),
        |e| {
            e[ra_at_start..]
                .iter()
                .position(Entry::is_renumbering)
                .is_some_and(|at| !devices_in(&e[ra_at_start + at + 1..]).is_empty())
        },
    )
    .await;
    let stats_a = fleet_a.stop().await;
    let stats_b = fleet_b.stop().await;
    eprintln!("fleet on a: {stats_a:?}\nfleet on b: {stats_b:?}");

    // What reached C: every datagram A and B accepted, but those they
    // counted as never shared.
    let expected = || async {
        let mut sum = 0;
        for hub in [&a, &b] {
            sum += streamed(hub).await - hub.metric(DATAGRAMS_UNSHARED).await;
        }
        sum
    };
    let (got, should) = settle(
        "C's record and A's and B's counters",
        || async { (rc.datagram_count() as u64, expected().await) },
        |&(got, should)| got == should,
    )
    .await;
    let record = rc.entries();
    let seen = datagrams(&record);
    let twice = repeated(&seen);
    assert!(
        twice.is_empty(),
        "datagrams C received more than once: {twice:?}\n{}",
        tail(&record, 40)
    );
    let mut figures = Vec::new();
    for hub in [&a, &b] {
        figures.push(format!(
            "hub {}: accepted {} duplicated {} datagrams unshared {} events unshared {} shared late {}",
            hub.name,
            hub.metric(ACCEPTED).await,
            hub.metric(DUPLICATED).await,
            hub.metric(DATAGRAMS_UNSHARED).await,
            hub.metric(EVENTS_UNSHARED).await,
            hub.metric(EVENTS_SHARED_LATE).await,
        ));
    }
    assert_eq!(
        got,
        should,
        "C streamed {got} datagrams, A and B accepted {should} they did not count as unshared\n{}",
        figures.join("\n")
    );
    for hub in [&a, &b, &c] {
        assert!(
            hub.metric(LINK_LOSSES).await >= 1,
            "hub {}: the outage counted as a link loss",
            hub.name
        );
        assert_eq!(hub.metric(LINK_UP).await, 1, "hub {}", hub.name);
    }
    assert!(
        a.metric(EVENTS_SHARED_LATE).await > 0,
        "A shared the outage's events once Redis was back\n{}",
        figures.join("\n")
    );
    // After all that, each hub still stops cleanly.
    drop((ra, rc));
    tokio::task::block_in_place(|| {
        for hub in [&mut a, &mut b, &mut c] {
            hub.stop();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_from_one_hub_runs_on_another() {
    let redis = RedisServer::start();
    let (a, _b, c) = three_hubs(&redis, &prefix("command")).await;
    let rc = Recorder::start(&c).await;
    let fleet = Fleet::start(&a, 1, 3, 200);
    within(
        "C lists device 1 on hub \"a\", connected",
        Duration::from_secs(15),
        || async {
            let devices = c.devices().await;
            match devices.iter().find(|d| d["id"] == 1) {
                Some(d) if d["hub"] == "a" && d["connected"] == true => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // As the HTTP API does it, on C: the device's session is on A.
    let (status, body) = c
        .post_json(
            "/api/devices/1/commands?timeout_ms=8000",
            &json!({"kind": "identify"}),
        )
        .await;
    let answer: Json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status}: {e}: {body}"));
    assert!(
        status == 200 || status == 202,
        "POST /api/devices/1/commands on c: {status} {answer}"
    );
    if status == 200 {
        assert_eq!(answer["state"], "succeeded", "{answer}");
    }
    assert_eq!(answer["device"], 1, "{answer}");
    assert_eq!(answer["kind"], "identify", "{answer}");
    let command_id = answer["command_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no command_id: {answer}"));

    let statuses = |e: &[Entry]| -> Vec<String> {
        e.iter()
            .filter_map(|e| match e {
                Entry::CommandStatus(v) if v["command_id"] == command_id => {
                    Some(v["state"].as_str().unwrap_or("?").to_string())
                }
                _ => None,
            })
            .collect()
    };
    let record = rc
        .wait_for(
            &format!("command_status of command {command_id} reaching succeeded"),
            Duration::from_secs(15),
            |e| {
                let s = statuses(e);
                s.last().is_some_and(|s| {
                    ["succeeded", "failed", "timed_out", "rejected"].contains(&s.as_str())
                })
            },
        )
        .await;
    let states = statuses(&record);
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "command {command_id}'s states on C: {states:?}"
    );
    for e in &record {
        if let Entry::CommandStatus(v) = e {
            if v["command_id"] == command_id {
                assert_eq!(v["device"], 1, "{v}");
                assert_eq!(v["kind"], "identify", "{v}");
                assert!(v.get("id").is_none(), "an HTTP command has no id: {v}");
            }
        }
    }
    let stats = fleet.stop().await;
    assert_eq!(stats.commands_received, 1, "{stats:?}");
}

/// A device adopted (with its key) on one hub is adopted on every hub, and
/// one forgotten on any hub is forgotten everywhere: the hubs' device
/// files follow each other through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoptions_and_removals_reach_every_hub() {
    let redis = RedisServer::start();
    let lease = [("SENSOR_HUB__CLUSTER__LEASE_TTL_MS", "3000")];
    let key_prefix = prefix("adopt");
    let (a, b, c) = tokio::join!(
        ClusterHub::start("a", &redis, &key_prefix, &lease),
        ClusterHub::start("b", &redis, &key_prefix, &lease),
        ClusterHub::start("c", &redis, &key_prefix, &lease),
    );
    let file =
        |hub: &ClusterHub| sensor_hub::device_file::DeviceFile::new(hub.dir().join("devices.json"));
    let key = [7u8; 32];
    file(&a)
        .update(|list| list.add(500, "greenhouse", Some(key), 1))
        .expect("adopting on a");
    for hub in [&b, &c] {
        within(
            &format!("hub {} adopts device 500 with its key", hub.name),
            Duration::from_secs(15),
            || async {
                let (list, _) = file(hub).load().map_err(|e| e.to_string())?;
                let entry = list.get(500).ok_or("not in its device file")?;
                if entry.key() != Some(key) || entry.name != "greenhouse" {
                    return Err(format!("{entry:?}"));
                }
                Ok(())
            },
        )
        .await;
        // And the hub applies it: an untagged datagram of the keyed device
        // is refused.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        within(
            &format!("hub {} refuses device 500's untagged datagram", hub.name),
            Duration::from_secs(10),
            || async {
                let bytes = support::datagram(500, 1, &[(0, sensor_hub_protocol::Value::F32(1.0))]);
                socket.send_to(&bytes, hub.udp).map_err(|e| e.to_string())?;
                sleep(Duration::from_millis(100)).await;
                // Without a session first (docs/PROTOCOL.md, drop reasons).
                let mut refused = 0;
                for reason in ["no_session", "unauthenticated"] {
                    refused += hub
                        .metric(&format!(
                            "sensor_hub_udp_datagrams_dropped_total{{reason=\"{reason}\"}}"
                        ))
                        .await;
                }
                match refused {
                    0 => Err("not refused (yet)".into()),
                    _ => Ok(()),
                }
            },
        )
        .await;
    }
    // Forgotten on b: a and c forget it too.
    file(&b)
        .update(|list| Ok(list.remove(500)))
        .expect("forgetting on b");
    for hub in [&a, &c] {
        within(
            &format!("hub {} forgets device 500", hub.name),
            Duration::from_secs(15),
            || async {
                let (list, _) = file(hub).load().map_err(|e| e.to_string())?;
                match list.get(500) {
                    None => Ok(()),
                    Some(entry) => Err(format!("still listed: {entry:?}")),
                }
            },
        )
        .await;
    }
}
