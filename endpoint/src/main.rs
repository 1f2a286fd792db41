//! `vic-endpoint`: a Docker Engine API endpoint for one virtual container host.

use std::sync::Arc;

use clap::Parser;
use tracing::info;
use tracing_subscriber::filter::LevelFilter;
use vic_core::{Engine, EngineConfig};
use vic_endpoint::{AppState, Listener, Target, serve};

/// Serves the Docker Engine API for a virtual container host whose containers are VMs.
#[derive(Debug, Parser)]
#[command(name = "vic-endpoint", version)]
struct Args {
    /// Backend: sim://STATE_DIR for the embedded simulator (default: a folder under the
    /// user's data directory), or https://user:password@host/sdk for vSphere.
    #[arg(long)]
    target: Option<Target>,
    /// Address to listen on: tcp://IP:PORT or unix://PATH (repeatable).
    #[arg(short = 'H', long = "host", default_value = "tcp://127.0.0.1:2375")]
    hosts: Vec<Listener>,
    /// The VCH's name, shown by `docker info`.
    #[arg(long, default_value = "virtual-container-host")]
    name: String,
    /// Inventory path of the VCH's resource pool or vApp (default: a vApp named after
    /// the VCH under the first cluster's root pool, created on the simulator if absent).
    #[arg(long)]
    pool: Option<String>,
    /// Datastore for images and container folders (default: the first one).
    #[arg(long)]
    image_store: Option<String>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: LevelFilter,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if let Err(e) = run(args).await {
        eprintln!("vic-endpoint: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let target = args.target.unwrap_or_else(Target::default_simulator);
    let (backend, pool_path) = match &target {
        Target::Simulator(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create state folder {}: {e}", dir.display()))?;
            let sim = vic_simulator::Simulator::open(dir)?;
            let pool_path = match args.pool {
                Some(p) => p,
                None => {
                    // What vic-machine create does on vSphere: a vApp for the VCH.
                    let root = vic_core::Compute::find_pool(&sim, &sim.root_pool_path()).await?;
                    let pool = vic_core::Compute::ensure_pool(
                        &sim,
                        &root.reference,
                        &args.name,
                        Default::default(),
                        Default::default(),
                        true,
                    )
                    .await?;
                    pool.path
                }
            };
            info!(state = %dir.display(), "simulator opened");
            (sim.backend(), pool_path)
        }
        Target::VSphere(_) => {
            return Err("the vSphere backend is not supported by this build yet".into());
        }
    };
    let engine = Engine::open(
        backend,
        EngineConfig {
            vch_name: args.name,
            pool_path,
            image_datastore: args.image_store,
        },
    )
    .await?;
    serve(&args.hosts, Arc::new(AppState { engine })).await?;
    Ok(())
}
