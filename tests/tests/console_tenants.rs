//! A tenant's settings in the console (issue 16 item 3), over real HTTP against a broker
//! with the IM service on a redb file: a developer creates a tenant, turns the compat APIs
//! on, sets webhooks and push credentials; each secret is shown once and masked on the
//! tenant's page afterwards, while the service keeps it whole.

use serde_json::json;
use switchboard_tests::console::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_settings_are_saved_and_their_secrets_shown_once_then_masked() {
    let c = Console::start().await;
    let pw = developer(&c, "dev", None).await;
    let (dev, csrf) = c.sign_in("dev", &pw).await;
    let a = c
        .post(
            "/console/tenants/new",
            &dev,
            &[("_csrf", &csrf), ("name", "Settings Co")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let tid = text_of_id(&a.body, "new-tenant-id");
    let page = format!("/console/tenants/{tid}");

    // Compat APIs (the seeds' dialects) off, then on for this tenant.
    let a = c
        .post(&format!("{page}/compat"), &dev, &[("_csrf", &csrf)])
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let show = c.get(&page, &dev).await;
    assert!(show.body.contains("id=\"compat-on\">"), "{}", show.body);
    let a = c
        .post(
            &format!("{page}/compat"),
            &dev,
            &[("_csrf", &csrf), ("on", "on")],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let show = c.get(&page, &dev).await;
    assert!(
        show.body.contains("id=\"compat-on\" checked"),
        "{}",
        show.body
    );

    // Webhooks: the signing secret is shown once, then masked.
    let a = c
        .post(
            &format!("{page}/webhooks"),
            &dev,
            &[
                ("_csrf", &csrf),
                ("url", "https://hooks.example.com/im"),
                ("events", "after_send"),
                ("events", "presence"),
                ("timeout_ms", "1500"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let secret = text_of_id(&a.body, "hook-secret");
    assert_eq!(secret.len(), 32, "{secret}");
    let tid_n: u64 = tid.parse().expect("id");
    let stored =
        c.b.im
            .admin_request(
                "hooks/get",
                json!({ "tenant": tid_n }).to_string().as_bytes(),
            )
            .await
            .expect("hooks");
    assert_eq!(stored["url"], "https://hooks.example.com/im");
    assert_eq!(stored["secret"], secret.as_str());
    assert_eq!(stored["timeout_ms"], 1500);
    let show = c.get(&page, &dev).await;
    let current = &show.body[show.body.find("id=\"hook-current\"").expect("hook shown")..];
    assert!(current.contains("https://hooks.example.com/im"));
    assert!(
        !show.body.contains(&secret),
        "the secret is masked afterwards"
    );
    assert!(
        current.contains(&secret[..4]),
        "its first characters identify it"
    );

    // Push credentials: public fields shown, secrets never.
    let a = c
        .post(
            &format!("{page}/push"),
            &dev,
            &[
                ("_csrf", &csrf),
                ("vendor", "xiaomi"),
                (
                    "config",
                    r#"{"app_secret": "xiaomi-very-secret-1", "package_name": "com.example.chat"}"#,
                ),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let creds =
        c.b.im
            .admin_request(
                "push/credentials/get",
                json!({ "tenant": tid_n }).to_string().as_bytes(),
            )
            .await
            .expect("credentials");
    assert_eq!(creds["xiaomi"]["app_secret"], "xiaomi-very-secret-1");
    let show = c.get(&page, &dev).await;
    let list = &show.body[show.body.find("id=\"push-list\"").expect("push list")..];
    assert!(
        list.contains("xiaomi") && list.contains("com.example.chat"),
        "{list}"
    );
    assert!(
        !show.body.contains("xiaomi-very-secret-1"),
        "secrets never shown"
    );
    // Removing a provider.
    let a = c
        .post(
            &format!("{page}/push"),
            &dev,
            &[("_csrf", &csrf), ("vendor", "xiaomi"), ("remove", "on")],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let show = c.get(&page, &dev).await;
    let list = &show.body[show.body.find("id=\"push-list\"").expect("push list")..];
    assert!(!list[..list.find("</table>").expect("end")].contains("com.example.chat"));
    c.stop().await;
}
