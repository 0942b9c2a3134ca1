//! Giving memory back after a spike of sessions.
//!
//! glibc's malloc keeps what is freed in its arenas for reuse. After 10,000
//! sessions connect and close, the process stayed at the spike's RSS for
//! good (18 → 218 MB, docs/BENCHMARKS.md, storm). `malloc_trim` hands the
//! free pages of every arena back to the kernel. The sweeps ask
//! [`Trimmer::observe`] once a second; it says to trim when the number of
//! sessions has fallen to half its peak since the last trim, so a steady
//! server never trims and a dropped crowd is given back within a second or
//! two. The trim runs on the blocking pool: it walks the arenas one at a
//! time, holding each one's lock while it does.

/// Below this peak a spike is not worth a trim (a few MB at most).
pub const MIN_PEAK: usize = 500;

/// When to trim, from the session count over time.
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: usize,
}

impl Trimmer {
    /// Notes the current number of sessions; true when it is time to trim.
    pub fn observe(&mut self, sessions: usize) -> bool {
        self.peak = self.peak.max(sessions);
        if self.peak >= MIN_PEAK && sessions <= self.peak / 2 {
            self.peak = sessions;
            true
        } else {
            false
        }
    }
}

/// Returns the allocator's free memory to the system. False where there is
/// nothing to call (not glibc) or nothing was given back.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer and only touches the
        // allocator's own state, under its own locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_crowd_has_halved() {
        let mut t = Trimmer::default();
        assert!(!t.observe(0));
        assert!(!t.observe(10_000));
        assert!(!t.observe(6_000));
        assert!(t.observe(5_000));
        // The peak starts again from what is left.
        assert!(!t.observe(4_000));
        assert!(!t.observe(3_000));
        assert!(t.observe(2_500));
    }

    #[test]
    fn a_small_or_steady_server_never_trims() {
        let mut t = Trimmer::default();
        for n in [0, 100, 400, 0, 499, 10, 0] {
            assert!(!t.observe(n), "{n}");
        }
        let mut t = Trimmer::default();
        for n in (0..100).map(|i| 2_000 + (i % 7) * 100) {
            assert!(!t.observe(n), "{n}");
        }
    }

    /// Freed memory below blocks still in use cannot go back by `free`
    /// alone (only the top of a heap shrinks by itself); a trim returns it.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_gives_freed_memory_back() {
        // Each freed block sits between two small ones that stay, so none
        // of them can merge into the top of a heap and go back by itself.
        let (blocks, pins): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (0..4096)
            .map(|_| (vec![1u8; 16 * 1024], vec![1u8; 64]))
            .unzip();
        drop(blocks);
        let before = rss_bytes();
        assert!(trim(), "nothing was given back");
        let after = rss_bytes();
        // 64 MiB were freed, at least 12 KiB of each block in whole pages;
        // other tests run in parallel, so ask for less than that.
        assert!(
            before.saturating_sub(after) >= 24 << 20,
            "RSS {before} -> {after}"
        );
        drop(pins);
    }

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
}
