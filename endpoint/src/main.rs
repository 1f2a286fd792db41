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
    /// A registry reached over plain HTTP (and HTTPS without certificate checks), as
    /// HOST:PORT (repeatable), as VIC's --insecure-registry.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// A PEM file of CA certificates trusted for registries (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    registry_cas: Vec<std::path::PathBuf>,
    /// vSphere: accept only the server certificate with this SHA-1 or SHA-256
    /// thumbprint (as vic-machine's --thumbprint).
    #[arg(long)]
    thumbprint: Option<String>,
    /// vSphere: do not check the server certificate (simulators only).
    #[arg(long)]
    insecure: bool,
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

/// The VCH's vApp under `root`, made when missing (what `vic-machine create` does);
/// returns its inventory path.
async fn vch_vapp(
    compute: &dyn vic_core::Compute,
    root: &vic_core::provider::PoolInfo,
    name: &str,
) -> vic_core::Result<String> {
    let pool = compute
        .ensure_pool(
            &root.reference,
            name,
            Default::default(),
            Default::default(),
            true,
        )
        .await?;
    Ok(pool.path)
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
                    let root = vic_core::Compute::find_pool(&sim, &sim.root_pool_path()).await?;
                    vch_vapp(&sim, &root, &args.name).await?
                }
            };
            // Container VMs' guests are the real tether in Linux namespaces; guests that
            // ended while no endpoint ran are reconciled before serving.
            sim.set_guest_runner(std::sync::Arc::new(vic_simulator::TetherRunner::new()));
            sim.reconcile_guests().await?;
            info!(state = %dir.display(), "simulator opened");
            (sim.backend(), pool_path)
        }
        Target::VSphere(url) => {
            let tls = match (&args.thumbprint, args.insecure) {
                (Some(t), _) => vic_vsphere::Tls::Thumbprint(t.clone()),
                (None, true) => vic_vsphere::Tls::Insecure,
                (None, false) => vic_vsphere::Tls::WebPki,
            };
            let options = vic_vsphere::VsphereOptions {
                client: vic_vsphere::ClientOptions {
                    tls,
                    ..Default::default()
                },
                datacenter: None,
            };
            let vs = vic_vsphere::VsphereBackend::connect(url, &options)
                .await
                .map_err(vic_core::Error::from)?;
            let pool_path = match args.pool {
                Some(p) => p,
                None => vch_vapp(&vs, &vs.default_root_pool().await?, &args.name).await?,
            };
            // The bridge network's port group, as vic-machine create makes it.
            vic_core::Network::ensure_port_group(
                &vs,
                vic_core::containers::BRIDGE_PORT_GROUP,
                None,
            )
            .await?;
            info!(sdk = %vs.client().url(), "connected to vSphere");
            (vs.backend(), pool_path)
        }
    };
    let mut ca_certificates_pem = Vec::new();
    for f in &args.registry_cas {
        ca_certificates_pem
            .push(std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?);
    }
    let registry = vic_registry::RegistryClient::new(vic_registry::RegistryConfig {
        insecure_registries: args.insecure_registries,
        ca_certificates_pem,
        ..Default::default()
    })?;
    let engine = Engine::open(
        backend,
        EngineConfig {
            vch_name: args.name,
            pool_path,
            image_datastore: args.image_store,
            registry: Some(Arc::new(registry)),
        },
    )
    .await?;
    // Restart policies, --rm and die events, also for containers that ended while no
    // endpoint ran.
    engine.supervise();
    serve(&args.hosts, Arc::new(AppState { engine })).await?;
    Ok(())
}
