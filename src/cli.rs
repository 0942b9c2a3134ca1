//! The command line: `serve` (the default), `migrate`, `user add`,
//! `token issue`, `token revoke`. New tokens are printed once, as the last
//! line of stdout, so scripts can capture them with `tail -n1`.

use crate::auth;
use crate::config::Settings;
use crate::db::{repo, Db, DbError};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "quotecast", version, about = "Real-time stock quote service")]
pub struct Cli {
    /// Configuration file layered over config/default.toml.
    #[arg(long, global = true, env = "QUOTECAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print a first API token (last line of stdout).
    Add {
        name: String,
        /// Give the user access to /admin/v1.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a new API token for a user (printed as the last line).
    Issue {
        name: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a token by id; sessions it opened are closed with 1008.
    Revoke { id: i64 },
}

/// Errors of the CLI commands, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Usage(String),
}

fn open(settings: &Settings) -> Result<Db, CliError> {
    let db = Db::connect(&settings.database.url, 1)?;
    db.migrate()?;
    Ok(db)
}

fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "invalid user name {name:?}: use 1-64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Creates a user with a first token; returns (user id, token id, token).
pub fn add_user(db: &Db, name: &str, admin: bool) -> Result<(i64, i64, String), CliError> {
    check_name(name)?;
    let (token, hash) = auth::new_token();
    let (user, tok) = db
        .run_sync(|c| {
            let user = repo::create_user(c, name, admin)?;
            let tok = repo::insert_token(c, user.id, &hash, Some("initial"))?;
            Ok((user, tok))
        })
        .map_err(|e| match e {
            DbError::Duplicate => CliError::Usage(format!("user {name:?} already exists")),
            other => other.into(),
        })?;
    Ok((user.id, tok.id, token))
}

/// Issues a token for an existing user; returns (token id, token).
pub fn issue_token(db: &Db, name: &str, label: Option<&str>) -> Result<(i64, String), CliError> {
    let (token, hash) = auth::new_token();
    let tok = db
        .run_sync(|c| {
            let user = repo::find_user_by_name(c, name)?;
            repo::insert_token(c, user.id, &hash, label)
        })
        .map_err(|e| match e {
            DbError::NotFound => CliError::Usage(format!("no user named {name:?}")),
            other => other.into(),
        })?;
    Ok((tok.id, token))
}

pub fn revoke_token(db: &Db, id: i64) -> Result<(), CliError> {
    db.run_sync(|c| repo::revoke_token(c, id))
        .map_err(|e| match e {
            DbError::NotFound => CliError::Usage(format!("no token with id {id}")),
            other => other.into(),
        })
}

/// Runs a non-serving command, printing its result.
pub fn run_admin_command(settings: &Settings, command: Command) -> Result<(), CliError> {
    let db = open(settings)?;
    match command {
        Command::Serve => {
            return Err(CliError::Usage(
                "serve runs the server, not an admin command".into(),
            ))
        }
        Command::Migrate => {
            let n = db.migrate()?;
            println!(
                "database {} is up to date ({n} migrations applied now)",
                db.backend()
            );
        }
        Command::User(UserCommand::Add { name, admin }) => {
            let (uid, tid, token) = add_user(&db, &name, admin)?;
            println!(
                "created user {name} (id {uid}{})",
                if admin { ", admin" } else { "" }
            );
            println!("token id {tid}; the token is shown once:");
            println!("{token}");
        }
        Command::Token(TokenCommand::Issue { name, label }) => {
            let (tid, token) = issue_token(&db, &name, label.as_deref())?;
            println!("issued token id {tid} for {name}; the token is shown once:");
            println!("{token}");
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            revoke_token(&db, id)?;
            println!("revoked token {id}; its live sessions close within realtime.auth_recheck_interval_ms");
        }
    }
    Ok(())
}
