//! Smoke test of the load client (`quotecast-bench`): one small end-to-end
//! run against a quotecast it starts itself and against the ceiling
//! broadcaster, checking the report's structure and the invariants that
//! hold on any machine. Timings are not asserted: they belong to
//! docs/BENCHMARKS.md, measured on a quiet machine with release builds.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SESSIONS: u64 = 200;

/// The server binary of this source tree, built if it is not up to date.
///
/// Cargo hands a test only its own package's binaries (`CARGO_BIN_EXE_*`), and
/// the server is another package of the workspace; a path guessed under
/// `target/` could be missing or stale. So the test asks the Cargo that runs it
/// to build the server, in the test's own target directory and profile, and
/// takes the executable's path from Cargo's report. Once built, this only
/// checks the server is up to date.
fn server_bin() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, whatever the target triple.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir");
    // The test runs from `<target dir>[/<triple>]/<profile dir>/deps/`.
    let exe = std::env::current_exe().expect("current_exe");
    let profile = match exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
    {
        Some(dir) if dir == "debug" => "dev".to_owned(),
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => panic!("no profile directory above {}", exe.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // What Cargo set for this test, not what the user set for Cargo: some
    // build scripts (ring's) watch CARGO_MANIFEST_DIR, and seeing it set here
    // but not in the user's `cargo test` would rebuild them each time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "CARGO_MANIFEST_DIR"
            || key == "CARGO_MANIFEST_PATH"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
        {
            build.env_remove(&*key);
        }
    }
    // `--workspace` resolves features as `cargo test` at the root does (but for
    // dev-dependencies), so the build shares that run's dependencies; with
    // `--package quotecast` it would build a second copy of many of them.
    let out = build
        .args(["build", "--workspace", "--bin", "quotecast"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--profile", &profile])
        .output()
        .expect("run cargo build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "building the server failed:\n{stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "quotecast")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build reported no quotecast executable:\n{stderr}"))
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

#[test]
fn bench_measures_quotecast_and_the_ceiling_and_leaves_nothing_behind() {
    let out = Command::new(env!("CARGO_BIN_EXE_quotecast-bench"))
        .args(["run", "--both", "--json"])
        .arg("--server-bin")
        .arg(server_bin())
        .args(["--sessions", &SESSIONS.to_string(), "--watchlists", "4"])
        .args(["--tick-ms", "100", "--warmup", "1", "--duration", "2"])
        .args(["--concurrency", "50"])
        .output()
        .expect("run quotecast-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "quotecast-bench failed:\n{stderr}");
    let rep: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{stderr}"));

    assert_eq!(rep["scenario"], "run");
    assert!(num(&rep, "machine.cpus") >= 1.0);
    assert!(num(&rep, "machine.fd_hard_limit") > 0.0);
    let runs = rep["runs"].as_array().expect("runs");
    let targets: Vec<&str> = runs.iter().filter_map(|r| r["target"].as_str()).collect();
    assert_eq!(targets, ["ceiling", "quotecast"]);

    for r in runs {
        let t = r["target"].as_str().unwrap();
        assert_eq!(r["shape"]["sessions"], SESSIONS, "{t}");
        assert_eq!(num(r, "connect.ok") as u64, SESSIONS, "{t}: {r:#}");
        assert_eq!(num(r, "connect.failed"), 0.0, "{t}");
        assert!(num(r, "connect.per_s") > 0.0, "{t}");
        assert!(num(r, "delivery.messages") > 0.0, "{t}: no quotes received");
        assert!(num(r, "delivery.msgs_per_s") > 0.0, "{t}");
        assert!(num(r, "delivery.bytes_per_s") > 0.0, "{t}");
        for f in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(num(r, &format!("delivery.latency.{f}")) >= 0.0, "{t}: {f}");
        }
        assert!(num(r, "delivery.latency.samples") > 0.0, "{t}");
        assert!(
            num(r, "delivery.latency.p50_ms") <= num(r, "delivery.latency.p99_ms")
                && num(r, "delivery.latency.p99_ms") <= num(r, "delivery.latency.max_ms"),
            "{t}: percentiles out of order"
        );
        assert_eq!(num(r, "delivery.seq_gaps"), 0.0, "{t}: seq gaps");
        assert_eq!(num(r, "delivery.duplicates"), 0.0, "{t}");
        assert_eq!(num(r, "delivery.unexpected_closes"), 0.0, "{t}");
        assert_eq!(num(r, "delivery.live_sessions") as u64, SESSIONS, "{t}");
        assert_eq!(num(r, "after_close.clean_closes") as u64, SESSIONS, "{t}");
        assert!(num(r, "server.rss_loaded") > 0.0, "{t}");
        assert!(num(r, "server.cpu_percent") >= 0.0, "{t}");
    }

    let q = &runs[1];
    assert_eq!(q["after_close"]["sessions"], 0, "sessions leaked: {q:#}");
    assert_eq!(q["after_close"]["workers"], 0, "workers leaked: {q:#}");
    assert!(q["server"]["bytes_per_session"].is_number());

    let ratios = rep["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 1);
    assert!(num(&ratios[0], "msgs_per_s") > 0.0);
    assert!(num(&ratios[0], "p99") > 0.0);
    let checks = rep["checks"].as_array().expect("checks");
    assert!(!checks.is_empty());
    for c in checks {
        assert_eq!(c["pass"], true, "check failed: {c}");
    }
}
