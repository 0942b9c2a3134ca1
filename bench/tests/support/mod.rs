//! What the bench's smoke tests share: the server binary of this source
//! tree, running the bench, and reading and checking its JSON report.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The server binary of this source tree, built if it is not up to date.
///
/// Cargo hands a test only its own package's binaries (`CARGO_BIN_EXE_*`), and
/// the server is another package of the workspace; a path guessed under
/// `target/` could be missing or stale. So the test asks the Cargo that runs it
/// to build the server, in the test's own target directory and profile, and
/// takes the executable's path from Cargo's report. Once built, this only
/// checks the server is up to date.
pub fn server_bin() -> PathBuf {
    // Tests of one binary run in parallel; one build serves them all.
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_server).clone()
}

fn build_server() -> PathBuf {
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

/// The number at a dotted `path` of `v`; panics with the report otherwise.
pub fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

/// Runs `quotecast-bench ARGS --json` against this tree's server and returns
/// its report, which must be of the scenario ARGS name first. ARGS is written
/// as on a command line: words split at white space.
pub fn bench(args: &str) -> Value {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_quotecast-bench"))
        .args(&args)
        .arg("--json")
        .arg("--server-bin")
        .arg(server_bin())
        .output()
        .expect("run quotecast-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "quotecast-bench failed:\n{stderr}");
    let rep: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{stderr}"));
    assert_eq!(rep["scenario"], args[0]);
    rep
}

/// The report's check whose name starts with `prefix`.
pub fn check_named<'a>(rep: &'a Value, prefix: &str) -> &'a Value {
    rep["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no check named {prefix}...: {:#}", rep["checks"]))
}

/// The report's runs, and their targets in order.
pub fn runs(rep: &Value) -> (&Vec<Value>, Vec<&str>) {
    let runs = rep["runs"].as_array().expect("runs");
    (
        runs,
        runs.iter().filter_map(|r| r["target"].as_str()).collect(),
    )
}

/// The numbers at each dotted path of `v` are the ones wanted.
pub fn assert_nums(v: &Value, what: &str, want: &[(&str, f64)]) {
    for &(field, want) in want {
        assert_eq!(num(v, field), want, "{what}.{field}: {v:#}");
    }
}

/// A quotecast run left no session and no worker behind on the server.
pub fn assert_nothing_left(r: &Value, what: &str) {
    assert_eq!(
        r["after_close"]["sessions"], 0,
        "{what}: sessions left: {r:#}"
    );
    assert_eq!(
        r["after_close"]["workers"], 0,
        "{what}: workers left: {r:#}"
    );
}

/// The report has one ratio, of delivery, with both its numbers; returns it.
pub fn delivery_ratio(rep: &Value) -> &Value {
    let ratios = rep["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 1, "{ratios:#?}");
    assert!(num(&ratios[0], "msgs_per_s") > 0.0, "{ratios:#?}");
    assert!(num(&ratios[0], "p99") > 0.0, "{ratios:#?}");
    &ratios[0]
}
