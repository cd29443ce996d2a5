//! The configuration file: TOML, every key optional, then `SWITCHBOARD__SECTION__KEY`
//! environment overrides, then command-line flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use switchboard_broker::BrokerConfig;

/// Environment variables starting with this override config keys; `__` separates levels:
/// `SWITCHBOARD__BROKER__LIMITS__MAX_CONNECTIONS=5000`.
pub const ENV_PREFIX: &str = "SWITCHBOARD__";

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Log filter, `tracing` syntax (`info`, `switchboard_broker=debug,info`).
    pub log: String,
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// Async worker threads; 0: one per core.
    pub workers: usize,
    pub broker: BrokerConfig,
    pub store: StoreConfig,
    pub im: ImConfig,
    pub gateway: GatewayConfig,
    /// Cluster mode (`docs/cluster.md`): routing over NATS while `nats_url` is set, the
    /// durable state in PostgreSQL while `postgres_url` is set.
    pub cluster: switchboard_broker::ClusterConfig,
}

/// The in-process REST gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where it serves HTTP (`up` default: 127.0.0.1:8080; none: no gateway).
    pub listen: Option<std::net::SocketAddr>,
    /// Its push worker (docs/push.md).
    pub push: PushSettings,
    /// Where uploaded files are kept (default: `{data_dir}/files`).
    pub files: FilesSettings,
}

/// The gateway's file store: the data directory, or an S3-compatible bucket with
/// `[gateway.files.s3]` `endpoint`, `bucket`, `region`, `access_key`, `secret_key`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesSettings {
    pub s3: Option<switchboard_gateway::files::s3::S3Config>,
}

/// The gateway's push worker: on by default, on the providers' production endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    pub enabled: bool,
    /// A CA certificate file (PEM) to trust besides the system's roots.
    pub extra_ca: Option<PathBuf>,
    /// Endpoint overrides (none: the real Apple, Google, Huawei, Xiaomi, OPPO, vivo, Honor,
    /// Meizu ones).
    pub apns_production: Option<String>,
    pub apns_sandbox: Option<String>,
    pub fcm_base: Option<String>,
    pub fcm_token_uri: Option<String>,
    pub huawei_base: Option<String>,
    pub huawei_token_uri: Option<String>,
    pub xiaomi_base: Option<String>,
    pub oppo_base: Option<String>,
    pub vivo_base: Option<String>,
    pub honor_base: Option<String>,
    pub honor_token_uri: Option<String>,
    pub meizu_base: Option<String>,
    /// Jobs handled at once per gateway.
    pub max_concurrent: usize,
    /// Tenants' credentials, `[gateway.push.tenants.ID.VENDOR]` (crate::push_tenants).
    #[serde(skip_serializing_if = "crate::push_tenants::PushTenants::is_empty")]
    pub tenants: crate::push_tenants::PushTenants,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            enabled: true,
            extra_ca: None,
            apns_production: None,
            apns_sandbox: None,
            fcm_base: None,
            fcm_token_uri: None,
            huawei_base: None,
            huawei_token_uri: None,
            xiaomi_base: None,
            oppo_base: None,
            vivo_base: None,
            honor_base: None,
            honor_token_uri: None,
            meizu_base: None,
            max_concurrent: 64,
            tenants: Default::default(),
        }
    }
}

impl PushSettings {
    /// The worker's configuration (reads the extra CA file and the credential files).
    pub fn to_push_config(&self) -> anyhow::Result<switchboard_gateway::push::PushConfig> {
        let mut c = switchboard_gateway::push::PushConfig {
            enabled: self.enabled,
            max_concurrent: self.max_concurrent.max(1),
            configured: self.tenants.resolve()?,
            ..Default::default()
        };
        if let Some(p) = &self.extra_ca {
            c.extra_ca_pem = Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read the push CA {}", p.display()))?,
            );
        }
        for (v, field) in [
            (&self.apns_production, &mut c.apns_production),
            (&self.apns_sandbox, &mut c.apns_sandbox),
            (&self.fcm_base, &mut c.fcm_base),
            (&self.fcm_token_uri, &mut c.fcm_token_uri),
            (&self.huawei_base, &mut c.huawei_base),
            (&self.huawei_token_uri, &mut c.huawei_token_uri),
            (&self.xiaomi_base, &mut c.xiaomi_base),
            (&self.oppo_base, &mut c.oppo_base),
            (&self.vivo_base, &mut c.vivo_base),
            (&self.honor_base, &mut c.honor_base),
            (&self.honor_token_uri, &mut c.honor_token_uri),
            (&self.meizu_base, &mut c.meizu_base),
        ] {
            if let Some(v) = v {
                *field = v.clone();
            }
        }
        Ok(c)
    }
}

/// The IM service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImConfig {
    /// Run the IM service (tenants, users, conversations) inside the broker.
    pub enabled: bool,
}

impl Default for ImConfig {
    fn default() -> Self {
        ImConfig { enabled: true }
    }
}

/// Durable storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Keep sessions, queues and retained messages in `data_dir/switchboard.redb`. Off:
    /// everything lives in memory and is lost at exit.
    pub enabled: bool,
    /// Bytes of stored messages (queues + retained) above which QoS 1/2 publishes are
    /// refused with 0x97 Quota exceeded; 0 for no cap.
    pub max_disk_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            max_disk_bytes: 8 << 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: "info".into(),
            data_dir: PathBuf::from("data"),
            workers: 0,
            broker: BrokerConfig::default(),
            store: StoreConfig::default(),
            im: ImConfig::default(),
            gateway: GatewayConfig::default(),
            cluster: switchboard_broker::ClusterConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (if given), then applies overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                text.parse()
                    .with_context(|| format!("config file {} is not valid TOML", p.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            set_path(&mut doc, path, &value)
                .with_context(|| format!("environment variable {key}"))?;
        }
        Config::deserialize(toml::Value::Table(doc)).context("invalid configuration")
    }

    /// The default configuration as commented TOML.
    pub fn default_toml() -> anyhow::Result<String> {
        let body = toml::to_string_pretty(&Config::default())?;
        Ok(format!(
            "# Switchboard configuration. Every key is optional; shown are the defaults.\n\
             # Override any key from the environment: {ENV_PREFIX}BROKER__LIMITS__MAX_CONNECTIONS=5000\n\n{body}"
        ))
    }
}

/// Sets `a__b__c` in `doc` to `raw`, read as a TOML value when it parses as one (numbers,
/// booleans, arrays), else as a string.
fn set_path(doc: &mut toml::Table, path: &str, raw: &str) -> anyhow::Result<()> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let Some((last, parents)) = keys.split_last() else {
        bail!("empty key");
    };
    let mut table = doc;
    for k in parents {
        let entry = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("{k} is not a section"),
        };
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_reach_nested_keys() {
        let env = vec![
            (
                "SWITCHBOARD__BROKER__LIMITS__MAX_CONNECTIONS".to_owned(),
                "77".to_owned(),
            ),
            (
                "SWITCHBOARD__BROKER__ALLOW_ANONYMOUS".to_owned(),
                "true".to_owned(),
            ),
            (
                "SWITCHBOARD__BROKER__LISTENERS__TCP".to_owned(),
                r#"["127.0.0.1:1999"]"#.to_owned(),
            ),
            ("SWITCHBOARD__DATA_DIR".to_owned(), "/tmp/x".to_owned()),
            ("UNRELATED".to_owned(), "1".to_owned()),
        ];
        let c = Config::load(None, env).expect("valid");
        assert_eq!(c.broker.limits.max_connections, 77);
        assert!(c.broker.allow_anonymous);
        assert_eq!(c.broker.listeners.tcp[0].port(), 1999);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        let env = vec![(
            "SWITCHBOARD__CLUSTER__POSTGRES_URL".to_owned(),
            "postgres://sb@db:5432/sb".to_owned(),
        )];
        let c = Config::load(None, env).expect("valid");
        assert_eq!(
            c.cluster.postgres_url.as_deref(),
            Some("postgres://sb@db:5432/sb")
        );
    }

    #[test]
    fn default_config_round_trips_and_unknown_keys_fail() {
        let text = Config::default_toml().expect("serialises");
        let parsed: Config = toml::from_str(&text).expect("parses back");
        assert_eq!(
            parsed.broker.limits.max_packet_size,
            Config::default().broker.limits.max_packet_size
        );
        let env = vec![(
            "SWITCHBOARD__BROKER__NO_SUCH_KEY".to_owned(),
            "1".to_owned(),
        )];
        assert!(Config::load(None, env).is_err());
    }
}
