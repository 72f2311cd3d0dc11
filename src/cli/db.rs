//! `db backup|restore|check`.

use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::store::backup::{self, ServerLock};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy the database to FILE with SQLite's online backup (safe while the server runs).
    Backup {
        /// Where to write the copy (replaced if it exists).
        file: PathBuf,
    },
    /// Replace the database with a backup, after checking it (refused while a server is
    /// using the database).
    Restore {
        /// A file written by `db backup`.
        file: PathBuf,
    },
    /// Run SQLite's integrity and foreign-key checks on the database (or on FILE).
    Check {
        /// Check this file instead of the configured database.
        file: Option<PathBuf>,
    },
}

pub async fn run(cfg: ManagerConfig, cmd: DbCommand) -> anyhow::Result<ExitCode> {
    let db = cfg.db_path();
    tokio::task::spawn_blocking(move || match cmd {
        DbCommand::Backup { file } => {
            backup::backup(&db, &file)?;
            println!("backed up {} to {}", db.display(), file.display());
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Restore { file } => {
            anyhow::ensure!(file.is_file(), "no backup at {}", file.display());
            let lock = ServerLock::acquire(&db)?;
            backup::restore(&file, &db, &lock)?;
            println!("restored {} from {}", db.display(), file.display());
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Check { file } => {
            let target = file.unwrap_or(db);
            let problems = backup::check(&target)?;
            if problems.is_empty() {
                println!("{}: ok", target.display());
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("{}: {p}", target.display());
                }
                Ok(ExitCode::FAILURE)
            }
        }
    })
    .await?
}
