//! The OpenAPI 3 document of the native API, generated from the handlers' annotations
//! (utoipa), served at `/openapi.json`, and a plain HTML rendering of it at `/docs` (no
//! scripts, no assets from elsewhere: it reads offline).

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::Json;
use axum::response::Html;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use super::handlers;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard gateway: native API",
        description = "Signed REST API for app servers. Every `/v1` call but `/v1/tenants` carries \
            `App-Key`, `Nonce`, `Timestamp` (Unix seconds) and `Signature` = hex HMAC-SHA256 of \
            the app secret over nonce + timestamp + body (docs/gateway.md). Errors are \
            `{code, message}` with stable codes."
    ),
    paths(
        handlers::create_tenant, handlers::register_users, handlers::online, handlers::token,
        handlers::kick, handlers::ban, handlers::unban, handlers::conversations,
        handlers::history, handlers::read, handlers::revoke, handlers::send_private,
        handlers::send_batch, handlers::send_system, handlers::iot_publish,
        handlers::iot_retained, handlers::area_call, crate::files::upload,
        crate::files::refresh_url, crate::files::download, crate::files::device::upload,
        crate::workbench::upload_icon, super::messages::recall,
        super::messages::import, super::tenants::get_settings, super::tenants::put_settings,
        super::tenants::rotate_secret,
    ),
    modifiers(&Signature),
    tags(
        (name = "account", description = "Developer-account calls"),
        (name = "users", description = "Users, tokens, sessions"),
        (name = "messages", description = "Sending"),
        (name = "conversations", description = "A user's conversations"),
        (name = "iot", description = "Plain MQTT topics of the tenant"),
        (name = "files", description = "Uploads and download links"),
        (name = "areas", description = "IM part 2 requests by area"),
    )
)]
pub struct ApiDoc;

/// Declares the signature headers as the `signature` security scheme.
struct Signature;

impl utoipa::Modify for Signature {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Signature",
                "hex HMAC-SHA256(app secret, Nonce + Timestamp + body), with App-Key, Nonce and Timestamp headers",
            ))),
        );
    }
}

fn doc() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(doc().clone())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /docs`: every operation of the document, rendered on the server.
pub async fn page() -> Html<String> {
    let d = doc();
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Switchboard API</title><style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:auto;padding:1rem}\
         code{background:#eee;padding:0 .2em}section{border-top:1px solid #ccc;padding:.5rem 0}</style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>.</p>",
        esc(&d.info.title),
        esc(d.info.description.as_deref().unwrap_or_default())
    );
    let Ok(v) = serde_json::to_value(d) else {
        return Html(h);
    };
    if let Some(paths) = v["paths"].as_object() {
        for (path, item) in paths {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (method, op) in ops {
                let _ = write!(
                    h,
                    "<section><h3><code>{} {}</code></h3>",
                    method.to_uppercase(),
                    esc(path)
                );
                if let Some(params) = op["parameters"].as_array() {
                    let names: Vec<String> = params
                        .iter()
                        .map(|p| {
                            format!(
                                "{} ({})",
                                p["name"].as_str().unwrap_or_default(),
                                p["in"].as_str().unwrap_or_default()
                            )
                        })
                        .collect();
                    let _ = write!(h, "<p>Parameters: {}</p>", esc(&names.join(", ")));
                }
                if let Some(r) = op["requestBody"]["content"].as_object() {
                    for (ctype, c) in r {
                        let schema = c["schema"]["$ref"].as_str().unwrap_or("object");
                        let _ = write!(
                            h,
                            "<p>Body: <code>{}</code> {}</p>",
                            esc(ctype),
                            esc(schema.rsplit('/').next().unwrap_or(schema))
                        );
                    }
                }
                if let Some(rs) = op["responses"].as_object() {
                    let list: Vec<String> = rs
                        .iter()
                        .map(|(code, r)| {
                            format!("{code} {}", r["description"].as_str().unwrap_or_default())
                        })
                        .collect();
                    let _ = write!(h, "<p>Answers: {}</p>", esc(&list.join("; ")));
                }
                h.push_str("</section>");
            }
        }
    }
    h.push_str("</body></html>");
    Html(h)
}
