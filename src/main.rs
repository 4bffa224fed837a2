//! The `meridian` command line: a thin shell over the library.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use meridian::config::words::count;
use meridian::{demo, geo, reload, server, table};

/// mimalloc: the request path allocates and frees on one thread, which its thread-local heaps
/// serve more cheaply than the system allocator.
#[global_allocator]
static GLOBAL: meridian::alloc::Mimalloc = meridian::alloc::Mimalloc;

/// What `meridian run --help` adds after its options: how a running instance takes a new
/// config, and what it reads from the environment.
const RUN_AFTER_HELP: &str = "\
Reloading: a new config (and any file it names: GeoIP database, certificates, keys, CAs, the
admin token) is taken without dropping connections, in three ways: the file changing on disk
(watched), SIGHUP, and `POST /reload` on the admin listener. An invalid config is refused
with every problem listed, and the running one stays.

Stopping: SIGTERM or Ctrl-C drains (drain_delay, then up to drain_timeout) and exits 0; a
second signal exits at once.

Environment:
  MERIDIAN_LOG           log filter for stderr: error, warn, info (default), debug (each
                         routing decision), or directives such as warn,meridian=debug
  MERIDIAN_LOCAL_REGION  overrides the file's local_region, so one config serves every
                         region (must name one of its regions)
  MIMALLOC_*             the memory allocator's own options (MIMALLOC_PURGE_DELAY and others)";

/// What `meridian check --help` adds: the environment it reads.
const CHECK_AFTER_HELP: &str = "\
Environment:
  MERIDIAN_LOCAL_REGION  overrides the file's local_region, as under `meridian run`";

#[derive(Parser)]
#[command(name = "meridian", version, about = "A geo-aware edge reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a config file: proxy listeners, the admin API, health checks and reloads.
    #[command(after_help = RUN_AFTER_HELP)]
    Run {
        /// Config file (YAML); relative paths inside it are from the working directory.
        #[arg(short, long, default_value = "config/meridian.yaml")]
        config: PathBuf,
        /// Worker threads, each a single-threaded runtime with its own listener sockets and
        /// upstream connections; default: one per core. 0 is taken as 1; at most 1024.
        #[arg(long, value_parser = clap::value_parser!(u16).range(0..=1024))]
        worker_threads: Option<u16>,
    },
    /// Validate a config file: prints every problem with its line; exits 1 if there are any.
    #[command(after_help = CHECK_AFTER_HELP)]
    Check {
        /// Config file (YAML) to validate, with everything it names (GeoIP database,
        /// certificates, keys).
        #[arg(short, long, default_value = "config/meridian.yaml")]
        config: PathBuf,
    },
    /// Run the built-in demo: three regional backends, the proxy and the demo GeoIP data.
    Demo {
        /// Proxy listener address (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener address (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// A demo regional backend that answers with its region name (for compose and tests).
    Backend {
        /// Region name the backend answers with ("Hello from <region>").
        #[arg(long)]
        region: String,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8000")]
        listen: SocketAddr,
    },
    /// Convert other proxies' configuration to Meridian's.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// GeoIP database tools.
    Geo {
        #[command(subcommand)]
        command: GeoCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Istio VirtualService, DestinationRule and Gateway YAML (multi-document) → Meridian
    /// config on stdout, with a compatibility report as comments.
    ///
    /// Each destination's region comes from a --region flag, else its DestinationRule
    /// subset's `region` or `topology.kubernetes.io/region` label, else an AWS region name in
    /// the subset's or service's name (`fingerprint-api-us-east` is us-east-1). A destination
    /// whose region cannot be known stops the import (exit 1) with what to add; no region is
    /// ever guessed.
    Istio {
        /// Istio YAML files (each may hold several documents).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// NAME=HOST: the destinations with host HOST (as written, its short name, or
        /// host/subset) run in region NAME, an AWS region such as us-east-1. Repeatable; wins
        /// over labels and names.
        #[arg(long = "region", value_name = "NAME=HOST")]
        regions: Vec<String>,
        /// The config's local_region (the region this Meridian runs in); default: the first
        /// region found, reported as such.
        #[arg(long, value_name = "NAME")]
        local_region: Option<String>,
        /// Leave out destinations whose region cannot be known, listing them in the report,
        /// instead of failing.
        #[arg(long)]
        allow_partial: bool,
    },
}

#[derive(Subcommand)]
enum GeoCommand {
    /// Build a City-style MaxMind DB from a YAML fixture.
    Build {
        /// YAML fixture: `networks` of `{ cidr, country, lat, lon, ... }`.
        fixture: PathBuf,
        /// MaxMind DB file to write (read back and checked before it is saved).
        out: PathBuf,
    },
    /// Look an address up in a MaxMind DB.
    Lookup {
        /// MaxMind DB file (GeoLite2, GeoIP2, DB-IP, or one built with `geo build`).
        #[arg(long)]
        db: PathBuf,
        /// IPv4 or IPv6 address to look up.
        ip: IpAddr,
    },
}

fn main() -> ExitCode {
    meridian::alloc::configure();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(check(&config)),
        Command::Run {
            config,
            worker_threads,
        } => {
            let table = table::load(&config, table::CompileContext::default())?;
            let count = meridian::worker::resolve_count(worker_threads.map(usize::from))?;
            let workers = meridian::worker::Workers::start(count, Some(park))
                .context("cannot start the worker threads")?;
            let workers = std::sync::Arc::new(workers);
            runtime()?.block_on(serve(table, config, workers.clone()))?;
            // Every listener has stopped and the drain is over (or was cut short): what is
            // left on the workers is dropped with them.
            if let Ok(workers) = std::sync::Arc::try_unwrap(workers) {
                workers.stop();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen, admin } => {
            runtime()?.block_on(async {
                let mut shutdown = ShutdownSignal::listen();
                let demo = demo::start(listen, admin).await?;
                println!("{}", demo.instructions());
                shutdown.recv().await;
                demo.shutdown().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backend { region, listen } => {
            runtime()?.block_on(async {
                let mut shutdown = ShutdownSignal::listen();
                let backend = demo::RegionBackend::start(&region, listen).await?;
                println!("backend {region} listening on {}", backend.addr);
                shutdown.recv().await;
                backend.stop().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            command:
                ImportCommand::Istio {
                    files,
                    regions,
                    local_region,
                    allow_partial,
                },
        } => {
            let options =
                meridian::import::ImportOptions::from_flags(&regions, local_region, allow_partial)
                    .map_err(anyhow::Error::msg)?;
            let mut text = String::new();
            for file in &files {
                let part = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                text.push_str(&part);
                text.push_str("\n---\n");
            }
            let imported = meridian::import::istio_with(&text, &options)?;
            print!("{}", imported.render());
            Ok(ExitCode::SUCCESS)
        }
        Command::Geo {
            command: GeoCommand::Build { fixture, out },
        } => {
            let text = std::fs::read_to_string(&fixture)
                .with_context(|| format!("cannot read fixture {}", fixture.display()))?;
            let bytes = geo::fixture::build(&text, &fixture)?;
            std::fs::write(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {} ({})", out.display(), count(bytes.len(), "byte"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Geo {
            command: GeoCommand::Lookup { db, ip },
        } => {
            let db = geo::GeoDb::open(&db)?;
            match db.lookup(ip) {
                Some(l) => println!(
                    "{ip}: country {} continent {} location {}",
                    l.country
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    l.continent
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    l.coords
                        .map(|p| p.degrees())
                        .map(|(a, b)| format!("{a}, {b}"))
                        .unwrap_or_else(|| "-".into()),
                ),
                None => println!("{ip}: not in {}", db.path().display()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(config: &Path) -> ExitCode {
    match table::load(config, table::CompileContext::default()) {
        Ok(t) => {
            println!(
                "{} is valid: {}, {}, {}, {}",
                config.display(),
                count(t.listeners.len(), "listener"),
                count(t.regions.len(), "region"),
                count(t.clusters.len(), "cluster"),
                count(t.routes.routes.len(), "route")
            );
            if let Some(policies) = table::policies::explain::summary(&t.routes) {
                println!("{policies}");
            }
            for route in &t.routes.routes {
                let policies = table::policies::route_summary(&t, route);
                if !policies.is_empty() {
                    println!("  route {}: {}", route.name, policies.join("; "));
                }
            }
            for c in &t.clusters {
                if let Some(a) = &c.affinity {
                    println!(
                        "  cluster {}: {} (else {})",
                        c.name,
                        a.describe(),
                        serde_json::to_value(c.load_balancer)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Run when a runtime's thread has nothing to do: give freed memory back.
fn park() {
    meridian::alloc::return_freed_memory(meridian::http1::buffers::let_go)
}

/// The main thread's runtime: single-threaded. Under `run` it is the control thread (admin
/// API, reloads, health checks, DNS discovery, signals); the proxy listeners are served by
/// the worker threads (`meridian::worker`). The demo and the demo backend run on it alone.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(park)
        .build()
        .context("cannot start the async runtime")
}

async fn serve(
    table: table::RoutingTable,
    config: PathBuf,
    workers: std::sync::Arc<meridian::worker::Workers>,
) -> anyhow::Result<()> {
    let mut shutdown = ShutdownSignal::listen();
    // Wakes an idle runtime twice a second, so `alloc::return_freed_memory` runs after a
    // burst ends.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });
    // Listening before anything is bound: a SIGHUP sent once the admin port answers reloads.
    let hangup = reload::Hangup::listen();
    let running = server::start_on(table, Some(config), workers).await?;
    reload::spawn_watchers_with(
        running.server.clone(),
        reload::DEFAULT_POLL_INTERVAL,
        hangup,
    );
    shutdown.recv().await;
    // /readyz turns 503 at once; listeners keep accepting for drain_delay so load balancers
    // notice first; then in-flight requests get up to drain_timeout. A second signal ends it.
    let (delay, timeout) = {
        let table = running.table.load();
        (table.drain_delay, table.drain_timeout)
    };
    running
        .lifecycle
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(?delay, ?timeout, "shutting down: draining");
    let drain = async {
        tokio::time::sleep(delay).await;
        running.shutdown(timeout).await;
    };
    tokio::select! {
        _ = drain => tracing::info!("drained"),
        _ = shutdown.recv() => tracing::warn!("second signal: exiting without waiting"),
    }
    Ok(())
}

/// SIGTERM or Ctrl-C. SIGTERM is listened for from `listen` on, which runs before anything is
/// served: a SIGTERM sent as soon as a port accepts is kept for `recv` instead of meeting the
/// default action (ending the process undrained), and a second one sent while draining is not
/// lost between two waits.
struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Must run inside the runtime.
    fn listen() -> Self {
        Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
