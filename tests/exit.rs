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
//! The test runs a child process (this binary again, told so by its
//! environment) whose threads connect in a loop through the same code as the
//! pool, and which returns from `main` mid-connect; each child must exit with
//! status 0. The binary has no test harness (`harness = false`), so the child
//! needs no test of its own to run as.

mod support;

use quotecast::db::{DbConn, DbUrl};
use std::process::Command;
use std::time::Duration;
use support::Backend;

const CHILD_ENV: &str = "QUOTECAST_EXIT_TEST_PG_URL";
const CHILDREN: usize = 30;
const THREADS: usize = 4;

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(url) => connect_until_the_process_exits(url),
        Err(_) => a_process_exiting_while_its_threads_connect_to_postgres_exits_cleanly(),
    }
}

fn a_process_exiting_while_its_threads_connect_to_postgres_exits_cleanly() {
    let Some(Backend::Postgres(url)) = Backend::postgres("exit_while_connecting") else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary path");
    for child in 0..CHILDREN {
        let out = Command::new(&exe)
            .env(CHILD_ENV, &url)
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "child {child} of {CHILDREN} exited with {:?}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("exit: {CHILDREN} processes exited cleanly under {THREADS} connecting threads each");
}

/// The child: its threads connect, drop and connect again through
/// [`DbConn::establish`] until the process exits under them.
fn connect_until_the_process_exits(url: String) {
    let url = DbUrl::Postgres(url);
    let (done, connects) = std::sync::mpsc::channel();
    for _ in 0..THREADS {
        let url = url.clone();
        let done = done.clone();
        std::thread::spawn(move || loop {
            let c = DbConn::establish(&url).expect("connects");
            drop(c);
            let _ = done.send(());
        });
    }
    // Two connects per thread, on average, have finished: every thread is
    // well inside its loop when `main` returns.
    for _ in 0..2 * THREADS {
        connects
            .recv_timeout(Duration::from_secs(10))
            .expect("a connect within 10 s");
    }
}
