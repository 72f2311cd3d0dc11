//! `etcd get|put|put-json|delete`: the shared configuration from the command line.

use anyhow::Context;
use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::shared_config::{self, flatten, nest, MAX_KEYS_PER_UPDATE};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum EtcdCommand {
    /// Print a value (exit 1 if missing), or with --prefix the nested JSON of a subtree.
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Store a value.
    Put { key: String, value: String },
    /// Store a JSON object file under KEY: nested objects become KEY/sub/… keys.
    PutJson {
        key: String,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// The image commands, also here where the original had them (`etcd list-images`, …).
    #[command(flatten)]
    Image(super::image::ImageCommand),
    /// Delete a key, or with --prefix the key and everything below it.
    Delete {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
}

pub async fn run(cfg: ManagerConfig, cmd: EtcdCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&cfg).await?;
    let shared = shared_config::connect(&cfg, &store).await?;
    match cmd {
        EtcdCommand::Get { key, prefix: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&nest(&key, &shared.get_prefix(&key).await?))?
            );
        }
        EtcdCommand::Get { key, prefix: false } => match shared.get(&key).await? {
            Some(v) => println!("{v}"),
            None => {
                eprintln!("{key}: no such key in {}", shared.describe());
                return Ok(ExitCode::from(1));
            }
        },
        EtcdCommand::Put { key, value } => shared.put(&key, &value).await?,
        EtcdCommand::PutJson { key, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            anyhow::ensure!(
                value.is_object(),
                "{} must contain a JSON object",
                file.display()
            );
            let pairs = flatten(&key, &value);
            anyhow::ensure!(
                pairs.len() <= MAX_KEYS_PER_UPDATE * 64,
                "{} has {} keys; split it into smaller files",
                file.display(),
                pairs.len()
            );
            shared.put_many(&pairs).await?;
            println!("stored {} key(s) under {key}", pairs.len());
        }
        EtcdCommand::Delete { key, prefix: true } => shared.delete_prefix(&key).await?,
        EtcdCommand::Delete { key, prefix: false } => shared.delete(&key).await?,
        EtcdCommand::Image(image) => {
            return super::image::run_with(&cfg, shared.as_ref(), image).await
        }
    }
    Ok(ExitCode::SUCCESS)
}
