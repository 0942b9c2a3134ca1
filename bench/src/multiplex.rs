//! The `multiplex` scenario: one `GET /ws/v1` socket subscribed to K
//! watchlists against K v1 sockets on the same watchlists, on one server in
//! one run (issue "One socket for many watchlists": messages/s and p99
//! within 10% of each other; checked one way, /ws/v1 no worse than v1 by
//! more than 10%).
//!
//! The two shapes take turns on the same quotecast, ABBA (so a drift of the
//! machine over the run weighs on both alike), each phase connecting its
//! sessions, measuring a window and closing them all before the next. Both
//! deliver the same messages: N sockets x K subscriptions, or N x K sockets
//! with one each. The ceiling has no `/ws/v1`, so this scenario measures
//! quotecast only.

use crate::client::WindowStats;
use crate::report::{self, Percentiles, Ratio, RunReport, ScenarioReport, Shape};
use crate::target::Kind;
use crate::{
    check, fmt_ms, invariant_checks, measure_on, progress, ratio, spec, Opts, Spec, FANOUT,
};
use std::time::Duration;

/// One shape's phases added up.
#[derive(Default)]
pub(crate) struct Total {
    pub(crate) window: WindowStats,
    server_cpu_s: f64,
    pub(crate) runs: usize,
}

impl Total {
    pub(crate) fn add(&mut self, run: &RunReport, window: WindowStats) {
        if let Some(us) = run.server.cpu_us_per_msg {
            self.server_cpu_s += us * window.msgs as f64 / 1e6;
        }
        // WindowStats::merge keeps the longest window (windows of one
        // process run side by side); phases run one after the other.
        let seconds = self.window.seconds + window.seconds;
        self.window.merge(window);
        self.window.seconds = seconds;
        self.runs += 1;
    }

    pub(crate) fn msgs_per_s(&self) -> f64 {
        self.window.msgs as f64 / self.window.seconds.max(1e-9)
    }

    pub(crate) fn cpu_us_per_msg(&self) -> Option<f64> {
        (self.window.msgs > 0).then(|| self.server_cpu_s * 1e6 / self.window.msgs as f64)
    }

    /// These totals against `base`'s: delivery, latency and server CPU.
    pub(crate) fn ratio_to(&self, base: &Total, what: String, shape: String) -> Ratio {
        let (p, pb) = (
            Percentiles::of(&self.window.latency),
            Percentiles::of(&base.window.latency),
        );
        Ratio {
            what,
            shape,
            msgs_per_s: ratio(Some(self.msgs_per_s()), Some(base.msgs_per_s())),
            p50: ratio(p.p50_ms, pb.p50_ms),
            p99: ratio(p.p99_ms, pb.p99_ms),
            connects_per_s: None,
            bytes_per_session: None,
            cpu_us_per_msg: ratio(self.cpu_us_per_msg(), base.cpu_us_per_msg()),
        }
    }
}

pub async fn scenario(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    if o.only == Some(crate::Only::Ceiling) {
        return Err(
            "multiplex: the ceiling has no /ws/v1; this scenario measures quotecast".into(),
        );
    }
    let base = spec(
        o,
        Shape {
            sessions: 200,
            watchlists: 10,
            distinct: 200,
            tick_ms: 100,
            ..FANOUT
        },
        2.0,
        6.0,
    );
    let subs = o.subscriptions.unwrap_or(10).max(1);
    if subs > base.shape.watchlists {
        return Err(format!(
            "multiplex: --subscriptions {subs} is more than the {} watchlists (a socket subscribes to each once)",
            base.shape.watchlists
        ));
    }
    let multi = Spec {
        shape: Shape {
            subscriptions: subs,
            ..base.shape.clone()
        },
        ..base.clone()
    };
    let single = Spec {
        shape: Shape {
            sessions: base.shape.sessions * subs,
            ..base.shape.clone()
        },
        ..base.clone()
    };
    crate::check_fd_room(o, single.shape.sessions)?;

    let load_before = crate::procinfo::loadavg();
    progress(format!(
        "quotecast: multiplex, {} rounds of [{}] and [{}] (load {load_before})",
        o.rounds.max(1),
        report::shape_label(&multi.shape),
        report::shape_label(&single.shape)
    ));
    let mut t = crate::start_target(o, Kind::Quotecast, &single.shape, None).await?;
    let measured = async {
        let ids = t
            .create_watchlists(
                base.shape.watchlists,
                base.shape.symbols,
                base.shape.distinct,
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut m, mut s) = (Total::default(), Total::default());
        for round in 0..o.rounds.max(1) {
            let order = if round % 2 == 0 {
                [&multi, &single]
            } else {
                [&single, &multi]
            };
            for phase in order {
                let load = crate::procinfo::loadavg();
                progress(format!(
                    "  round {}: {} (load {load})",
                    round + 1,
                    report::shape_label(&phase.shape)
                ));
                let (run, window) = measure_on(o, &t, phase, ids.clone(), None, load).await?;
                invariant_checks(o, &run, &mut rep.checks);
                if phase.shape.subscriptions > 0 {
                    &mut m
                } else {
                    &mut s
                }
                .add(&run, window);
                rep.runs.push(run);
            }
        }
        Ok::<_, String>((m, s))
    }
    .await;
    let stopped = t.stop().await;
    let (m, s) = measured?;
    stopped?;

    let (mp, sp) = (
        Percentiles::of(&m.window.latency),
        Percentiles::of(&s.window.latency),
    );
    let r = m.ratio_to(
        &s,
        format!("one /ws/v1 socket x {subs} subscriptions / {subs} v1 sockets"),
        format!(
            "{} watchlists x {} symbols ({} distinct), tick {} ms, {} rounds",
            base.shape.watchlists,
            base.shape.symbols,
            base.shape.distinct,
            base.shape.tick_ms,
            m.runs
        ),
    );
    // "Within 10% of each other" guards against multiplexing costing more;
    // a multiplexed socket that does better (fewer, fuller writes) passes.
    rep.checks.push(check(
        "msgs/s, /ws/v1 vs v1 sockets",
        ">= 0.90x",
        format!(
            "{:.0} vs {:.0} = {:.2}x",
            m.msgs_per_s(),
            s.msgs_per_s(),
            r.msgs_per_s.unwrap_or(f64::NAN)
        ),
        r.msgs_per_s.is_some_and(|v| v >= 0.9),
    ));
    rep.checks.push(check(
        "p99 delivery latency, /ws/v1 vs v1 sockets",
        "<= 1.10x",
        format!(
            "{} vs {} = {:.2}x",
            fmt_ms(mp.p99_ms),
            fmt_ms(sp.p99_ms),
            r.p99.unwrap_or(f64::NAN)
        ),
        r.p99.is_some_and(|v| v <= 1.1),
    ));
    let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} us"));
    rep.notes.push(format!(
        "all rounds: /ws/v1 {} msgs in {:.1} s, p50 {} p99 {}, server {}/msg, {} gaps; \
         v1 {} msgs in {:.1} s, p50 {} p99 {}, server {}/msg, {} gaps",
        m.window.msgs,
        m.window.seconds,
        fmt_ms(mp.p50_ms),
        fmt_ms(mp.p99_ms),
        us(m.cpu_us_per_msg()),
        m.window.gaps,
        s.window.msgs,
        s.window.seconds,
        fmt_ms(sp.p50_ms),
        fmt_ms(sp.p99_ms),
        us(s.cpu_us_per_msg()),
        s.window.gaps
    ));
    rep.ratios.push(r);
    Ok(())
}
