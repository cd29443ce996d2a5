//! `switchboard ctl push-test --tenant ID --user U`: a test push to each of the user's
//! devices, and each provider's answer. It goes the way `POST /v1/push/test` goes, through
//! the push worker of a running gateway: the command logs in over MQTT with the service
//! credential (`DATA_DIR/service.credentials`; the MQTT listener from the admin API) and
//! asks on `$im/push-ctl/test` (MQTT 5 request/response); one worker answers. Prints one
//! line per device (`--json`: the worker's answer as is).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use switchboard_client::{Config, Endpoint};
use switchboard_gateway::push::CTL_TEST_TOPIC;
use switchboard_gateway::service::{ServiceClient, ServiceError};

use crate::AdminArgs;
use crate::secrets::SERVICE_CREDENTIALS;

/// `ctl push-test` flags.
#[derive(Args)]
pub struct PushTestArgs {
    #[arg(long)]
    tenant: u64,
    #[arg(long)]
    user: String,
    /// Print the worker's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Runs `ctl push-test`.
pub fn run(a: PushTestArgs) -> anyhow::Result<()> {
    let secret = crate::gateway_cmd::read_secret(&a.admin.data_dir.join(SERVICE_CREDENTIALS))?;
    let addr = crate::ctl_im::mqtt_addr(&a.admin)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt.block_on(async {
        let id = format!("ctl-push-test-{}", std::process::id());
        let mut cfg = Config::new(&id, vec![Endpoint::Tcp(addr)]);
        cfg.connect_timeout = Duration::from_secs(10);
        let (svc, _events) = tokio::time::timeout(
            Duration::from_secs(15),
            ServiceClient::connect(cfg, &secret),
        )
        .await
        .with_context(|| format!("no MQTT connection to {addr} within 15 s"))?
        .with_context(|| format!("cannot log in as the service at {addr}"))?;
        let r = svc
            .request(CTL_TEST_TOPIC, &json!({"tenant": a.tenant, "user": a.user}))
            .await;
        svc.shutdown().await;
        match r {
            Ok(v) => Ok(v),
            Err(ServiceError::Api { message, .. }) => bail!("push-test refused: {message}"),
            Err(e) => Err(anyhow::Error::new(e)
                .context("no push worker answered (is a gateway with its push worker running?)")),
        }
    })?;
    if a.json {
        println!("{answer}");
        return Ok(());
    }
    let devices = answer["devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        bail!("{} has no device token", a.user);
    }
    for d in devices {
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
        let detail = s("detail");
        println!(
            "{:8} {:12} {}{}",
            s("vendor"),
            s("token"),
            s("outcome"),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        );
    }
    Ok(())
}
