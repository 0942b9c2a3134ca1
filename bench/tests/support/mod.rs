//! What the bench's smoke tests share: the server binary of this source
//! tree, and reading numbers out of a JSON report.

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
