//! `serve`: run the manager until SIGINT/SIGTERM.

use backend_ai_manager::config::{KernelBackendKind, ManagerConfig};
use backend_ai_manager::server;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address for the API, UI and metrics (overrides manager.service-addr).
    #[arg(long, value_name = "HOST:PORT")]
    pub service_addr: Option<SocketAddr>,
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(mut cfg: ManagerConfig, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.service_addr {
        cfg.manager.service_addr = addr;
    }
    let running = server::start(cfg).await?;
    if let Some(admin) = &running.initial_admin {
        // Shown once, on the console only (never through the log pipeline).
        println!(
            "\nFirst start: created the superadmin account (shown only this once).\n\
             \x20 e-mail:     {}\n  password:   {}\n  access key: {}\n  secret key: {}\n\
             Use it with the official client:\n\
             \x20 export BACKEND_ENDPOINT=http://{} BACKEND_ACCESS_KEY={} BACKEND_SECRET_KEY='{}'\n",
            admin.email, admin.password, admin.access_key, admin.secret_key, running.addr, admin.access_key, admin.secret_key
        );
    }
    println!(
        "backend-ai-manager {} serving the API on http://{}",
        env!("CARGO_PKG_VERSION"),
        running.addr
    );
    match &running.agent {
        Ok(a) => println!(
            "local agent {} is running kernels {} (RPC on {})",
            a.id(),
            match running.app.config.agent.backend {
                KernelBackendKind::Docker => "in Docker",
                KernelBackendKind::Noop => "as no-op records (they run no code)",
            },
            a.rpc_addr
        ),
        Err(why) => println!(
            "no local agent is available: {why} (the API works; running sessions needs an agent)"
        ),
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}
