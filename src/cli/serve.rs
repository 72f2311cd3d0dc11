//! `serve`: run the manager until SIGINT/SIGTERM.

use backend_ai_manager::config::{KernelBackendKind, ManagerConfig};
use backend_ai_manager::server;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address for the API, UI and metrics (overrides manager.service-addr).
    #[arg(long, value_name = "HOST:PORT")]
    pub service_addr: Option<SocketAddr>,
}

/// How long a process may take to stop after SIGTERM or SIGINT, whatever it is doing.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// Ends the process [`SHUTDOWN_BOUND`] after the first SIGTERM/SIGINT (at once on a second
/// one), even if the async runtime is stalled or a blocking thread never returns: the
/// signal is seen by a signal handler and an OS thread of its own, not by the runtime.
/// The graceful stop runs meanwhile and normally ends the process long before.
pub fn arm_shutdown_deadline() {
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the action only increments an atomic, which is async-signal-safe.
        let registered = unsafe {
            signal_hook_registry::register(sig, || {
                SIGNALS.fetch_add(1, Ordering::SeqCst);
            })
        };
        if let Err(e) = registered {
            tracing::warn!("cannot watch signal {sig} for the shutdown deadline: {e}");
        }
    }
    let watch = || SIGNALS.load(Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            deadline_watch(watch, SHUTDOWN_BOUND, Duration::from_millis(50));
            eprintln!(
                "error: stopping took longer than {} s; exiting now",
                SHUTDOWN_BOUND.as_secs()
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the shutdown deadline thread: {e}");
    }
}

/// Returns once `signals()` has counted two signals, or `bound` after it counted one.
fn deadline_watch(signals: impl Fn() -> usize, bound: Duration, poll: Duration) {
    let mut first: Option<Instant> = None;
    loop {
        let n = signals();
        if n >= 2 {
            return;
        }
        if n == 1 {
            let at = *first.get_or_insert_with(Instant::now);
            if at.elapsed() >= bound {
                return;
            }
        }
        std::thread::sleep(poll);
    }
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
    arm_shutdown_deadline();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn the_deadline_ends_a_stop_that_hangs_and_a_second_signal_ends_it_at_once() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let watcher = std::thread::spawn(move || {
            deadline_watch(
                move || c.load(Ordering::SeqCst),
                Duration::from_millis(300),
                Duration::from_millis(5),
            );
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!watcher.is_finished(), "no signal yet: keeps waiting");
        let signalled = Instant::now();
        count.store(1, Ordering::SeqCst);
        let ended = watcher.join().unwrap();
        assert!(ended - signalled >= Duration::from_millis(300));

        let count = Arc::new(AtomicUsize::new(2));
        let started = Instant::now();
        deadline_watch(
            move || count.load(Ordering::SeqCst),
            Duration::from_secs(3600),
            Duration::from_millis(5),
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
