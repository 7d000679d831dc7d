//! The adopted devices and their keys, shared between the hubs of a
//! cluster: each hub keeps its own device file (`devices.keys_path`), and
//! a Redis hash (`<prefix>:adopted`, one field per device) carries every
//! adoption, re-key and removal to the others, so a device adopted on one
//! hub can connect to any hub, and one forgotten on any hub is forgotten
//! everywhere.
//!
//! [`AdoptionSync`] decides, from the file now, the file as of the last
//! sync and the hash, what to write where (plain state, no I/O): a change
//! made here since the last sync wins and is written to the hash (a
//! removal as a tombstone); otherwise the hash's newer entry is written to
//! the file. At a run's first sync, the newer of the file's adoption time
//! and the hash's change time wins.

use std::collections::{BTreeMap, HashMap};

use sensor_hub_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use crate::device_file::{parse_key, AdoptedDevice, DeviceList, MAX_NAME};

/// Tombstones older than this are dropped from the hash (a hub cut off
/// longer than this may bring a removed device back).
pub const TOMBSTONE_MS: u64 = 30 * 24 * 3_600_000;

/// One device as the hash holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedAdoption {
    /// A name for people.
    pub name: String,
    /// Its key, 64 hex digits, if it has one.
    pub key: Option<String>,
    /// When it was adopted, Unix ms.
    pub added_ms: u64,
    /// Forgotten (a tombstone).
    pub removed: bool,
    /// When this entry last changed, Unix ms.
    pub updated_ms: u64,
    /// The hub that changed it.
    pub hub: String,
}

impl SharedAdoption {
    /// Whether another hub (or anything else writing Redis) wrote an entry
    /// the device file could hold: a name as `sensor-hub device add`
    /// takes it, and a key of 64 hex digits.
    pub fn is_valid(&self) -> bool {
        self.name.chars().count() <= MAX_NAME
            && !self.name.chars().any(char::is_control)
            && self.key.as_deref().is_none_or(|k| parse_key(k).is_some())
    }

    fn matches(&self, device: Option<&AdoptedDevice>) -> bool {
        match device {
            None => self.removed,
            Some(d) => !self.removed && d.name == self.name && d.key == self.key,
        }
    }
}

/// What one sync writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Fields to set in the hash.
    pub to_hash: Vec<(DeviceId, SharedAdoption)>,
    /// Fields to delete from the hash (old tombstones).
    pub expired: Vec<DeviceId>,
    /// Devices to adopt (or replace) in the file.
    pub adopt: Vec<AdoptedDevice>,
    /// Devices to remove from the file.
    pub remove: Vec<DeviceId>,
}

impl SyncPlan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.to_hash.is_empty()
            && self.expired.is_empty()
            && self.adopt.is_empty()
            && self.remove.is_empty()
    }

    /// Applies the file part to `list`.
    pub fn apply_to(&self, list: &mut DeviceList) {
        for &id in &self.remove {
            list.remove(id);
        }
        for d in &self.adopt {
            list.remove(d.id);
            list.devices.push(d.clone());
        }
    }
}

/// The sync's memory: the file as of the last sync.
#[derive(Debug, Default)]
pub struct AdoptionSync {
    last: Option<BTreeMap<DeviceId, AdoptedDevice>>,
}

impl AdoptionSync {
    /// What to write, given the file now and the hash, for hub `hub` at
    /// `now_ms`. Entries of the hash that do not parse are skipped.
    pub fn plan(
        &self,
        file: &DeviceList,
        hash: &HashMap<DeviceId, SharedAdoption>,
        hub: &str,
        now_ms: u64,
    ) -> SyncPlan {
        let local: BTreeMap<DeviceId, &AdoptedDevice> =
            file.devices.iter().map(|d| (d.id, d)).collect();
        let mut ids: Vec<DeviceId> = local.keys().copied().collect();
        ids.extend(hash.keys().copied());
        if let Some(last) = &self.last {
            ids.extend(last.keys().copied());
        }
        ids.sort_unstable();
        ids.dedup();
        let mut plan = SyncPlan::default();
        let shared_of = |d: &AdoptedDevice, updated_ms: u64| SharedAdoption {
            name: d.name.clone(),
            key: d.key.clone(),
            added_ms: d.added_ms,
            removed: false,
            updated_ms,
            hub: hub.to_string(),
        };
        for id in ids {
            let here = local.get(&id).copied();
            let shared = hash.get(&id);
            if shared.is_some_and(|s| s.matches(here)) {
                if shared.is_some_and(|s| {
                    s.removed && now_ms.saturating_sub(s.updated_ms) > TOMBSTONE_MS
                }) {
                    plan.expired.push(id);
                }
                continue;
            }
            let changed_here = match &self.last {
                Some(last) => last.get(&id) != here,
                // First sync: the file's adoption time against the hash's.
                None => match (here, shared) {
                    (Some(d), Some(s)) => d.added_ms > s.updated_ms,
                    (Some(_), None) => true,
                    (None, _) => false,
                },
            };
            match (changed_here, here, shared) {
                (true, Some(d), _) => plan.to_hash.push((id, shared_of(d, now_ms))),
                (true, None, _) => plan.to_hash.push((
                    id,
                    SharedAdoption {
                        name: String::new(),
                        key: None,
                        added_ms: 0,
                        removed: true,
                        updated_ms: now_ms,
                        hub: hub.to_string(),
                    },
                )),
                (false, _, Some(s)) if s.removed => {
                    if here.is_some() {
                        plan.remove.push(id);
                    }
                }
                (false, _, Some(s)) => plan.adopt.push(AdoptedDevice {
                    id,
                    name: s.name.clone(),
                    key: s.key.clone(),
                    added_ms: s.added_ms,
                }),
                (false, Some(d), None) => {
                    // In the file, unchanged, and not in the hash (it was
                    // emptied): share it again.
                    plan.to_hash.push((id, shared_of(d, d.added_ms)));
                }
                (false, None, None) => {}
            }
        }
        plan
    }

    /// The sync wrote; `file` is the device file now.
    pub fn done(&mut self, file: &DeviceList) {
        self.last = Some(file.devices.iter().map(|d| (d.id, d.clone())).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: DeviceId, key: Option<&str>, added_ms: u64) -> AdoptedDevice {
        AdoptedDevice {
            id,
            name: format!("d{id}"),
            key: key.map(str::to_string),
            added_ms,
        }
    }

    fn list(devices: Vec<AdoptedDevice>) -> DeviceList {
        DeviceList {
            devices,
            ..DeviceList::default()
        }
    }

    fn shared(d: &AdoptedDevice, updated_ms: u64, hub: &str) -> SharedAdoption {
        SharedAdoption {
            name: d.name.clone(),
            key: d.key.clone(),
            added_ms: d.added_ms,
            removed: false,
            updated_ms,
            hub: hub.into(),
        }
    }

    fn apply(plan: &SyncPlan, hash: &mut HashMap<DeviceId, SharedAdoption>, file: &mut DeviceList) {
        for (id, s) in &plan.to_hash {
            hash.insert(*id, s.clone());
        }
        for id in &plan.expired {
            hash.remove(id);
        }
        plan.apply_to(file);
    }

    #[test]
    fn an_adoption_on_one_hub_reaches_the_other_and_so_does_its_removal() {
        let mut hash = HashMap::new();
        let (mut a, mut b) = (AdoptionSync::default(), AdoptionSync::default());
        let (mut file_a, mut file_b) = (list(vec![]), list(vec![]));
        // Both start empty.
        for (sync, file, hub) in [(&mut a, &mut file_a, "a"), (&mut b, &mut file_b, "b")] {
            let plan = sync.plan(file, &hash, hub, 10);
            assert!(plan.is_empty());
            sync.done(file);
        }
        // Adopted on a, with a key.
        file_a.devices.push(device(7, Some("ab"), 20));
        let plan = a.plan(&file_a, &hash, "a", 30);
        assert_eq!(plan.to_hash.len(), 1);
        apply(&plan, &mut hash, &mut file_a);
        a.done(&file_a);
        // b takes it into its file.
        let plan = b.plan(&file_b, &hash, "b", 40);
        assert_eq!(plan.adopt, [device(7, Some("ab"), 20)]);
        apply(&plan, &mut hash, &mut file_b);
        b.done(&file_b);
        assert!(b.plan(&file_b, &hash, "b", 41).is_empty());
        // Forgotten on b: a tombstone, and a forgets it too.
        file_b.remove(7);
        let plan = b.plan(&file_b, &hash, "b", 50);
        assert!(plan.to_hash[0].1.removed);
        apply(&plan, &mut hash, &mut file_b);
        b.done(&file_b);
        let plan = a.plan(&file_a, &hash, "a", 60);
        assert_eq!(plan.remove, [7]);
        apply(&plan, &mut hash, &mut file_a);
        a.done(&file_a);
        assert!(file_a.devices.is_empty());
        // The tombstone goes after TOMBSTONE_MS.
        let plan = a.plan(&file_a, &hash, "a", 50 + TOMBSTONE_MS + 1);
        assert_eq!(plan.expired, [7]);
    }

    #[test]
    fn a_re_key_here_wins_over_the_hash() {
        let d = device(3, Some("aa"), 5);
        let mut hash = HashMap::from([(3, shared(&d, 5, "b"))]);
        let mut sync = AdoptionSync::default();
        let mut file = list(vec![d.clone()]);
        assert!(sync.plan(&file, &hash, "a", 10).is_empty());
        sync.done(&file);
        file.remove(3);
        file.devices.push(device(3, Some("bb"), 20));
        let plan = sync.plan(&file, &hash, "a", 30);
        assert_eq!(plan.to_hash[0].1.key.as_deref(), Some("bb"));
        apply(&plan, &mut hash, &mut file);
        assert!(plan.adopt.is_empty());
    }

    #[test]
    fn at_a_first_sync_the_newer_side_wins() {
        // The hash removed device 1 after the file adopted it; the file
        // adopted device 2 after the hash's entry.
        let one = device(1, None, 100);
        let two = device(2, Some("cc"), 300);
        let hash = HashMap::from([
            (
                1,
                SharedAdoption {
                    removed: true,
                    updated_ms: 200,
                    ..shared(&one, 200, "b")
                },
            ),
            (2, shared(&device(2, Some("dd"), 50), 250, "b")),
            (4, shared(&device(4, None, 60), 60, "b")),
        ]);
        let file = list(vec![one, two.clone()]);
        let plan = AdoptionSync::default().plan(&file, &hash, "a", 400);
        assert_eq!(plan.remove, [1]);
        assert_eq!(plan.to_hash.len(), 1);
        assert_eq!(plan.to_hash[0].0, 2);
        assert_eq!(plan.to_hash[0].1.key, two.key);
        assert_eq!(plan.adopt, [device(4, None, 60)]);
    }

    #[test]
    fn a_file_listing_what_an_emptied_hash_lacks_shares_it_again() {
        let d = device(9, None, 1);
        let mut sync = AdoptionSync::default();
        let file = list(vec![d.clone()]);
        let hash = HashMap::from([(9, shared(&d, 1, "a"))]);
        assert!(sync.plan(&file, &hash, "a", 2).is_empty());
        sync.done(&file);
        let plan = sync.plan(&file, &HashMap::new(), "a", 3);
        assert_eq!(plan.to_hash, [(9, shared(&d, 1, "a"))]);
    }

    #[test]
    fn entries_the_file_could_not_hold_are_invalid() {
        let good = shared(&device(1, Some(&"ab".repeat(32)), 1), 1, "a");
        assert!(good.is_valid());
        assert!(!SharedAdoption {
            key: Some("zz".into()),
            ..good.clone()
        }
        .is_valid());
        assert!(!SharedAdoption {
            name: "x".repeat(65),
            ..good.clone()
        }
        .is_valid());
        assert!(!SharedAdoption {
            name: "a\nb".into(),
            ..good
        }
        .is_valid());
    }
}
