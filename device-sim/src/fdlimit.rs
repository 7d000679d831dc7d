//! The process's open-file limit: each control session holds a TCP
//! connection, so a large fleet needs far more descriptors than the usual
//! soft limit of 1 024. [`raise_open_file_limit`] raises the soft limit to
//! the hard one (no privilege needed); [`files_needed`] says how many a
//! fleet needs, so the caller can warn when even that is short.

/// Descriptors kept for everything but the control connections: the UDP
/// socket, the runtime, standard streams, a resolver.
pub const FILES_RESERVED: u64 = 64;

/// Raises the soft limit on open files to the hard limit and returns the
/// soft limit now in force (unchanged where the platform has none).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Open files a fleet of `devices` needs, with or without control sessions.
pub fn files_needed(devices: u32, control: bool) -> u64 {
    FILES_RESERVED + if control { u64::from(devices) } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_control_session_plus_a_reserve() {
        assert_eq!(files_needed(10_000, true), 10_064);
        assert_eq!(files_needed(10_000, false), FILES_RESERVED);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft);
        let now = raise_open_file_limit().expect("getrlimit works here");
        if let Ok(before) = before {
            assert!(now >= before, "{now} < {before}");
        }
    }
}
