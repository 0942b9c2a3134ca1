//! The `cpu` scenario (issue "Connect path and reconnect storms"): server
//! CPU per delivered message, quotecast against the ceiling, at the two
//! shapes the issue names: 2,000 sessions on a 100 ms tick (over 100
//! watchlists, the `throughput` shape) and 10,000 sessions on a 1 s tick (on
//! one watchlist, the `fanout` shape). `fanout` and `throughput` record the
//! same figure per run; this prints just these two, with their ratios.

use crate::report::{RunReport, ScenarioReport, Shape};
use crate::target::Kind;
use crate::{check, invariant_checks, kinds, measure, ratio, ratio_of, spec, Opts, FANOUT};

pub async fn scenario(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let shapes = [
        (
            spec(
                o,
                Shape {
                    sessions: 2_000,
                    watchlists: 100,
                    distinct: 200,
                    tick_ms: 100,
                    ..FANOUT
                },
                2.0,
                6.0,
            ),
            1.15,
        ),
        (spec(o, FANOUT, 3.0, 10.0), 1.25),
    ];
    for (s, bound) in shapes {
        let (mut q, mut c): (Option<RunReport>, Option<RunReport>) = (None, None);
        for k in kinds(o) {
            let r = measure(o, k, &s, None).await?;
            match k {
                Kind::Quotecast => {
                    invariant_checks(o, &r, &mut rep.checks);
                    q = Some(r.clone());
                }
                Kind::Ceiling => c = Some(r.clone()),
            }
            rep.runs.push(r);
        }
        let label = format!(
            "{} sessions x {} ms tick",
            s.shape.sessions, s.shape.tick_ms
        );
        let us = |r: &Option<RunReport>| {
            r.as_ref()
                .and_then(|r| r.server.cpu_us_per_msg)
                .map_or("-".into(), |v| format!("{v:.1} us"))
        };
        let cpu = |r: &Option<RunReport>| r.as_ref().and_then(|r| r.server.cpu_us_per_msg);
        let x = ratio(cpu(&q), cpu(&c));
        rep.checks.push(check(
            &format!("server CPU per delivered message, {label}, quotecast vs ceiling"),
            &format!("<= {bound:.2}x"),
            format!(
                "{} vs {} = {}",
                us(&q),
                us(&c),
                x.map_or("-".into(), |v| format!("{v:.2}x"))
            ),
            x.is_some_and(|v| v <= bound),
        ));
        if let (Some(q), Some(c)) = (&q, &c) {
            rep.ratios.push(ratio_of(q, c));
        }
    }
    Ok(())
}
