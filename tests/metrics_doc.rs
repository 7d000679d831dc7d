//! docs/METRICS.md cannot drift: a real hub (history on, one device with
//! data, so every conditional family is served) is scraped, and its
//! families, their types and their labels must be exactly the table's.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};

use sensor_hub_protocol::Value;
use support::{datagram, eventually, http_request, start_hub};

const DOC: &str = include_str!("../docs/METRICS.md");

/// A family as documented or served: its type and label names.
type Families = BTreeMap<String, (String, BTreeSet<String>)>;

/// The table's rows: `| `name` | type | labels | meaning |`.
fn documented() -> Families {
    DOC.lines()
        .filter(|l| l.starts_with("| `sensor_hub_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let kind = cells[2].to_string();
            let labels = cells[3]
                .split(',')
                .map(|s| s.trim().trim_matches('`').to_string())
                .filter(|s| !s.is_empty())
                .collect();
            (name, (kind, labels))
        })
        .collect()
}

/// The families of an OpenMetrics text, with the label names their
/// samples carry (`le` of histogram buckets left out).
fn served(text: &str) -> Families {
    let mut families: Families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), (kind.to_string(), BTreeSet::new()));
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let sample = line.split(' ').next().unwrap();
        let (name, labels) = match sample.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (sample, ""),
        };
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| families.contains_key(*base))
            .unwrap_or(name);
        let Some((_, names)) = families.get_mut(family) else {
            panic!("sample {line:?} of no announced family");
        };
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap();
            if key != "le" {
                names.insert(key.to_string());
            }
        }
    }
    families
}

#[tokio::test]
async fn every_served_family_is_documented_with_its_type_and_labels() {
    let hub = start_hub(&[]).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&datagram(4, 0, &[(0, Value::F32(1.0))]), hub.udp)
        .await
        .unwrap();
    eventually("the datagram is counted", || async {
        hub.metric("sensor_hub_udp_datagrams_accepted_total").await == 1
    })
    .await;
    let (response, _) = http_request(hub.http, "GET", "/metrics", &[], None).await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let mut served = served(&text);
    let documented = documented();
    assert!(documented.len() > 40, "the table was read");
    // A task-failure series appears only once a task failed (none here):
    // its label is the table's word alone.
    if let Some((_, labels)) = served.get_mut("sensor_hub_task_failures") {
        assert!(labels.is_empty(), "no task failed in this test");
        labels.insert("task".into());
    }
    let mut problems = Vec::new();
    for (name, (kind, labels)) in &served {
        match documented.get(name) {
            None => problems.push(format!(
                "{name} ({kind}) is served but not in docs/METRICS.md"
            )),
            Some((doc_kind, doc_labels)) => {
                if doc_kind != kind {
                    problems.push(format!(
                        "{name}: served as {kind}, documented as {doc_kind}"
                    ));
                }
                if doc_labels != labels {
                    problems.push(format!(
                        "{name}: served with labels {labels:?}, documented {doc_labels:?}"
                    ));
                }
            }
        }
    }
    for name in documented.keys() {
        if !served.contains_key(name) {
            problems.push(format!("{name} is documented but not served"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    hub.stop().await;
}
