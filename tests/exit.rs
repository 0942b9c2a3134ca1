//! A process must exit cleanly while threads are still inside libpq.
//!
//! When a process exits, C libraries tear their state down (OpenSSL in an
//! `atexit` handler, Kerberos in its library destructor) while every other
//! thread keeps running. A pool thread that is connecting to PostgreSQL at
//! that moment used to die on the torn-down state: SIGSEGV, or SIGABRT from
//! Kerberos's `k5_mutex_lock` assertion (seen at the end of a test binary,
//! where servers of finished tests still had pools reconnecting). The
//! server's own exit after SIGTERM runs the same handlers.
//!
//! The test runs a child process (this binary, filtered to the ignored
//! helper below) whose threads connect in a loop through the same code as
//! the pool, and which returns from `main` mid-connect; each child must exit
//! with status 0.

mod support;

use quotecast::db::{DbConn, DbUrl};
use std::process::Command;
use std::time::Duration;
use support::Backend;

const CHILD_ENV: &str = "QUOTECAST_EXIT_TEST_PG_URL";
const CHILDREN: usize = 30;

#[test]
fn a_process_exiting_while_its_threads_connect_to_postgres_exits_cleanly() {
    let Some(Backend::Postgres(url)) = Backend::postgres("exit_while_connecting") else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary path");
    for child in 0..CHILDREN {
        let out = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "connect_until_the_process_exits",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &url)
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "child {child} of {CHILDREN} exited with {:?}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("1 passed"),
            "child {child} did not run the helper: {stdout}"
        );
    }
}

/// The child's body: four threads connect, drop and connect again through
/// [`DbConn::establish`] until the process exits under them. Run by the
/// test above, never on its own.
#[test]
#[ignore = "run as a child process by the test above"]
fn connect_until_the_process_exits() {
    let url = std::env::var(CHILD_ENV).expect("only run as a child of the exit test");
    let url = DbUrl::Postgres(url);
    let (first, connected) = std::sync::mpsc::channel();
    for _ in 0..4 {
        let url = url.clone();
        let first = first.clone();
        std::thread::spawn(move || loop {
            let c = DbConn::establish(&url).expect("connects");
            drop(c);
            let _ = first.send(());
        });
    }
    // Every thread is known to get through a connect, so the exit below
    // lands in the middle of the loop, not before it started.
    for _ in 0..4 {
        connected
            .recv_timeout(Duration::from_secs(10))
            .expect("a first connect");
    }
    std::thread::sleep(Duration::from_millis(20));
}
