//! `switchboard`: one binary for the whole system.
//!
//! - `up`: everything that exists, in one process, with developer defaults.
//! - `broker`: the MQTT broker alone.
//! - `config print-default`: the default configuration file.
//! - `passwd USER`: a password file line (argon2id, or SCRAM-SHA-256 with `--scram`).
//! - `ctl ...`: the admin API from the command line (`ctl acl reload` re-reads the ACL file;
//!   `ctl tenant|user|token|im` drive the IM service).

mod bench;
mod config;
mod ctl;
mod ctl_apps;
mod ctl_console;
mod ctl_im;
mod ctl_org;
mod ctl_push;
mod ctl_store;
mod gateway_cmd;
mod push_tenants;
mod secrets;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchboard_broker::Broker;
use switchboard_broker::store::Store;
use switchboard_broker::store::redb::RedbStore;

/// mimalloc: measurably fewer cycles per message than the system allocator on the hot
/// path (many small short-lived allocations across threads). See bench/README.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The store's file name inside the data directory.
const STORE_FILE: &str = "switchboard.redb";

use crate::config::Config;
pub(crate) use secrets::ADMIN_TOKEN_FILE;
use secrets::{ACCOUNT_FILE, SERVICE_CREDENTIALS, random_token, service_secret, write_private};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "MQTT broker and messaging backbone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole system (today: the broker) with developer defaults.
    Up(RunArgs),
    /// Start the MQTT broker.
    Broker(RunArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make a development CA and server certificate (and optionally client certificates).
    Certs {
        /// Where to write them.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Also make a client certificate for this user (repeatable).
        #[arg(long)]
        client: Vec<String>,
    },
    /// Print a password file line for USER; the password is read from stdin.
    Passwd {
        user: String,
        /// A SCRAM-SHA-256 credential (serves SCRAM and plain passwords) instead of argon2id.
        #[arg(long)]
        scram: bool,
        /// PBKDF2 iterations for `--scram`.
        #[arg(long, default_value_t = switchboard_broker::auth::scram::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// The REST gateway alone, connected to a broker (`up` runs one in-process).
    Gateway(gateway_cmd::GatewayArgs),
    /// Benchmark Switchboard against mosquitto and rumqttd on loopback.
    Bench(bench::BenchArgs),
    /// Runs a benchmark peer broker in this process (used by `bench`).
    #[command(hide = true)]
    BenchPeer {
        /// Only `rumqttd`.
        peer: String,
        #[arg(long)]
        port: u16,
    },
    /// Operator tools.
    Ctl {
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Counts: connected clients, sessions, subscriptions, retained messages.
    Overview(AdminArgs),
    /// Sessions, connected or not, with transport, queue and subscriptions.
    Clients(AdminArgs),
    /// One session.
    Client {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Disconnect a client (MQTT 5: DISCONNECT 0x98 administrative action).
    Kick {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drain this node (cluster mode): refuse new CONNECTs and move every client to another
    /// node (MQTT 5: 0x9C Use another server with a Server Reference).
    Drain {
        /// Server Reference to send clients to (default: `cluster.redirect_to`, else
        /// another live node).
        #[arg(long)]
        to: Option<String>,
        /// Stop draining: accept CONNECTs again.
        #[arg(long)]
        stop: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Retained messages (topic, QoS, size).
    Retained(AdminArgs),
    /// The Prometheus metrics text.
    Metrics(AdminArgs),
    /// The ACL file.
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// IM tenants (apps / enterprises).
    Tenant {
        #[command(subcommand)]
        command: ctl_im::TenantCommand,
    },
    /// IM users of a tenant.
    User {
        #[command(subcommand)]
        command: ctl_im::UserCommand,
    },
    /// A login token for an IM user (the MQTT password of the user's device).
    Token(ctl_im::TokenArgs),
    /// Workbench apps of a tenant.
    #[command(name = "workbench-app")]
    WorkbenchApp {
        #[command(subcommand)]
        command: ctl_apps::AppCommand,
    },
    /// Web console users (`/console` of the gateway).
    #[command(name = "console-user")]
    ConsoleUser {
        #[command(subcommand)]
        command: ctl_console::ConsoleUserCommand,
    },
    /// IM messages from the command line: send, tail.
    Im {
        #[command(subcommand)]
        command: ctl_im::ImCommand,
    },
    /// The organisation directory of a tenant: departments, import, export.
    Dept {
        #[command(subcommand)]
        command: ctl_org::DeptCommand,
    },
    /// A broadcast to every user of a tenant, or to a department and its sub-departments.
    Broadcast(ctl_org::BroadcastArgs),
    /// A test push to each device of a user, through a running gateway's push worker;
    /// prints each provider's answer.
    #[command(name = "push-test")]
    PushTest(ctl_push::PushTestArgs),
    /// Inspect or compact the store offline (stop the broker first).
    Store {
        #[command(subcommand)]
        command: ctl_store::StoreCommand,
        /// Directory holding switchboard.redb.
        #[arg(long, default_value = "data", global = true)]
        data_dir: PathBuf,
    },
}

/// How `ctl` reaches the admin API.
#[derive(Args, Clone)]
struct AdminArgs {
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:18083")]
    admin: String,
    /// Bearer token (default: the one `up` wrote to DATA_DIR/admin.token).
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum AclCommand {
    /// Re-read the ACL file (a file with errors is refused; the old rules stay).
    Reload(AdminArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the default configuration as TOML.
    PrintDefault,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Directory for durable state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TCP listen address for MQTT (repeatable).
    #[arg(long)]
    tcp: Vec<SocketAddr>,
    /// TLS listen address (repeatable).
    #[arg(long)]
    tls: Vec<SocketAddr>,
    /// WebSocket listen address, path /mqtt (repeatable).
    #[arg(long)]
    ws: Vec<SocketAddr>,
    /// WebSocket-over-TLS listen address (repeatable).
    #[arg(long)]
    wss: Vec<SocketAddr>,
    /// QUIC listen address, UDP (repeatable).
    #[arg(long)]
    quic: Vec<SocketAddr>,
    /// Directory of dev certificates used when no tls.cert/tls.key is configured.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// Accept clients without credentials.
    #[arg(long)]
    allow_anonymous: bool,
    /// Password file of `user:argon2-hash` lines.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// ACL file (mosquitto format, plus `share` rules); reloaded on SIGHUP.
    #[arg(long)]
    acl_file: Option<PathBuf>,
    /// Where the in-process REST gateway serves (`up` default: 127.0.0.1:8080; config
    /// `gateway.listen`).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Log filter (e.g. `info`, `debug`, `switchboard_broker=trace`).
    #[arg(long)]
    log: Option<String>,
}

/// `ctl`'s connection options (`--admin`, `--token`, `--data-dir`) belong to each
/// subcommand; written before it (`ctl --admin ADDR clients`), they are moved after it so
/// that both orders work.
fn ctl_options_last(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).is_none_or(|a| a != "ctl") {
        return args;
    }
    let mut moved = Vec::new();
    while let Some(a) = args.get(2).and_then(|a| a.to_str()).map(str::to_owned) {
        let name = a.split('=').next().unwrap_or_default();
        if !["--admin", "--token", "--data-dir"].contains(&name) {
            break;
        }
        moved.push(args.remove(2));
        if !a.contains('=') && args.len() > 2 {
            moved.push(args.remove(2));
        }
    }
    args.extend(moved);
    args
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(ctl_options_last(std::env::args_os().collect()));
    match cli.command {
        Command::Up(args) => run(args, true),
        Command::Broker(args) => run(args, false),
        Command::Gateway(args) => gateway_cmd::run(args),
        Command::Config {
            command: ConfigCommand::PrintDefault,
        } => {
            print!("{}", Config::default_toml()?);
            Ok(())
        }
        Command::Ctl {
            command: CtlCommand::Store { command, data_dir },
        } => ctl_store::run(command, &data_dir),
        Command::Ctl { command } => ctl::ctl_api(command),
        Command::Certs { dir, client } => {
            let c = switchboard_broker::transport::certs::ensure_dev_certs(&dir)?;
            println!(
                "CA certificate (give it to clients): {}",
                c.ca_cert.display()
            );
            println!(
                "server certificate: {}  key: {}",
                c.server_cert.display(),
                c.server_key.display()
            );
            for user in client {
                let (cert, key) =
                    switchboard_broker::transport::certs::make_client_cert(&dir, &user)?;
                println!(
                    "client certificate for {user}: {}  key: {}",
                    cert.display(),
                    key.display()
                );
            }
            Ok(())
        }
        Command::Bench(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(bench::run(args))
        }
        Command::BenchPeer { peer, port } => {
            anyhow::ensure!(peer == "rumqttd", "unknown peer {peer}");
            bench::peers::run_rumqttd(port)
        }
        Command::Passwd {
            user,
            scram,
            iterations,
        } => {
            anyhow::ensure!(!user.contains(':'), "user names cannot contain ':'");
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password on stdin");
            let hash = if scram {
                anyhow::ensure!(iterations >= 4096, "RFC 7677: at least 4096 iterations");
                switchboard_broker::auth::ScramCredential::new(password.as_bytes(), iterations)
                    .map_err(|e| anyhow::anyhow!("deriving failed: {e}"))?
                    .to_phc_like()
            } else {
                switchboard_broker::auth::hash_password(password)
                    .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?
            };
            println!("{user}:{hash}");
            Ok(())
        }
    }
}

fn run(args: RunArgs, up: bool) -> anyhow::Result<()> {
    let mut cfg = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    let l = &mut cfg.broker.listeners;
    let any_flag = !(args.tcp.is_empty()
        && args.tls.is_empty()
        && args.ws.is_empty()
        && args.wss.is_empty()
        && args.quic.is_empty());
    if any_flag {
        // Listener flags replace the configured listeners as a whole.
        l.tcp = args.tcp;
        l.tls = args.tls;
        l.ws = args.ws;
        l.wss = args.wss;
        l.quic = args.quic;
    } else if up && l.tls.is_empty() && l.ws.is_empty() && l.wss.is_empty() && l.quic.is_empty() {
        // `up` serves every transport on its usual port.
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        l.tls = vec![any(8883)];
        l.ws = vec![any(8083)];
        l.wss = vec![any(8084)];
        l.quic = vec![any(14567)];
    }
    let needs_tls = !(l.tls.is_empty() && l.wss.is_empty() && l.quic.is_empty());
    if needs_tls && cfg.broker.tls.cert.is_none() {
        let c = switchboard_broker::transport::certs::ensure_dev_certs(&args.certs)
            .context("cannot make dev certificates")?;
        println!(
            "switchboard: dev CA for TLS/WSS/QUIC clients: {}",
            c.ca_cert.display()
        );
        cfg.broker.tls.cert = Some(c.server_cert);
        cfg.broker.tls.key = Some(c.server_key);
    }
    if args.allow_anonymous {
        cfg.broker.allow_anonymous = true;
    }
    if let Some(p) = args.password_file {
        cfg.broker.password_file = Some(p);
    }
    if let Some(p) = args.acl_file {
        cfg.broker.acl_file = Some(p);
    }
    if let Some(l) = args.log {
        cfg.log = l;
    }
    if let Some(h) = args.http {
        cfg.gateway.listen = Some(h);
    } else if up && cfg.gateway.listen.is_none() && cfg.im.enabled {
        cfg.gateway.listen = Some(SocketAddr::from(([127, 0, 0, 1], 8080)));
    }
    if up && cfg.broker.admin.listen.is_none() {
        cfg.broker.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 18083)));
    }
    if cfg.broker.admin.listen.is_some() && cfg.broker.admin.token.is_none() {
        // A fresh token per data directory, readable by `switchboard ctl` on this machine.
        let path = cfg.data_dir.join(ADMIN_TOKEN_FILE);
        std::fs::create_dir_all(&cfg.data_dir)?;
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                let t = random_token();
                write_private(&path, &t)?;
                t
            }
        };
        cfg.broker.admin.token = Some(token);
    }
    if up && cfg.broker.password_file.is_none() && !cfg.broker.allow_anonymous {
        // `up` is the developer's one command: with no accounts configured, let clients in.
        tracing::info!("no password file: allowing anonymous clients for `up`");
        cfg.broker.allow_anonymous = true;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log)
        .with_context(|| format!("invalid log filter {:?}", cfg.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.workers > 0 {
        rt.worker_threads(cfg.workers);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    cfg.broker.cluster = cfg.cluster.clone();
    let mut broker = Broker::new(cfg.broker.clone());
    let mut store: Option<Arc<dyn Store>> = None;
    if let Some(url) = &cfg.cluster.postgres_url {
        // Cluster mode: the durable state lives in PostgreSQL instead of the data file.
        let pg = switchboard_broker::store::postgres::PgStore::open(url, cfg.store.max_disk_bytes)
            .context("cannot open the PostgreSQL store (cluster.postgres_url)")?;
        let pg = match cfg.cluster.node_id.as_str() {
            "" => pg,
            node => pg.with_node_label(node),
        };
        let pg: Arc<dyn Store> = Arc::new(pg);
        broker = broker.with_store(pg.clone());
        store = Some(pg);
    } else if cfg.store.enabled {
        let path = cfg.data_dir.join(STORE_FILE);
        let redb = RedbStore::open(&path, cfg.store.max_disk_bytes)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        tracing::info!(path = %path.display(), "store opened");
        let redb: Arc<dyn Store> = Arc::new(redb);
        broker = broker.with_store(redb.clone());
        store = Some(redb);
    }
    let im = if cfg.im.enabled {
        // Without the store the IM service keeps its state in memory (lost at exit).
        let im_store = store
            .unwrap_or_else(|| Arc::new(switchboard_broker::store::memory::MemoryStore::new()));
        let secret = service_secret(&cfg.data_dir)?;
        let im = switchboard_broker::im::ImService::new(im_store, Some(secret.clone()));
        broker = broker.with_im(im.clone());
        Some((im, secret))
    } else {
        None
    };
    rt.block_on(async move {
        let handle = broker.start().await?;
        let mut gateway = None;
        if let Some((im, secret)) = &im {
            let account = im
                .default_account()
                .await
                .map_err(|e| anyhow::anyhow!("IM service: {e}"))?;
            write_private(
                &cfg.data_dir.join(ACCOUNT_FILE),
                &serde_json::json!({ "account_id": account.id, "account_token": account.token })
                    .to_string(),
            )?;
            println!(
                "switchboard: IM service on; developer account {} (token in {}; new tenant: `switchboard ctl tenant create NAME`; service login in {})",
                account.id,
                cfg.data_dir.join(ACCOUNT_FILE).display(),
                cfg.data_dir.join(SERVICE_CREDENTIALS).display()
            );
            // The first operator of the web console, once: its one-time password is
            // printed now and never again.
            match im.ensure_console_operator("admin").await {
                Ok(Some(password)) => println!(
                    "switchboard: console operator \"admin\" created; one-time password: {password} (change it at the first sign-in)"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot create the console operator"),
            }
            if let (Some(http), Some(mqtt)) = (cfg.gateway.listen, handle.tcp_addrs().first()) {
                let files = cfg.data_dir.join("files");
                let push = cfg.gateway.push.to_push_config()?;
                let s3 = cfg.gateway.files.s3.clone();
                let gw = gateway_cmd::start(http, *mqtt, secret, None, files, s3, push).await?;
                println!("switchboard: gateway REST API on http://{}", gw.addr());
                println!("switchboard: web console on http://{}/console/", gw.addr());
                gateway = Some(gw);
            }
        }
        let a = handle.addrs();
        for (scheme, list) in [
            ("tcp", &a.tcp),
            ("tls", &a.tls),
            ("ws", &a.ws),
            ("wss", &a.wss),
            ("quic", &a.quic),
        ] {
            for addr in list {
                let path = if scheme.starts_with("ws") {
                    "/mqtt"
                } else {
                    ""
                };
                println!("switchboard: MQTT on {scheme}://{addr}{path}");
            }
        }
        if let Some(admin) = a.admin {
            println!("switchboard: admin API on http://{admin} (token in {}; try `switchboard ctl clients`)", cfg.data_dir.join(ADMIN_TOKEN_FILE).display());
        }
        if cfg.broker.allow_anonymous {
            println!("switchboard: anonymous clients allowed");
        }
        wait_for_signal(handle.state().acl_file.clone()).await?;
        if let Some(gw) = gateway {
            gw.stop().await;
        }
        tracing::info!("shutting down: disconnecting clients (0x8B)");
        if tokio::time::timeout(Duration::from_secs(15), handle.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within 15 s");
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Waits for SIGTERM or SIGINT; meanwhile SIGHUP reloads the ACL file (a file with errors
/// is logged and the previous rules stay).
async fn wait_for_signal(
    acl: Option<Arc<switchboard_broker::auth::FileAcl>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match &acl {
                Some(acl) => {
                    let acl = acl.clone();
                    // FileAcl::reload logs the outcome itself.
                    let _ = tokio::task::spawn_blocking(move || acl.reload()).await;
                }
                None => tracing::info!("SIGHUP: no ACL file to reload"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ctl_options_last;

    fn run(args: &[&str]) -> Vec<String> {
        ctl_options_last(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn ctl_options_may_come_before_the_subcommand() {
        assert_eq!(
            run(&[
                "sb",
                "ctl",
                "--admin",
                "h:1",
                "--data-dir=d",
                "tenant",
                "create",
                "x"
            ]),
            [
                "sb",
                "ctl",
                "tenant",
                "create",
                "x",
                "--admin",
                "h:1",
                "--data-dir=d"
            ]
        );
        let after = ["sb", "ctl", "clients", "--admin", "h:1"];
        assert_eq!(run(&after), after, "already after: unchanged");
        let other = ["sb", "broker", "--admin", "h:1"];
        assert_eq!(run(&other), other, "only ctl is touched");
    }
}
