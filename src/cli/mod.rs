//! The command line: global options, subcommands, and the shared setup (config, logging,
//! runtime) each command needs.

mod agent;
mod db;
mod etcd;
mod fixture;
mod image;
mod schema;
mod serve;

use anyhow::Context;
use backend_ai_manager::config::{find_config_file, LogFormat, ManagerConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Backend.AI manager and API gateway in one binary: the API on one port, state in an
/// embedded SQLite database, etcd and Redis when configured.
#[derive(Parser, Debug)]
#[command(name = "backend-ai-manager", version, propagate_version = true)]
#[command(
    after_help = "Configuration: -f FILE, else $BACKEND_CONFIG_FILE, else ./manager.toml, \
~/.config/backend.ai/manager.toml, /etc/backend.ai/manager.toml; none found means embedded \
defaults. Any key can be set as BACKEND_<SECTION>__<KEY> (e.g. BACKEND_MANAGER__SERVICE_ADDR)."
)]
pub struct Cli {
    /// Configuration file (TOML); see config/sample.toml for every key.
    #[arg(short = 'f', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the database and other state (overrides manager.data-dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log at debug level (overrides logging.level).
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the manager: the API gateway, the admin UI and the scheduler.
    Serve(serve::ServeArgs),
    /// Run an agent alone: this host's kernels, reporting to a manager.
    #[command(long_about = agent::LONG_ABOUT)]
    Agent(agent::AgentArgs),
    /// Read and write the shared configuration (etcd, or the embedded store without one).
    #[command(subcommand)]
    Etcd(etcd::EtcdCommand),
    /// Inspect and migrate the database schema.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Back up, restore and check the database.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Kernel images known to the shared configuration: list, inspect, aliases, limits.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Load JSON fixtures (users, keypairs, policies, presets…) into the database.
    #[command(subcommand)]
    Fixture(fixture::FixtureCommand),
    /// Scan a configured registry (or all) for kernel images (same as `image rescan`).
    RescanImages {
        /// The registry name as configured under config/docker/registry/.
        registry: Option<String>,
    },
    /// Print a new random access key and secret key.
    GenerateKeypair,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) of this command.
    Man,
}

/// Loads the configuration and applies the global flags.
fn load_config(cli: &Cli) -> anyhow::Result<ManagerConfig> {
    let file = find_config_file(cli.config.as_deref())?;
    let mut cfg = ManagerConfig::load(file.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        cfg.manager.data_dir = dir.clone();
    }
    // Paths derived from it (scratch and folder directories) are handed to Docker, which
    // needs them absolute; the default is `./data`.
    cfg.manager.data_dir = std::path::absolute(&cfg.manager.data_dir)?;
    if cli.debug {
        cfg.debug.enabled = true;
        cfg.logging.level = "debug".into();
    }
    Ok(cfg)
}

fn init_logging(cfg: &ManagerConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.logging.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cfg.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Writes to standard output; a reader that stopped early (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::GenerateKeypair = cli.command {
        let (ak, sk) = backend_ai_manager::domain::generate_keypair();
        println!("Access key: {ak}\nSecret key: {sk}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "backend-ai-manager", &mut script);
        return print_all(&script);
    }
    if let Command::Man = cli.command {
        use clap::CommandFactory;
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .context("cannot render the manual page")?;
        return print_all(&page);
    }
    let cfg = load_config(&cli)?;
    init_logging(&cfg);
    let rt = runtime()?;
    let result = match cli.command {
        Command::Serve(args) => rt.block_on(serve::run(cfg, args)),
        Command::Agent(args) => rt.block_on(agent::run(cfg, args)),
        Command::Etcd(cmd) => rt.block_on(etcd::run(cfg, cmd)),
        Command::Schema(cmd) => rt.block_on(schema::run(cfg, cmd)),
        Command::Db(cmd) => rt.block_on(db::run(cfg, cmd)),
        Command::Fixture(cmd) => rt.block_on(fixture::run(cfg, cmd)),
        Command::Image(cmd) => rt.block_on(image::run(cfg, cmd)),
        Command::RescanImages { registry } => {
            rt.block_on(image::run(cfg, image::ImageCommand::Rescan { registry }))
        }
        Command::GenerateKeypair | Command::Completions { .. } | Command::Man => {
            Ok(ExitCode::SUCCESS)
        }
    };
    // Dropping a runtime waits for every blocking thread without end; the work that
    // matters has finished (or was cut off) by now.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// Opens the store (migrating it) off the async threads.
async fn open_store(cfg: &ManagerConfig) -> anyhow::Result<backend_ai_manager::store::Store> {
    let path = cfg.db_path();
    Ok(
        tokio::task::spawn_blocking(move || backend_ai_manager::store::Store::open(&path))
            .await??,
    )
}
