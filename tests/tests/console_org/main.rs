//! The console's Organisation and Workbench-apps pages (issue 16 items 4 and 5) against a
//! real broker and gateway over real sockets: over plain HTTP (tenant scope, CSRF, script
//! escaped in every text field, refusals shown next to their fields, CSV template, import
//! report and export) and in a real headless Chromium driven by Playwright
//! (`tests/js/console/org.mjs`): a two-level department tree, a CSV import with one bad
//! row reported, a workbench app with an icon, then that app in an imported member's
//! workbench fetched over MQTT after their first sign-in with the default password.
//!
//! Files: [`common`] (a gateway, signed-in sessions, form and multipart posts, checks),
//! [`org`], [`apps`], [`browser`].

mod apps;
mod apps_edit;
mod bad_addresses;
mod browser;
mod common;
mod org;
