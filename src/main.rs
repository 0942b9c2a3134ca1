//! The `quotecast` binary: a thin shell over the library.

use clap::Parser;
use quotecast::cli::{self, Cli, Command};
use quotecast::config::Settings;
use quotecast::startup::Application;
use std::process::ExitCode;

fn main() -> ExitCode {
    quotecast::logging::init();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("quotecast: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Before any thread exists: the threads started later inherit it.
            if settings.server.batch_scheduling {
                if let Err(e) = quotecast::net::batch_scheduling() {
                    log::warn!("could not set SCHED_BATCH: {e}");
                }
            }
            match actix_web::rt::System::new().block_on(serve(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("quotecast: {e}");
                    ExitCode::from(1)
                }
            }
        }
        other => match cli::run_admin_command(&settings, other) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quotecast: {e}");
                ExitCode::from(1)
            }
        },
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    quotecast::memory::configure();
    quotecast::net::raise_fd_limit();
    let demo = settings.server.demo_data;
    let app = Application::build(settings).await?;
    let base = format!("http://{}/", app.addr());
    if demo {
        match quotecast::demo::seed_if_empty(&app.state().db).await? {
            Some(token) => {
                println!("quotecast is running at {base}");
                println!(
                    "created demo user \"{}\" with two watchlists",
                    quotecast::demo::DEMO_USER
                );
                println!("dashboard: {base}#token={token}");
                println!("try: curl -H 'Authorization: Bearer {token}' {base}api/v1/watchlists");
                println!("demo API token (shown once):");
                println!("{token}");
            }
            None => {
                println!("quotecast is running at {base}");
                println!("new token for the dashboard: cargo run --release -- token issue demo");
            }
        }
    }
    let handle = app.handle();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        log::info!("signal received, shutting down");
        handle.shutdown().await;
    });
    app.run_until_stopped().await?;
    log::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
