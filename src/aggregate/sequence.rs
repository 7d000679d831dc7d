//! Per-device packet accounting from sequence numbers.
//!
//! The tracker keeps the highest sequence number seen and a bitmap of the
//! [`REORDER_WINDOW`] numbers below it. A jump forward counts the numbers
//! skipped as lost; when one of them arrives later it is moved from lost to
//! reordered; a number already seen is a duplicate. Sequence numbers wrap
//! (distances are taken modulo 2³²).
//!
//! A device that reboots starts again at 0. That is told apart from a late
//! or duplicated datagram by the device's clock: a datagram whose sequence
//! number goes back but whose timestamp is *newer* than the newest seen
//! starts a new epoch (a restart), and nothing is counted lost. So is a
//! forward jump of more than [`MAX_GAP`] with a newer timestamp (a device
//! whose counter was reset to a random value). Losses at the very end of an
//! epoch are never seen, as with any sequence-based accounting, and a copy
//! delayed across a reboot whose number is ahead of the new epoch's reads
//! as a jump forward (it needs a datagram delayed by a whole reboot).

/// How far back (in sequence numbers) late arrivals are recognised.
pub const REORDER_WINDOW: u32 = 1024;
/// Largest forward jump still counted as loss rather than a restart.
pub const MAX_GAP: u32 = 1 << 16;

const WORDS: usize = (REORDER_WINDOW / 64) as usize;

/// What the tracker made of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The device's first datagram.
    First,
    /// Newer than all before; `skipped` numbers are now counted lost.
    InOrder {
        /// Sequence numbers jumped over.
        skipped: u32,
    },
    /// Arrived after a higher number (it was counted lost until now, unless
    /// it predates the epoch's first datagram or the reorder window).
    Reordered,
    /// Seen before.
    Duplicate,
    /// The device restarted its sequence (reboot).
    Restart,
}

/// Counters of one device (or of the whole hub, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqCounts {
    /// Datagrams accepted, duplicates included.
    pub received: u64,
    /// Sequence numbers never received (so far).
    pub lost: u64,
    /// Datagrams that arrived after a higher sequence number.
    pub reordered: u64,
    /// Datagrams received more than once (the extra copies).
    pub duplicated: u64,
    /// Sequence restarts (reboots).
    pub restarts: u64,
}

impl SeqCounts {
    /// Lost as a fraction of expected (received once + lost), 0 when empty.
    pub fn loss_ratio(&self) -> f64 {
        let unique = self.received - self.duplicated;
        let expected = unique + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 / expected as f64
        }
    }

    /// Adds another device's counts.
    pub fn add(&mut self, other: &SeqCounts) {
        self.received += other.received;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.duplicated += other.duplicated;
        self.restarts += other.restarts;
    }
}

/// Sequence state of one device.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    started: bool,
    epoch_start: u32,
    max_seq: u32,
    max_time_ms: u64,
    /// Bit `i` set: `max_seq - i` was received.
    seen: [u64; WORDS],
    counts: SeqCounts,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            started: false,
            epoch_start: 0,
            max_seq: 0,
            max_time_ms: 0,
            seen: [0; WORDS],
            counts: SeqCounts::default(),
        }
    }
}

impl SeqTracker {
    /// The counters so far.
    pub fn counts(&self) -> &SeqCounts {
        &self.counts
    }

    /// Accounts for one datagram with sequence number `seq` and device time
    /// `time_ms`.
    pub fn observe(&mut self, seq: u32, time_ms: u64) -> SeqVerdict {
        self.counts.received += 1;
        if !self.started {
            self.started = true;
            self.begin_epoch(seq, time_ms);
            return SeqVerdict::First;
        }
        let ahead = seq.wrapping_sub(self.max_seq);
        let newer_clock = time_ms > self.max_time_ms;
        if ahead != 0 && ahead < 1 << 31 {
            if ahead > MAX_GAP && newer_clock {
                return self.restart(seq, time_ms);
            }
            self.counts.lost += u64::from(ahead - 1);
            self.shift(ahead);
            self.seen[0] |= 1;
            self.max_seq = seq;
            self.max_time_ms = self.max_time_ms.max(time_ms);
            return SeqVerdict::InOrder { skipped: ahead - 1 };
        }
        if newer_clock {
            return self.restart(seq, time_ms);
        }
        let back = self.max_seq.wrapping_sub(seq);
        let before_epoch = seq.wrapping_sub(self.epoch_start) >= 1 << 31;
        if back >= REORDER_WINDOW || before_epoch {
            // Too old to tell, or never counted as lost: late, not lost.
            self.counts.reordered += 1;
            return SeqVerdict::Reordered;
        }
        let (word, bit) = ((back / 64) as usize, back % 64);
        if self.seen[word] & (1 << bit) != 0 {
            self.counts.duplicated += 1;
            return SeqVerdict::Duplicate;
        }
        self.seen[word] |= 1 << bit;
        self.counts.lost = self.counts.lost.saturating_sub(1);
        self.counts.reordered += 1;
        SeqVerdict::Reordered
    }

    fn begin_epoch(&mut self, seq: u32, time_ms: u64) {
        self.epoch_start = seq;
        self.max_seq = seq;
        self.max_time_ms = time_ms;
        self.seen = [0; WORDS];
        self.seen[0] = 1;
    }

    fn restart(&mut self, seq: u32, time_ms: u64) -> SeqVerdict {
        self.counts.restarts += 1;
        self.begin_epoch(seq, time_ms);
        SeqVerdict::Restart
    }

    /// Moves the bitmap `by` places towards older numbers.
    fn shift(&mut self, by: u32) {
        if by >= REORDER_WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let mut value = src.map_or(0, |s| self.seen[s] << bits);
            if bits > 0 {
                if let Some(lower) = src.and_then(|s| s.checked_sub(1)) {
                    value |= self.seen[lower] >> (64 - bits);
                }
            }
            self.seen[i] = value;
        }
    }
}

#[cfg(test)]
mod tests;
