//! Giving memory back after a spike of sessions.
//!
//! glibc's malloc keeps what is freed in its arenas for reuse. After 10,000
//! sessions connect and close, the process stayed at the spike's RSS for
//! good (18 → 218 MB, docs/BENCHMARKS.md, storm). Three things give it back:
//!
//! - [`configure`] fixes glibc's thresholds at start, so that large blocks
//!   stay mapped on their own and the arenas' free tops go back as they are
//!   freed, whatever large blocks came and went before;
//! - the sweeps ask [`Trimmer::observe`] once a second; it says to trim when
//!   the number of sessions has fallen to half its peak since the last
//!   trim, and once more when the last of a crowd has gone, so a steady
//!   server never trims and a dropped crowd is given back within a second
//!   or two. The sweeps then announce [`CrowdGone`];
//! - on that, each HTTP worker thread renews what actix's pools keep there
//!   ([`crate::session::transport::refresh_pools`]: entries made during the
//!   crowd would otherwise keep their pages), then calls `malloc_trim`
//!   ([`trim`]) on the blocking pool, which hands the free pages inside
//!   every arena back. It walks the arenas one at a time, holding each
//!   one's lock while it does.

/// Where glibc's thresholds are fixed (see [`configure`]): blocks from
/// this size up are mapped on their own, and a heap whose free top reaches
/// it gives that top back. These are glibc's starting values.
const THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's trim and mmap thresholds at their starting values.
///
/// Why: glibc raises both whenever a large block it mapped on its own is
/// freed (the session table's map for 10,000 sessions is 5 MiB: the mmap
/// threshold becomes 5 MiB, the trim threshold 10 MiB). From then on,
/// blocks up to that size are carved from the arenas, where they leave
/// gaps when they go, and each heap keeps up to 10 MiB of free top. After
/// a crowd closed, that was 10 MiB of RSS kept (docs/BENCHMARKS.md, storm).
/// Set once, before the server's threads start; setting them stops glibc's
/// adjusting.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two plain integers and only sets the
    // allocator's parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

/// Below this peak a spike is not worth a trim (a few MB at most).
pub const MIN_PEAK: usize = 500;

/// Tells each HTTP worker thread that a crowd has gone, so that it renews
/// what actix keeps per thread (see [`crate::session::transport::refresh_pools`])
/// and trims after it. Each worker's listener ends with its thread, or
/// once this is dropped.
#[derive(Debug)]
pub struct CrowdGone(tokio::sync::watch::Sender<u64>);

impl Default for CrowdGone {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(0))
    }
}

impl CrowdGone {
    /// Tells every listener.
    pub fn announce(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    /// A new listener; it hears the announcements made after this call.
    pub fn listen(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// When to trim, from the session count over time.
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: usize,
    /// A crowd came since the server was last empty: trim once more when
    /// the last of it has gone.
    crowd: bool,
}

impl Trimmer {
    /// Notes the current number of sessions; true when it is time to trim.
    pub fn observe(&mut self, sessions: usize) -> bool {
        self.peak = self.peak.max(sessions);
        if self.peak >= MIN_PEAK {
            self.crowd = true;
        }
        if self.crowd && sessions == 0 {
            self.crowd = false;
            self.peak = 0;
            return true;
        }
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

    /// The halvings stop below [`MIN_PEAK`]; what the last few hundred
    /// sessions held goes with one more trim once none is left, and only once.
    #[test]
    fn trims_once_more_when_a_crowd_has_gone() {
        let mut t = Trimmer::default();
        let trims: Vec<usize> = [10_000, 5_000, 2_500, 1_250, 600, 300, 120, 0, 0, 0]
            .into_iter()
            .filter(|&n| t.observe(n))
            .collect();
        assert_eq!(trims, [5_000, 2_500, 1_250, 600, 300, 0]);
        // A small crowd after it is not one.
        assert!(!t.observe(300));
        assert!(!t.observe(0));
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

    /// Blocks from 128 KiB up stay mapped on their own, and go back as they
    /// are freed, even after a large block came and went (glibc would then
    /// have raised its thresholds to that block's size, and kept blocks
    /// below it in its arenas). Run in a process of its own: the count of
    /// mapped bytes is the process's, and other tests map and unmap too.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_thresholds_stay_where_they_were_set() {
        const CHILD: &str = "QUOTECAST_THRESHOLD_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "--test-threads=1"])
                .arg("memory::tests::the_thresholds_stay_where_they_were_set")
                .env(CHILD, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{said}");
            assert!(said.contains("1 passed"), "{said}");
            return;
        }
        configure();
        std::thread::spawn(|| {
            // SAFETY: mallinfo2 only reads the allocator's counters.
            let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
            drop(std::hint::black_box(vec![1u8; 30 << 20]));
            let before = mapped();
            let block = std::hint::black_box(vec![1u8; 1 << 20]);
            let during = mapped();
            drop(block);
            let after = mapped();
            assert!(during >= before + (1 << 20), "{before} -> {during}");
            assert_eq!(after, before);
        })
        .join()
        .unwrap();
    }

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
}
