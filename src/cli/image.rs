//! `image list|inspect|alias|dealias|set-resource-limit`: kernel images known to the
//! shared configuration.

use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::{images, shared_config};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List known images with their aliases.
    #[command(visible_alias = "list-images")]
    List,
    /// Show one image (by reference or alias) as JSON.
    #[command(visible_alias = "inspect-image")]
    Inspect { reference: String },
    /// Make ALIAS (any text; ':' and '/' allowed) name TARGET (an image or another alias).
    Alias { alias: String, target: String },
    /// Remove an alias.
    Dealias { alias: String },
    /// Scan a configured registry (or all) for kernel images and record them.
    #[command(visible_alias = "rescan-images")]
    Rescan {
        /// The registry name as configured under config/docker/registry/.
        registry: Option<String>,
    },
    /// Set the minimum and maximum of a slot for an image, as MIN:MAX (either side may be
    /// empty, e.g. "1:" or ":4g").
    #[command(visible_alias = "set-image-resource-limit")]
    SetResourceLimit {
        reference: String,
        slot: String,
        range: String,
    },
}

pub async fn run(cfg: ManagerConfig, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&cfg).await?;
    let shared = shared_config::connect(&cfg, &store).await?;
    run_with(&cfg, shared.as_ref(), cmd).await
}

/// Runs an image command against an already connected shared configuration.
pub async fn run_with(
    cfg: &ManagerConfig,
    shared: &dyn shared_config::SharedConfig,
    cmd: ImageCommand,
) -> anyhow::Result<ExitCode> {
    // The local Docker engine's kernel images count too, when one answers.
    let docker = if cfg.manager.local_engine_images {
        images::local_engine(&cfg.agent.docker_host).await
    } else {
        None
    };
    let catalog = images::Catalog {
        shared,
        docker: docker.as_ref(),
    };
    match cmd {
        ImageCommand::List => {
            let list = catalog.list().await?;
            if list.is_empty() {
                println!("no images are known yet");
            }
            for i in list {
                let aliases = if i.aliases.is_empty() {
                    String::new()
                } else {
                    format!("  (aliases: {})", i.aliases.join(", "))
                };
                println!(
                    "{}  {}  {} bytes{aliases}",
                    i.canonical(),
                    i.digest,
                    i.size_bytes
                );
            }
        }
        ImageCommand::Inspect { reference } => {
            let i = catalog.resolve(&reference).await?;
            let limits: serde_json::Map<String, serde_json::Value> = i
                .resource_limits
                .iter()
                .map(|(k, (min, max))| (k.clone(), serde_json::json!({"min": min, "max": max})))
                .collect();
            let doc = serde_json::json!({
                "canonical": i.canonical(), "digest": i.digest, "size_bytes": i.size_bytes,
                "labels": i.labels, "accelerators": i.accelerators, "resource_limits": limits, "aliases": i.aliases,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ImageCommand::Rescan { registry } => {
            use std::io::IsTerminal;
            let count = std::sync::atomic::AtomicUsize::new(0);
            let live = std::io::stderr().is_terminal();
            let progress = |what: &str| {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if live {
                    eprint!("\r\x1b[2K[{n}] {what}");
                }
            };
            let reports =
                images::scan::rescan(shared, registry.as_deref(), &cfg.docker_registry, &progress)
                    .await?;
            if live {
                eprintln!();
            }
            let mut failed = false;
            for r in &reports {
                match &r.result {
                    Ok(n) => println!("{}: {n} kernel image(s) recorded", r.registry),
                    Err(e) => {
                        failed = true;
                        println!("{}: FAILED: {e}", r.registry);
                    }
                }
            }
            if reports.is_empty() {
                println!("no registries are configured (config/docker/registry/NAME = URL)");
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        ImageCommand::Alias { alias, target } => {
            catalog.alias(&alias, &target).await?;
            println!("{alias} -> {target}");
        }
        ImageCommand::Dealias { alias } => {
            catalog.dealias(&alias).await?;
            println!("removed alias {alias}");
        }
        ImageCommand::SetResourceLimit {
            reference,
            slot,
            range,
        } => {
            let (min, max) = range.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("the range must be MIN:MAX (either may be empty)")
            })?;
            catalog
                .set_resource_limit(&reference, &slot, Some(min), Some(max))
                .await?;
            println!(
                "{slot} of {reference}: min {} max {}",
                if min.is_empty() { "-" } else { min },
                if max.is_empty() { "-" } else { max }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
