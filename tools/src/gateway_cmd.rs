//! `switchboard gateway`: the REST gateway on its own, connected to a broker over MQTT with
//! the service credential; and the in-process gateway `up` starts next to the broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};

/// `switchboard gateway` flags.
#[derive(Args, Clone)]
pub struct GatewayArgs {
    /// The broker's MQTT TCP address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: SocketAddr,
    /// Where to serve the REST API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The service credential file `up` wrote (JSON with a `password`).
    #[arg(long, default_value = "data/service.credentials")]
    service_credentials: PathBuf,
    /// Where uploaded files are kept (shared by every instance, e.g. a network mount).
    #[arg(long, default_value = "data/files")]
    files_dir: PathBuf,
    /// A JSON file with S3 settings (`endpoint`, `bucket`, `region`, `access_key`,
    /// `secret_key`): files go to that bucket instead of `--files-dir`.
    #[arg(long)]
    s3: Option<PathBuf>,
    /// MQTT client id of this instance (unique per gateway instance).
    #[arg(long)]
    client_id: Option<String>,
    /// Log filter.
    #[arg(long, default_value = "info")]
    log: String,
    /// Run without the push worker (docs/push.md).
    #[arg(long)]
    no_push: bool,
    /// A CA certificate file (PEM) the push worker trusts besides the system's roots.
    #[arg(long)]
    push_ca: Option<PathBuf>,
    /// A configuration file (the one `up` takes): its `[gateway.push]` section (endpoints,
    /// tenants' credentials) sets the push worker; `SWITCHBOARD__GATEWAY__PUSH__...`
    /// variables apply with or without it; `--no-push` and `--push-ca` win.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Reads the service password from a credential file.
pub(crate) fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the service credential {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    v["password"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} has no password", path.display()))
}

/// Starts a gateway for the broker at `broker`.
pub async fn start(
    http: SocketAddr,
    broker: SocketAddr,
    secret: &str,
    client_id: Option<String>,
    files_dir: PathBuf,
    s3: Option<switchboard_gateway::files::s3::S3Config>,
    push: switchboard_gateway::push::PushConfig,
) -> anyhow::Result<Gateway> {
    let store = match s3 {
        Some(c) => {
            let s3 = switchboard_gateway::files::s3::S3BlobStore::new(c)
                .context("invalid S3 settings")?;
            s3.ensure_bucket()
                .await
                .context("cannot reach or create the S3 bucket")?;
            Some(std::sync::Arc::new(s3)
                as std::sync::Arc<dyn switchboard_gateway::files::BlobStore>)
        }
        None => None,
    };
    let cfg = GatewayConfig {
        listen: http,
        broker: vec![Endpoint::Tcp(loopback_if_unspecified(broker))],
        service_secret: secret.to_owned(),
        client_id: client_id
            .unwrap_or_else(|| format!("gateway-{}-{}", std::process::id(), http.port())),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: Some(files_dir),
    };
    Gateway::start_with_store(cfg, push, store)
        .await
        .with_context(|| format!("cannot start the gateway on {http}"))
}

/// A broker listening on 0.0.0.0 is reached on 127.0.0.1.
fn loopback_if_unspecified(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        let ip = if a.is_ipv4() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(ip, a.port())
    } else {
        a
    }
}

/// `switchboard gateway`.
pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("invalid log filter {:?}", args.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let secret = read_secret(&args.service_credentials)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut push = crate::config::Config::load(args.config.as_deref(), std::env::vars())?
            .gateway
            .push;
        if args.no_push {
            push.enabled = false;
        }
        if let Some(ca) = args.push_ca {
            push.extra_ca = Some(ca);
        }
        let push = push.to_push_config()?;
        let s3 = match &args.s3 {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not valid S3 settings", path.display()))?,
                )
            }
            None => None,
        };
        let gw = start(
            args.http,
            args.broker,
            &secret,
            args.client_id,
            args.files_dir,
            s3,
            push,
        )
        .await?;
        println!("switchboard: gateway REST API on http://{}", gw.addr());
        tokio::signal::ctrl_c().await?;
        gw.stop().await;
        anyhow::Ok(())
    })
}
