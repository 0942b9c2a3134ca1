//! The `storm` scenario (issue "Connect path and reconnect storms"): on
//! each target, N sessions connect (connects/s); then the server drops every
//! one of them at once and each reconnects at once (time until all N are
//! back with their snapshots); a short window checks that quotes flow again;
//! then all close, and the server's RSS is sampled for a while after, against
//! the one before any session connected.
//!
//! How "the server drops every session at once" without a server API for it:
//! quotecast's sessions connect with a token of their own, which the bench
//! revokes with quotecast's CLI (as an operator would, next to the running
//! server); the revocation sweep then closes every session of that token in
//! one pass over the session table, with 1008. The sessions come back with a
//! second token. The ceiling does the same on SIGUSR1: every connection gets
//! a 1008 close at once. The storm is timed from the first drop a client
//! sees, so the sweep's interval (`realtime.auth_recheck_interval_ms`) does
//! not count.

use crate::client::{Reconnect, StormStats};
use crate::report::{self, Percentiles, RunReport, ScenarioReport, StormReport};
use crate::target::{Kind, Target};
use crate::{check, find, kinds, procinfo, progress, spec, Connected, Lived, Opts, Spec, FANOUT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// RSS after close must come back within this factor of the baseline.
const RSS_BACK: f64 = 1.25;

pub async fn scenario(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    if o.url.is_some() {
        return Err(
            "storm: needs a server the bench starts (it drops the sessions by revoking their \
             token with the server's CLI); drop --url"
                .into(),
        );
    }
    let s = spec(o, FANOUT, 2.0, 3.0);
    for k in kinds(o) {
        let r = storm_run(o, k, &s).await?;
        let st = r.storm.as_ref().ok_or("storm run without a storm report")?;
        rep.checks.push(check(
            &format!("{}: sessions back after the storm", r.target),
            &format!("{} of {}, none failed", st.sessions, st.sessions),
            format!(
                "{} back, {} failed, {} pending",
                st.reconnected, st.failed, st.pending
            ),
            st.sessions == r.connect.ok
                && st.reconnected == st.sessions
                && st.failed == 0
                && st.pending == 0,
        ));
        if k == Kind::Quotecast {
            crate::invariant_checks(o, &r, &mut rep.checks);
            rep.checks.push(check(
                &format!(
                    "quotecast RSS after all {} sessions closed, within {:.0} s",
                    r.connect.ok, o.rss_watch
                ),
                "within 25% above the pre-connect baseline",
                match (st.rss_baseline, st.rss_after_close.last()) {
                    (Some(b), Some(&(t, last))) => format!(
                        "{:.1} MiB before, peak {}, {:.1} MiB after {t:.0} s ({:+.0}%){}",
                        b as f64 / 1048576.0,
                        st.rss_peak
                            .map_or("-".into(), |p| format!("{:.1} MiB", p as f64 / 1048576.0)),
                        last as f64 / 1048576.0,
                        (last as f64 / b as f64 - 1.0) * 100.0,
                        st.rss_back_within_s
                            .map_or(String::new(), |v| format!("; within after {v:.0} s"))
                    ),
                    _ => "-".into(),
                },
                st.rss_back_within_s.is_some(),
            ));
        }
        if let Some(bps) = r.server.bytes_per_session {
            rep.notes.push(format!(
                "{}: server RSS per connected session {bps:.0} B ({} sessions on a {} ms tick; \
                 the `idle` scenario measures it at a 60 s tick)",
                r.target, r.connect.ok, r.shape.tick_ms
            ));
        }
        rep.runs.push(r);
    }
    let (Some(q), Some(c)) = (
        find(&rep.runs, Kind::Quotecast),
        find(&rep.runs, Kind::Ceiling),
    ) else {
        return Ok(());
    };
    let connects = q.connect.per_s / c.connect.per_s.max(1e-9);
    rep.checks.push(check(
        &format!("connects/s vs ceiling at {} sessions", q.connect.ok),
        ">= 0.80x",
        format!(
            "{:.0} vs {:.0} = {connects:.2}x",
            q.connect.per_s, c.connect.per_s
        ),
        connects >= 0.8,
    ));
    let (qs, cs) = (
        q.storm.as_ref().and_then(|s| s.storm_s),
        c.storm.as_ref().and_then(|s| s.storm_s),
    );
    let x = crate::ratio(qs, cs);
    rep.checks.push(check(
        "reconnect storm: drop to all sessions back with snapshots, vs ceiling",
        "<= 1.3x",
        format!(
            "{} vs {} = {}",
            qs.map_or("-".into(), |v| format!("{v:.2} s")),
            cs.map_or("-".into(), |v| format!("{v:.2} s")),
            x.map_or("-".into(), |v| format!("{v:.2}x"))
        ),
        x.is_some_and(|v| v <= 1.3),
    ));
    let r = crate::ratio_of(q, c);
    rep.ratios.push(r);
    Ok(())
}

/// One target: started, connected, stormed, measured, closed, watched,
/// stopped.
async fn storm_run(o: &Opts, kind: Kind, spec: &Spec) -> Result<RunReport, String> {
    let s = &spec.shape;
    crate::check_fd_room(o, s.sessions)?;
    let load_before = procinfo::loadavg();
    progress(format!(
        "{}: storm, {} (load {load_before})",
        kind.name(),
        report::shape_label(s)
    ));
    let mut t = crate::start_target(o, kind, s, None).await?;
    let run = storm_on(o, &mut t, spec, load_before).await;
    let stopped = t.stop().await;
    let run = run?;
    stopped?;
    Ok(run)
}

/// How the target will drop every session, and the credentials to come back.
struct Dropper {
    /// Quotecast: the token the sessions connect with, to revoke.
    revoke: Option<i64>,
    connect_token: Option<String>,
    reconnect_token: Option<String>,
}

impl Dropper {
    async fn of(t: &Target) -> Result<Self, String> {
        match t.kind {
            Kind::Quotecast => {
                let (id, first) = t.issue_token("storm-drop").await?;
                let (_, second) = t.issue_token("storm-back").await?;
                Ok(Dropper {
                    revoke: Some(id),
                    connect_token: Some(first),
                    reconnect_token: Some(second),
                })
            }
            Kind::Ceiling => Ok(Dropper {
                revoke: None,
                connect_token: None,
                reconnect_token: None,
            }),
        }
    }

    fn how(&self) -> &'static str {
        match self.revoke {
            Some(_) => "their token revoked with the CLI; the revocation sweep closes them",
            None => "SIGUSR1: the ceiling closes every connection",
        }
    }

    async fn drop_all(&self, t: &Target) -> Result<(), String> {
        match self.revoke {
            Some(id) => t
                .run_cli(&["token", "revoke", &id.to_string()])
                .await
                .map(drop),
            None => t.signal(libc::SIGUSR1),
        }
    }
}

async fn storm_on(
    o: &Opts,
    t: &mut Target,
    spec: &Spec,
    load_before: String,
) -> Result<RunReport, String> {
    let s = &spec.shape;
    let ids = t
        .create_watchlists(s.watchlists, s.symbols, s.distinct)
        .await?;
    let dropper = Dropper::of(t).await?;
    let mut plan = crate::plan_for(o, t, ids);
    plan.subscriptions = s.subscriptions;
    plan.token = dropper.connect_token.clone();
    plan.reconnect = Some(Reconnect {
        token: dropper.reconnect_token.clone(),
        concurrency: o.storm_concurrency,
        limit_ms: o.storm_limit_ms,
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = t.sample();

    let Connected {
        mut clients,
        stats: cs,
        report: connect,
        metrics_start,
    } = crate::connect_all(o, t, plan, s.sessions).await?;
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;
    let loaded = t.sample();

    // The drop may wait for the server's next revocation sweep: the
    // server's CPU is sampled from before the drop is asked for to after
    // the last session is back, and read over the storm's own span.
    let sampling = AtomicBool::new(true);
    let before: Vec<_> = t
        .cpu_seconds()
        .map(|cpu| (crate::client::wall_us(), cpu))
        .into_iter()
        .collect();
    let (storm, cpu_samples) = tokio::join!(
        async {
            let limit = Duration::from_millis(o.storm_limit_ms) + Duration::from_secs(30);
            let st = async {
                dropper.drop_all(t).await?;
                clients.await_storm(limit).await
            }
            .await;
            sampling.store(false, Ordering::Relaxed);
            st
        },
        sample_cpu(t, &sampling, before)
    );
    let storm = storm?;
    let mut report = storm_report(&storm, dropper.how());
    let storm_cpu_s = cpu_over(&cpu_samples, storm.first_drop_us, storm.last_back_us);
    report.server_cpu_percent = storm_cpu_s
        .zip(report.storm_s)
        .map(|(cpu_s, wall)| cpu_s / wall.max(1e-3) * 100.0);
    report.server_cpu_us_per_session = storm_cpu_s
        .filter(|_| storm.reconnected > 0)
        .map(|cpu_s| cpu_s * 1e6 / storm.reconnected as f64);
    progress(format!(
        "  storm: {} of {} dropped, {} back in {}, {} failed",
        storm.dropped,
        storm.sessions,
        storm.reconnected,
        report.storm_s.map_or("-".into(), |v| format!("{v:.2} s")),
        storm.failed
    ));

    // Quotes must flow again on the new sockets.
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;
    let window_start = t.sample();
    clients.start_window()?;
    tokio::time::sleep(Duration::from_secs_f64(spec.duration)).await;
    let window = clients.end_window().await?;
    let window_end = t.sample();

    let close = clients.close().await?;
    let closed = Instant::now();
    drop(clients);
    let drained = t.wait_drained(Duration::from_secs(15)).await;
    let metrics_end = t.metrics().await;
    let rss_after_close = watch_rss(t, closed, o.rss_watch, o.rss_step).await;

    let mut server = crate::loaded_server(
        t,
        crate::dropped_between(&metrics_start, &metrics_end),
        &baseline,
        &loaded,
        cs.ok,
    );
    server.rss_after_close = rss_after_close.last().map(|x| x.1);
    crate::window_cpu(&mut server, &window_start, &window_end, &window);
    let baseline_rss = baseline.as_ref().map(|b| b.rss_bytes);
    let storm = StormReport {
        rss_baseline: baseline_rss,
        // VmHWM is updated lazily and the kernel's RSS counts are
        // approximate: a sample may read above it.
        rss_peak: [
            t.pid.and_then(procinfo::peak_rss),
            loaded.as_ref().map(|l| l.rss_bytes),
            rss_after_close.iter().map(|x| x.1).max(),
        ]
        .into_iter()
        .flatten()
        .max(),
        rss_back_within_s: baseline_rss.and_then(|b| {
            rss_after_close
                .iter()
                .find(|(_, rss)| *rss as f64 <= b as f64 * RSS_BACK)
                .map(|(t, _)| *t)
        }),
        rss_after_close,
        ..report
    };
    let reconnected = storm.reconnected;
    let lived = Lived {
        connect,
        window,
        close,
        drained,
    };
    Ok(RunReport {
        storm: Some(storm),
        ..crate::windowed_run(o, t.kind, s, load_before, server, &lived, reconnected)
    })
}

/// The clients' side of the storm; the server's figures are filled in after.
fn storm_report(st: &StormStats, drop_by: &str) -> StormReport {
    let span = |a: Option<i64>, b: Option<i64>| Some((b? - a?) as f64 / 1e6);
    let storm_s = span(st.first_drop_us, st.last_back_us);
    StormReport {
        drop_by: drop_by.to_owned(),
        sessions: st.sessions,
        dropped: st.dropped,
        reconnected: st.reconnected,
        failed: st.failed,
        retries: st.retries,
        pending: st.pending,
        drop_window_s: span(st.first_drop_us, st.last_drop_us),
        storm_s,
        sessions_per_s: storm_s
            .filter(|&v| v > 0.0)
            .map(|v| st.reconnected as f64 / v),
        reconnect_latency: Percentiles::of(&st.latency),
        errors: st.errors.clone(),
        close_codes: st.close_codes.clone(),
        server_cpu_percent: None,
        server_cpu_us_per_session: None,
        rss_baseline: None,
        rss_peak: None,
        rss_after_close: Vec::new(),
        rss_back_within_s: None,
    }
}

/// The server's RSS at `since`, then every `step` seconds up to `watch`
/// seconds after it: (seconds after `since`, bytes).
async fn watch_rss(t: &Target, since: Instant, watch: f64, step: f64) -> Vec<(f64, u64)> {
    let step = step.max(0.1);
    let mut trace = Vec::new();
    for k in 0.. {
        let at = k as f64 * step;
        if at > watch + 1e-9 {
            break;
        }
        tokio::time::sleep_until((since + Duration::from_secs_f64(at)).into()).await;
        match t.pid.and_then(procinfo::sample) {
            Some(x) => trace.push((since.elapsed().as_secs_f64(), x.rss_bytes)),
            None => break,
        }
    }
    trace
}

/// `out` (samples taken before), then the server's CPU seconds every 10 ms
/// while `on` holds and once after, each with the wall-clock microseconds
/// it was read at (the clients' storm times are wall-clock too, and may
/// come from other processes).
async fn sample_cpu(t: &Target, on: &AtomicBool, mut out: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    let sample = |out: &mut Vec<(i64, f64)>| {
        if let Some(cpu) = t.cpu_seconds() {
            out.push((crate::client::wall_us(), cpu));
        }
    };
    while on.load(Ordering::Relaxed) {
        sample(&mut out);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One more, after the storm was seen to end.
    sample(&mut out);
    out
}

/// CPU seconds used from `from` to `to` (wall-clock microseconds): from the
/// last sample at or before `from` to the first at or after `to`, so the
/// span is covered whole (at most 10 ms more on each side).
fn cpu_over(samples: &[(i64, f64)], from: Option<i64>, to: Option<i64>) -> Option<f64> {
    let (from, to) = (from?, to?);
    let start = samples.iter().rev().find(|(t, _)| *t <= from)?.1;
    let end = samples.iter().find(|(t, _)| *t >= to)?.1;
    Some(end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_time_runs_from_the_first_drop_to_the_last_session_back() {
        let st = StormStats {
            sessions: 4,
            dropped: 4,
            reconnected: 4,
            first_drop_us: Some(1_000_000),
            last_drop_us: Some(1_200_000),
            last_back_us: Some(3_000_000),
            ..Default::default()
        };
        let r = storm_report(&st, "test");
        assert_eq!(r.storm_s, Some(2.0));
        assert_eq!(r.drop_window_s, Some(0.2));
        assert_eq!(r.sessions_per_s, Some(2.0));
        let none = storm_report(&StormStats::default(), "test");
        assert_eq!((none.storm_s, none.sessions_per_s), (None, None));
    }

    #[test]
    fn server_cpu_covers_the_storm_and_not_the_wait_before_it() {
        // CPU seconds sampled every 10 ms (in microseconds of wall clock):
        // busy before the drop (the wait for the sweep), then the storm.
        let samples: Vec<(i64, f64)> = vec![
            (0, 1.0),
            (10_000, 1.5),
            (20_000, 1.6),
            (30_000, 1.7),
            (40_000, 2.0),
            (50_000, 2.0),
        ];
        // From the last sample at or before the first drop to the first at
        // or after the last session back.
        let cpu = cpu_over(&samples, Some(15_000), Some(35_000)).unwrap();
        assert!((cpu - 0.5).abs() < 1e-9, "{cpu}");
        assert!((cpu_over(&samples, Some(10_000), Some(30_000)).unwrap() - 0.2).abs() < 1e-9);
        // Not covered by the samples, or no storm: no figure.
        assert_eq!(cpu_over(&samples, Some(15_000), Some(60_000)), None);
        assert_eq!(cpu_over(&samples, None, Some(30_000)), None);
    }
}
