//! The device file (`devices.keys_path`): the devices the owner adopted,
//! each with its 32-byte key or none (an unkeyed device, e.g. one that
//! only sends UDP). Written by `sensor-hub device add|remove|import` and by
//! the dashboard's adopt and forget, read by the running hub, through
//! [`SecretFile`] (locked, atomic, mode 0600). Keys are stored as they are
//! (hex): the hub needs them to verify MACs, so unlike passwords they
//! cannot be hashed; the file's mode is their protection.

use std::collections::HashMap;
use std::path::PathBuf;

use sensor_hub_protocol::auth::{DeviceKey, KEY_LEN};
use sensor_hub_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use crate::secret_file::{FileError, SecretFile, Stamp};

/// The file format's version.
pub const VERSION: u32 = 1;
/// Most devices one file lists.
pub const MAX_DEVICES: usize = 100_000;
/// Longest device name, characters.
pub const MAX_NAME: usize = 64;

/// Why the device file could not be changed or used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFileError {
    /// The file could not be read or written, or is damaged.
    #[error(transparent)]
    File(#[from] FileError),
    /// A request the user can correct.
    #[error("{0}")]
    Refused(String),
    /// No random key could be made.
    #[error("cannot make a random key ({0}); the operating system's random source failed")]
    Random(String),
}

/// One adopted device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedDevice {
    /// Its id.
    pub id: DeviceId,
    /// A name for people ("" for none).
    #[serde(default)]
    pub name: String,
    /// Its key as 64 hex digits, or none for a device without a key.
    pub key: Option<String>,
    /// When it was adopted, Unix ms.
    pub added_ms: u64,
}

impl AdoptedDevice {
    /// Its key, if it has a valid one.
    pub fn key(&self) -> Option<DeviceKey> {
        self.key.as_deref().and_then(parse_key)
    }
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceList {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The devices, in the order they were added.
    pub devices: Vec<AdoptedDevice>,
}

impl Default for DeviceList {
    fn default() -> DeviceList {
        DeviceList {
            version: VERSION,
            devices: Vec::new(),
        }
    }
}

/// 64 hex digits as a key.
pub fn parse_key(text: &str) -> Option<DeviceKey> {
    if text.len() != 2 * KEY_LEN || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A key as 64 lowercase hex digits.
pub fn key_hex(key: &DeviceKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random key from the operating system.
pub fn random_key() -> Result<DeviceKey, DeviceFileError> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| DeviceFileError::Random(e.to_string()))?;
    Ok(key)
}

impl DeviceList {
    /// The device with `id`.
    pub fn get(&self, id: DeviceId) -> Option<&AdoptedDevice> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Adopts `id`, with `key` (or none); refuses an id already listed.
    pub fn add(
        &mut self,
        id: DeviceId,
        name: &str,
        key: Option<DeviceKey>,
        now_ms: u64,
    ) -> Result<(), DeviceFileError> {
        if self.get(id).is_some() {
            return Err(DeviceFileError::Refused(format!(
                "device {id} is adopted already; remove it first to give it a new key"
            )));
        }
        if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(DeviceFileError::Refused(format!(
                "a device name has at most {MAX_NAME} characters and no control characters"
            )));
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(DeviceFileError::Refused(format!(
                "the device file lists {MAX_DEVICES} devices, its limit"
            )));
        }
        self.devices.push(AdoptedDevice {
            id,
            name: name.to_string(),
            key: key.as_ref().map(key_hex),
            added_ms: now_ms,
        });
        Ok(())
    }

    /// Removes `id`; returns it if it was listed.
    pub fn remove(&mut self, id: DeviceId) -> Option<AdoptedDevice> {
        let at = self.devices.iter().position(|d| d.id == id)?;
        Some(self.devices.remove(at))
    }

    /// What the hub needs at run time.
    pub fn keyring(&self) -> Keyring {
        Keyring {
            devices: self.devices.iter().map(|d| (d.id, d.key())).collect(),
        }
    }
}

/// The adopted devices and their keys, as the hub uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    devices: HashMap<DeviceId, Option<DeviceKey>>,
}

impl Keyring {
    /// Whether `id` is adopted in the file.
    pub fn lists(&self, id: DeviceId) -> bool {
        self.devices.contains_key(&id)
    }

    /// The key of `id`, if it has one.
    pub fn key(&self, id: DeviceId) -> Option<&DeviceKey> {
        self.devices.get(&id).and_then(Option::as_ref)
    }

    /// Every listed id.
    pub fn ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices.keys().copied()
    }

    /// The devices that have a key, with it.
    pub fn keyed(&self) -> impl Iterator<Item = (DeviceId, &DeviceKey)> + '_ {
        self.devices
            .iter()
            .filter_map(|(id, k)| k.as_ref().map(|k| (*id, k)))
    }
}

/// The device file at a path.
#[derive(Debug, Clone)]
pub struct DeviceFile {
    file: SecretFile,
}

impl DeviceFile {
    /// The file at `path` (not opened yet).
    pub fn new(path: impl Into<PathBuf>) -> DeviceFile {
        DeviceFile {
            file: SecretFile::new(
                path,
                "device file",
                "restore it from a backup, or move it away and adopt the devices again \
                 (`sensor-hub device add`)",
            ),
        }
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    /// The file's current stamp, or `None` when it does not exist.
    pub fn stamp(&self) -> Result<Option<Stamp>, DeviceFileError> {
        Ok(self.file.stamp()?)
    }

    fn check(&self, list: &DeviceList) -> Result<(), FileError> {
        if list.version != VERSION {
            return Err(self.file.damaged(format!(
                "version {} (this hub reads version {VERSION})",
                list.version
            )));
        }
        if let Some(bad) = list
            .devices
            .iter()
            .find(|d| d.key.is_some() && d.key().is_none())
        {
            return Err(self
                .file
                .damaged(format!("the key of device {} is not 64 hex digits", bad.id)));
        }
        Ok(())
    }

    /// The contents and stamp (empty when the file does not exist).
    pub fn load(&self) -> Result<(DeviceList, Option<Stamp>), DeviceFileError> {
        match self.file.load::<DeviceList>()? {
            Some((list, stamp)) => {
                self.check(&list)?;
                Ok((list, Some(stamp)))
            }
            None => Ok((DeviceList::default(), None)),
        }
    }

    /// Applies `change` under the lock and writes the result.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut DeviceList) -> Result<R, DeviceFileError>,
    ) -> Result<R, DeviceFileError> {
        self.file.update(|list| self.check(list), change)
    }
}

/// The hub's view of the device file, re-read when it changes on disk
/// (checked at most once per `recheck_ms` of monotonic time).
#[derive(Debug)]
pub struct DeviceDirectory {
    file: DeviceFile,
    recheck_ms: u64,
    cached: std::sync::Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    stamp: Option<Stamp>,
    checked_ms: Option<u64>,
    keyring: std::sync::Arc<Keyring>,
}

impl DeviceDirectory {
    /// Reads `file` now; a damaged file is an error (the hub must not start
    /// without knowing its devices' keys).
    pub fn open(file: DeviceFile, recheck_ms: u64) -> Result<DeviceDirectory, DeviceFileError> {
        let (list, stamp) = file.load()?;
        Ok(DeviceDirectory {
            file,
            recheck_ms,
            cached: std::sync::Mutex::new(Cached {
                stamp,
                checked_ms: None,
                keyring: std::sync::Arc::new(list.keyring()),
            }),
        })
    }

    /// The file.
    pub fn file(&self) -> &DeviceFile {
        &self.file
    }

    /// The keyring, re-read first if the file changed; `Some(new)` in the
    /// second place when it did. A file that became unreadable keeps the
    /// last good keyring (and logs why).
    pub fn refresh(&self, now_mono_ms: u64, force: bool) -> (std::sync::Arc<Keyring>, bool) {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let due = force
            || cached
                .checked_ms
                .is_none_or(|t| now_mono_ms >= t.saturating_add(self.recheck_ms));
        if !due {
            return (cached.keyring.clone(), false);
        }
        cached.checked_ms = Some(now_mono_ms);
        let stamp = match self.file.stamp() {
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the device file; keeping the keys read before");
                return (cached.keyring.clone(), false);
            }
        };
        if stamp == cached.stamp {
            return (cached.keyring.clone(), false);
        }
        match self.file.load() {
            Ok((list, stamp)) => {
                cached.stamp = stamp;
                cached.keyring = std::sync::Arc::new(list.keyring());
                (cached.keyring.clone(), true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the device file; keeping the keys read before");
                (cached.keyring.clone(), false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_file(name: &str) -> DeviceFile {
        let dir =
            std::env::temp_dir().join(format!("sensor-hub-devfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DeviceFile::new(dir.join("devices.json"))
    }

    #[test]
    fn keys_round_trip_as_hex_and_nothing_else_parses() {
        let key: DeviceKey = core::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_key(&key_hex(&key)), Some(key));
        assert_eq!(parse_key("00"), None);
        assert_eq!(parse_key(&"zz".repeat(32)), None);
        assert_eq!(parse_key(&"é".repeat(32)), None);
    }

    #[test]
    fn devices_are_added_once_removed_and_listed_with_their_keys() {
        let mut list = DeviceList::default();
        let key = random_key().unwrap();
        list.add(17, "kitchen", Some(key), 5).unwrap();
        list.add(18, "", None, 6).unwrap();
        assert!(list.add(17, "again", None, 7).is_err());
        assert!(list.add(19, "bad\nname", None, 7).is_err());
        let ring = list.keyring();
        assert_eq!(ring.key(17), Some(&key));
        assert!(ring.lists(18) && ring.key(18).is_none());
        assert_eq!(ring.keyed().map(|(id, _)| id).collect::<Vec<_>>(), [17]);
        assert_eq!(list.remove(17).map(|d| d.name), Some("kitchen".into()));
        assert!(!list.keyring().lists(17));
    }

    #[test]
    fn the_file_is_0600_and_the_directory_sees_changes() {
        let file = temp_file("roundtrip");
        let dir = DeviceDirectory::open(file.clone(), 1_000).unwrap();
        assert!(!dir.refresh(0, false).0.lists(1));
        let key = random_key().unwrap();
        file.update(|l| l.add(1, "a", Some(key), 0)).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.refresh(500, false).1, "not due yet");
        let (ring, changed) = dir.refresh(1_000, false);
        assert!(changed);
        assert_eq!(ring.key(1), Some(&key));
        assert!(!dir.refresh(5_000, false).1, "unchanged file");
        std::fs::write(file.path(), b"{").unwrap();
        let (ring, changed) = dir.refresh(9_000, true);
        assert!(!changed, "a damaged file keeps the last good keys");
        assert_eq!(ring.key(1), Some(&key));
        let e = DeviceDirectory::open(file.clone(), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("damaged") && e.contains("device add"), "{e}");
        let _ = std::fs::remove_dir_all(file.path().parent().unwrap());
    }
}
