//! One grid of instants, shared by the fetcher's ticks and the sessions'
//! heartbeats, and laid on wall-clock time (Unix time), so the instances of
//! a cluster tick together and a new poller continues its predecessor's
//! grid.
//!
//! Every tick is followed by a burst of deliveries to every session. If the
//! heartbeat pings (and so the pongs) came at a random point of the tick, a
//! share of the deliveries would wait behind them; on one grid they can be put
//! half a tick after the tick, in the quiet part. The fetcher ticks at
//! `k * poll_interval` and every session pings at
//! `poll_interval / 2 + k * heartbeat_interval` from the same epoch, so when
//! the heartbeat is a multiple of the tick (5 s and 1 s by default) the pings
//! always fall between two broadcasts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Now as a duration since the Unix epoch.
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The first instant after now of the form `unix epoch + offset + k * period`.
pub fn next_on_grid(period: Duration, offset: Duration) -> Instant {
    let now = Instant::now();
    let unix = unix_now();
    // The same grid, laid from an instant standing for the Unix epoch.
    let period_ns = period.as_nanos().max(1);
    let back = Duration::from_nanos((unix.as_nanos() % period_ns) as u64);
    let base = now.checked_sub(back).unwrap_or(now) + offset.min(period);
    next_after(base, period, now)
}

/// Which grid point of `period` now is nearest to (Unix time / period,
/// rounded): the tick id of a single process.
pub fn grid_index(period: Duration) -> u64 {
    let period_ms = period.as_millis().max(1);
    ((unix_now().as_millis() + period_ms / 2) / period_ms) as u64
}

/// Where on the grid to put a heartbeat of `heartbeat` so that it falls half
/// a tick after a tick. Kept below one heartbeat so the first ping is never
/// further away than that (a 60 s tick must not delay the first ping by 30 s).
pub fn between_ticks(poll: Duration, heartbeat: Duration) -> Duration {
    let half_tick = (poll / 2).as_nanos();
    Duration::from_nanos((half_tick % heartbeat.as_nanos().max(1)) as u64)
}

fn next_after(base: Instant, period: Duration, now: Instant) -> Instant {
    if base > now {
        return base;
    }
    let period_ns = period.as_nanos().max(1);
    let k = (now - base).as_nanos() / period_ns + 1;
    base + Duration::from_nanos((period_ns * k) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_point_is_after_now_and_on_the_grid() {
        let base = Instant::now();
        let p = Duration::from_millis(100);
        let now = base + Duration::from_millis(250);
        assert_eq!(next_after(base, p, now), base + Duration::from_millis(300));
        // Exactly on a point: the next one, never now.
        let now = base + Duration::from_millis(300);
        assert_eq!(next_after(base, p, now), base + Duration::from_millis(400));
        // A base still ahead is itself the next point.
        assert_eq!(next_after(now, p, base), now);
    }

    #[test]
    fn heartbeat_offset_stays_within_one_heartbeat() {
        let ms = Duration::from_millis;
        assert_eq!(between_ticks(ms(1000), ms(5000)), ms(500));
        assert_eq!(between_ticks(ms(60_000), ms(5000)), ms(0));
        assert_eq!(between_ticks(ms(15_000), ms(5000)), ms(2500));
    }

    #[test]
    fn the_grid_lies_on_unix_time() {
        let p = Duration::from_millis(100);
        let at = next_on_grid(p, Duration::ZERO);
        let unix_at = unix_now() + at.saturating_duration_since(Instant::now());
        let off = unix_at.as_millis() % 100;
        assert!(!(3..=97).contains(&off), "{off} ms off the grid");
        let i = grid_index(p);
        let unix_ms = unix_now().as_millis() as u64;
        assert!(
            i * 100 <= unix_ms + 60 && unix_ms <= i * 100 + 60,
            "{i} vs {unix_ms}"
        );
    }

    #[test]
    fn zero_period_does_not_divide_by_zero() {
        let base = Instant::now();
        let now = base + Duration::from_millis(1);
        assert!(next_after(base, Duration::ZERO, now) > now);
    }
}
