//! `fixture populate FILE`.

use anyhow::Context;
use backend_ai_manager::config::ManagerConfig;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum FixtureCommand {
    /// Load a fixture in the original's JSON format ({"table": [rows…]}). Existing rows are
    /// skipped, so loading twice is harmless; a bad row is named and nothing is loaded.
    Populate {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub async fn run(cfg: ManagerConfig, cmd: FixtureCommand) -> anyhow::Result<ExitCode> {
    let FixtureCommand::Populate { file } = cmd;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    // Loaded as written: defaults are not pre-created, so a fixture's own `default` rows win.
    let store = super::open_store(&cfg).await?;
    let report = store
        .populate_fixture(&doc)
        .await
        .with_context(|| format!("{}: nothing was loaded", file.display()))?;
    for (table, inserted, skipped) in &report.tables {
        println!("{table:<28} {inserted:>5} added {skipped:>5} already present");
    }
    Ok(ExitCode::SUCCESS)
}
