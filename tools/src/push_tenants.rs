//! Tenants' push credentials in the configuration file: `[gateway.push.tenants.ID.VENDOR]`
//! tables ([`PushTenants`]), each secret given as a value (`key_p8 = "..."`) or as a file
//! (`key_p8_file = "/run/secrets/AuthKey.p8"`, read at start, surrounding whitespace
//! trimmed). Being plain nested tables they take environment overrides like every other
//! key: `SWITCHBOARD__GATEWAY__PUSH__TENANTS__3__XIAOMI__APP_SECRET_FILE=/run/secrets/mi`.
//!
//! [`PushTenants::resolve`] reads the files and checks the keys, with errors naming the
//! tenant, the vendor and the field (never a secret); the push worker then checks that
//! each set makes a provider (a malformed key stops the start the same way). The result
//! wins over credentials set through the REST API (docs/push.md says why).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_gateway::push::ConfiguredCredentials;

/// What one vendor's table holds: its secret (given as `secret` or `secret_file`, stored
/// under `json_secret`), the other fields it needs and those it may have.
struct Schema {
    vendor: &'static str,
    secret: &'static str,
    json_secret: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
}

const SCHEMAS: [Schema; 8] = [
    Schema {
        vendor: "apns",
        secret: "key_p8",
        json_secret: "key_p8",
        required: &["key_id", "team_id"],
        optional: &["topic"],
    },
    Schema {
        vendor: "fcm",
        secret: "service_account",
        json_secret: "service_account_json",
        required: &[],
        optional: &[],
    },
    Schema {
        vendor: "huawei",
        secret: "client_secret",
        json_secret: "client_secret",
        required: &["app_id"],
        optional: &["badge_class"],
    },
    Schema {
        vendor: "xiaomi",
        secret: "app_secret",
        json_secret: "app_secret",
        required: &[],
        optional: &["package_name"],
    },
    Schema {
        vendor: "oppo",
        secret: "master_secret",
        json_secret: "master_secret",
        required: &["app_key"],
        optional: &["channel_id"],
    },
    Schema {
        vendor: "vivo",
        secret: "app_secret",
        json_secret: "app_secret",
        required: &["app_id", "app_key"],
        optional: &[],
    },
    Schema {
        vendor: "honor",
        secret: "client_secret",
        json_secret: "client_secret",
        required: &["app_id"],
        optional: &["client_id", "badge_class"],
    },
    Schema {
        vendor: "meizu",
        secret: "app_secret",
        json_secret: "app_secret",
        required: &["app_id"],
        optional: &[],
    },
];

/// `[gateway.push.tenants]`: tenant id → vendor → that vendor's table. Its `Debug` names
/// the tenants only.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PushTenants(pub BTreeMap<String, BTreeMap<String, toml::Table>>);

impl std::fmt::Debug for PushTenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl PushTenants {
    /// True when no tenant is configured (the default file omits the section).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The credentials, files read, as the push worker takes them.
    pub fn resolve(&self) -> anyhow::Result<ConfiguredCredentials> {
        let mut out = ConfiguredCredentials::default();
        for (tenant, vendors) in &self.0 {
            let id: u64 = tenant.parse().ok().filter(|&id| id > 0).with_context(|| {
                format!("gateway.push.tenants.{tenant}: the key must be a tenant id (a number)")
            })?;
            for (vendor, table) in vendors {
                let at = format!("gateway.push.tenants.{tenant}.{vendor}");
                let Some(schema) = SCHEMAS.iter().find(|s| s.vendor == vendor) else {
                    let known: Vec<&str> = SCHEMAS.iter().map(|s| s.vendor).collect();
                    bail!("{at}: unknown vendor (one of {})", known.join(", "));
                };
                out.insert(id, vendor, resolve_one(schema, table, &at)?);
            }
        }
        Ok(out)
    }
}

/// One vendor's table as its credentials JSON object.
fn resolve_one(s: &Schema, table: &toml::Table, at: &str) -> anyhow::Result<Value> {
    let file_key = format!("{}_file", s.secret);
    let mut out = Map::new();
    for (k, v) in table {
        if k == s.secret || *k == file_key {
            continue;
        }
        if !s.required.contains(&k.as_str()) && !s.optional.contains(&k.as_str()) {
            let mut allowed: Vec<&str> = s.required.iter().chain(s.optional).copied().collect();
            allowed.extend([s.secret, file_key.as_str()]);
            bail!("{at}: unknown key {k} (allowed: {})", allowed.join(", "));
        }
        // Identifiers are strings; a number (an app id written unquoted) is taken as one.
        let text = match v {
            toml::Value::String(t) => t.clone(),
            toml::Value::Integer(n) => n.to_string(),
            _ => bail!("{at}.{k}: must be a string"),
        };
        out.insert(k.clone(), Value::String(text));
    }
    for k in s.required {
        if !out.contains_key(*k) {
            bail!("{at}: {k} is required");
        }
    }
    let secret = match (table.get(s.secret), table.get(&file_key)) {
        (Some(_), Some(_)) => bail!("{at}: give {} or {file_key}, not both", s.secret),
        (None, None) => bail!("{at}: {} or {file_key} is required", s.secret),
        // The value itself is never quoted in an error.
        (Some(v), None) => v
            .as_str()
            .with_context(|| format!("{at}.{}: must be a string", s.secret))?
            .to_owned(),
        (None, Some(p)) => {
            let p = p
                .as_str()
                .with_context(|| format!("{at}.{file_key}: must be a path"))?;
            read_secret(Path::new(p)).with_context(|| format!("{at}.{file_key}"))?
        }
    };
    if secret.trim().is_empty() {
        bail!("{at}: the {} is empty", s.secret);
    }
    out.insert(s.json_secret.to_owned(), Value::String(secret));
    Ok(Value::Object(out))
}

/// A secret file's text, trimmed. The error names the file and the I/O problem only.
fn read_secret(p: &Path) -> anyhow::Result<String> {
    let text = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", p.display()))?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(text: &str) -> PushTenants {
        toml::from_str(text).expect("valid TOML")
    }

    fn err(text: &str) -> String {
        format!("{:#}", tenants(text).resolve().expect_err("refused"))
    }

    #[test]
    fn values_and_files_resolve() {
        let dir = std::env::temp_dir().join(format!("sb-push-tenants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("mi.secret");
        std::fs::write(&key, "mi-S3CRET\n").expect("file");
        let c = tenants(&format!(
            "[7.xiaomi]\napp_secret_file = {key:?}\npackage_name = \"com.x\"\n\
             [7.vivo]\napp_id = 10004\napp_key = \"k\"\napp_secret = \"v-S3CRET\"\n"
        ))
        .resolve()
        .expect("resolves");
        let mut stored = Value::Null;
        c.overlay(7, &mut stored);
        assert_eq!(stored["xiaomi"]["app_secret"], "mi-S3CRET");
        assert_eq!(stored["vivo"]["app_id"], "10004");
        assert_eq!(stored["vivo"]["app_secret"], "v-S3CRET");
        assert!(!format!("{c:?}").contains("S3CRET"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn environment_variables_reach_a_tenants_credentials() {
        let env = vec![(
            "SWITCHBOARD__GATEWAY__PUSH__TENANTS__9__XIAOMI__APP_SECRET".to_owned(),
            "mi".to_owned(),
        )];
        let c = crate::config::Config::load(None, env).expect("valid");
        let creds = c.gateway.push.tenants.resolve().expect("resolves");
        assert_eq!(creds.vendors(9), vec!["xiaomi".to_owned()]);
    }

    #[test]
    fn errors_name_tenant_vendor_and_field_never_the_secret() {
        let e = err(
            "[3.apns]\nkey_p8_file = \"/nonexistent/AuthKey.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\n",
        );
        assert!(e.contains("gateway.push.tenants.3.apns.key_p8_file"), "{e}");
        assert!(e.contains("/nonexistent/AuthKey.p8"), "{e}");
        let e = err("[3.apns]\nkey_p8 = \"S3CRET\"\nteam_id = \"T\"\n");
        assert!(
            e.contains("key_id is required") && !e.contains("S3CRET"),
            "{e}"
        );
        let e = err(
            "[3.huawei]\napp_id = \"1\"\nclient_secret = \"S3CRET\"\nclient_secret_file = \"/x\"\n",
        );
        assert!(e.contains("not both") && !e.contains("S3CRET"), "{e}");
        let e = err("[3.huawei]\napp_id = \"1\"\nclient_secert = \"S3CRET\"\n");
        assert!(
            e.contains("unknown key client_secert") && !e.contains("S3CRET"),
            "{e}"
        );
        assert!(err("[3.nokia]\napp_secret = \"x\"\n").contains("unknown vendor"));
        assert!(err("[3.meizu]\napp_secret = \"x\"\n").contains("app_id"));
        assert!(err("[acme.xiaomi]\napp_secret = \"x\"\n").contains("tenant id"));
        assert!(err("[3.fcm]\n").contains("service_account or service_account_file"));
    }
}
