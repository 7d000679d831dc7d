//! A small JSON file of secrets shared by the running hub and the command
//! line (the credentials file, the device file): every change takes an
//! exclusive lock on `<file>.lock`, writes a new file with mode 0600 and
//! renames it over the old one, so a reader sees either the old or the new
//! contents. A reader notices a change by the file's [`Stamp`] and reloads.
//! Files root writes into a directory someone else owns (`sudo sensor-hub
//! device add` beside a service running as its own user) are given to the
//! directory's owner, so the service can still read and lock them.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest file read (a few hundred entries are a few tens of KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading, writing or locking failed.
    #[error("cannot use the {what} {path} ({source}); check its path in the configuration and the file's owner")]
    Io {
        /// What the file is, for people.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file does not parse, or is too large.
    #[error("the {what} {path} is damaged ({message}); {fix}")]
    Damaged {
        /// What the file is, for people.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
        /// What to do.
        fix: &'static str,
    },
}

/// What identifies one version of the file on disk (inode, size, change
/// time): a rename or a rewrite changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    inode: u64,
    len: u64,
    ctime_ns: i128,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            inode: meta.ino(),
            len: meta.len(),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A secret file at a path.
#[derive(Debug, Clone)]
pub struct SecretFile {
    path: PathBuf,
    what: &'static str,
    fix: &'static str,
}

impl SecretFile {
    /// The file at `path` (not opened yet); `what` names it in messages
    /// ("credentials file") and `fix` says what to do when it is damaged.
    pub fn new(path: impl Into<PathBuf>, what: &'static str, fix: &'static str) -> SecretFile {
        SecretFile {
            path: path.into(),
            what,
            fix,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> FileError {
        FileError::Io {
            what: self.what,
            path: self.path.clone(),
            source,
        }
    }

    /// A [`FileError::Damaged`] for this file.
    pub fn damaged(&self, message: String) -> FileError {
        FileError::Damaged {
            what: self.what,
            path: self.path.clone(),
            message,
            fix: self.fix,
        }
    }

    /// The file's current stamp, or `None` when it does not exist.
    pub fn stamp(&self) -> Result<Option<Stamp>, FileError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(Some(Stamp::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// The contents and stamp, or `None` when the file does not exist.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<(T, Stamp)>, FileError> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let meta = file.metadata().map_err(|e| self.io(e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %self.path.display(),
                "the {} can be read by other users; run: chmod 600 {}",
                self.what,
                self.path.display()
            );
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(self.damaged(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let contents: T = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| self.damaged(e.to_string()))?;
        Ok(Some((contents, Stamp::of(&meta))))
    }

    /// Applies `change` under the lock to the contents (`T::default()` if
    /// the file does not exist; `check` vets what was read) and writes the
    /// result; returns what `change` returned. Nothing is written when
    /// `check` or `change` fails.
    pub fn update<T, R, E>(
        &self,
        check: impl FnOnce(&T) -> Result<(), FileError>,
        change: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<R, E>
    where
        T: Default + Serialize + DeserializeOwned,
        E: From<FileError>,
    {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.sibling("lock"))
            .map_err(|e| self.io(e))?;
        self.give_to_directory_owner(&lock_file)?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io(errno.into()))?;
        let mut contents = match self.load::<T>()? {
            Some((contents, _)) => {
                check(&contents)?;
                contents
            }
            None => T::default(),
        };
        let result = change(&mut contents)?;
        let text =
            serde_json::to_vec_pretty(&contents).map_err(|e| self.io(std::io::Error::other(e)))?;
        let tmp = self.sibling("new");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io(e))?;
        self.give_to_directory_owner(&file)?;
        file.write_all(&text).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(result)
    }

    /// When root writes into a directory another user owns, hands `file`
    /// to that user (and group); anyone else cannot, and needs not.
    fn give_to_directory_owner(&self, file: &File) -> Result<(), FileError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir,
            None => Path::new("."),
        };
        let owner = std::fs::metadata(dir).map_err(|e| self.io(e))?;
        let mine = file.metadata().map_err(|e| self.io(e))?;
        if owner.uid() == 0 || (owner.uid(), owner.gid()) == (mine.uid(), mine.gid()) {
            return Ok(());
        }
        std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| self.io(e))
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".");
        name.push(suffix);
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_dir::TempDir;

    #[derive(Default, Serialize, serde::Deserialize)]
    struct Contents {
        entries: Vec<u32>,
    }

    fn add(file: &SecretFile, entry: u32) {
        file.update(
            |_: &Contents| Ok(()),
            |c| {
                c.entries.push(entry);
                Ok::<_, FileError>(())
            },
        )
        .expect("update");
    }

    #[test]
    fn changes_are_kept_private_and_read_back() {
        let dir = TempDir::new("secret");
        let file = SecretFile::new(dir.0.join("s.json"), "test file", "remove it");
        add(&file, 1);
        add(&file, 2);
        let (contents, _) = file.load::<Contents>().expect("load").expect("exists");
        assert_eq!(contents.entries, [1, 2]);
        let mode = std::fs::metadata(file.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Root writing into a service user's directory leaves the files to
    /// that user; anyone else writes files of their own.
    #[test]
    fn files_belong_to_the_directory_owner() {
        let dir = TempDir::new("secret-owner");
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let expected = if nix::unistd::geteuid().is_root() {
            // `nobody`, as the packaged service's user would be.
            std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).expect("chown");
            (65534, 65534)
        } else {
            me
        };
        let file = SecretFile::new(dir.0.join("s.json"), "test file", "remove it");
        add(&file, 1);
        for path in [file.path().to_path_buf(), file.sibling("lock")] {
            let meta = std::fs::metadata(&path).expect("meta");
            assert_eq!((meta.uid(), meta.gid()), expected, "{}", path.display());
        }
    }
}
