//! The push worker: delivers the broker's push jobs (`$im/push/{tenant}`, protobuf
//! `PushJob`, one per message to a user with no device in the foreground) through APNs,
//! FCM, Huawei Push Kit, Xiaomi MiPush, OPPO PUSH, vivo push, Honor Push and Meizu push, with each
//! tenant's own credentials. docs/push.md tells the whole story.
//!
//! Files, by responsibility:
//! - [`jobs`]: the job connection and its flow control (shared subscription, a slot per
//!   job, acknowledgements held back when full), job decoding, operator requests;
//! - [`worker`]: one job's delivery (tokens, quiet hours, providers, retries, dead tokens,
//!   trace and counters);
//! - [`tenants`]: each tenant's providers, from its cached credentials;
//! - [`templates`]: titles and bodies per tenant, language and kind, the privacy switch
//!   (sans-IO); [`quiet`]: quiet hours (sans-IO); [`config`]: [`PushConfig`] and the [`Clock`];
//!   [`stats`]: [`PushStats`]; [`trace`]: the per-job trace and recent job ids;
//! - [`provider`]: the [`provider::PushProvider`] trait; [`https`] (TLS and HTTP/2),
//!   [`jwt`] (ES256/RS256), [`signed_auth`] (what OPPO and vivo share); one file per
//!   vendor: [`apns`], [`fcm`], [`huawei`], [`xiaomi`], [`oppo`], [`vivo`], [`honor`],
//!   [`meizu`];
//! - [`rest`]: the app server's endpoints (credentials, test pushes, the trace); [`api`]:
//!   its token, quiet-hours, privacy and template endpoints (all in the OpenAPI document).

pub mod api;
pub mod apns;
pub mod config;
pub mod fcm;
pub mod honor;
pub mod https;
pub mod huawei;
pub mod jobs;
pub mod jwt;
pub mod meizu;
pub mod oppo;
pub mod provider;
pub mod quiet;
pub mod rest;
pub mod signed_auth;
pub mod stats;
pub mod templates;
pub mod tenants;
pub mod trace;
pub mod vivo;
pub mod worker;
pub mod xiaomi;

pub use config::{Clock, ConfiguredCredentials, PushConfig};
pub use jobs::{CTL_FILTER, CTL_TEST_TOPIC, PUSH_FILTER};
pub use stats::PushStats;
pub use trace::TraceEntry;
pub use worker::Worker;
