//! `schema show|migrate|oneshot`.

use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::store::{SchemaState, Store, KNOWN_SCHEMA_VERSION};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Print the database's schema version and any migrations not yet applied.
    Show,
    /// Apply pending migrations (the server also does this at start-up).
    Migrate {
        /// Only list what would be applied.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create the database, or bring an existing one up to date, and add the default
    /// domain, group and resource policy.
    Oneshot,
}

fn print_state(cfg: &ManagerConfig, s: &SchemaState) {
    println!("database: {}", cfg.db_path().display());
    match &s.applied {
        Some((v, name)) => println!("applied:  version {v} ({name})"),
        None => println!("applied:  none (empty database)"),
    }
    println!("known:    version {KNOWN_SCHEMA_VERSION}");
    for (v, name) in &s.pending {
        println!("pending:  version {v} ({name})");
    }
}

async fn inspect(cfg: &ManagerConfig) -> anyhow::Result<(Store, SchemaState)> {
    let path = cfg.db_path();
    anyhow::ensure!(
        path.exists(),
        "no database at {} (run `schema oneshot` or `serve` to create it)",
        path.display()
    );
    Ok(tokio::task::spawn_blocking(move || Store::open_unmigrated(&path)).await??)
}

pub async fn run(cfg: ManagerConfig, cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Show => {
            let (_, state) = inspect(&cfg).await?;
            print_state(&cfg, &state);
        }
        SchemaCommand::Migrate { dry_run: true } => {
            let (_, state) = inspect(&cfg).await?;
            print_state(&cfg, &state);
            if state.pending.is_empty() {
                println!("nothing to apply");
            }
        }
        SchemaCommand::Migrate { dry_run: false } => {
            let (_, before) = inspect(&cfg).await?;
            let _store = super::open_store(&cfg).await?;
            println!(
                "applied {} migration(s); the schema is at version {KNOWN_SCHEMA_VERSION}",
                before.pending.len()
            );
        }
        SchemaCommand::Oneshot => {
            let store = super::open_store(&cfg).await?;
            store.ensure_defaults().await?;
            println!("database {} is at schema version {KNOWN_SCHEMA_VERSION} with the default domain and group", cfg.db_path().display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
