//! The operator API's tenant policy: `GET`, `PATCH` (the given fields change, the others
//! keep their values) and `PUT` (the whole policy), with a 400 naming an unknown field.

use switchboard_tests::TempDir;
use switchboard_tests::http::request;
use switchboard_tests::process::BrokerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_only_the_given_fields_and_put_replaces_the_policy() {
    let dir = TempDir::new("policy-api");
    let b =
        BrokerProcess::start_with_admin(env!("CARGO_BIN_EXE_switchboard"), dir.path(), &[]).await;
    let (admin, auth) = b.admin_auth();
    let t = BrokerProcess::json(&b.ctl(&["tenant", "create", "acme", "--json"]).await);
    let path = format!(
        "/api/v1/im/tenants/{}/policy",
        t["tenant_id"].as_u64().expect("tenant id")
    );
    let call = |method: &'static str, body: &'static str| {
        let path = path.clone();
        let auth = auth.clone();
        async move { request(admin, method, &path, &auth, body.as_bytes()).await }
    };

    let before = call("GET", "").await;
    assert_eq!(before.status, 200, "{}", before.body);
    let before = before.json();
    assert_eq!(before["recall_window_secs"], 120);

    // Two changes in two PATCHes: the first survives the second.
    let a = call("PATCH", r#"{"recall_window_secs": 600}"#).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let b2 = call("PATCH", r#"{"friends_required": true}"#).await;
    assert_eq!(b2.status, 200, "{}", b2.body);
    let now = call("GET", "").await.json();
    assert_eq!(now["recall_window_secs"], 600);
    assert_eq!(now["friends_required"], true);
    assert_eq!(now["retention_days"], before["retention_days"]);

    // A typo or a wrong type is refused by name and changes nothing.
    let typo = call("PATCH", r#"{"recall_window": 5}"#).await;
    assert_eq!(typo.status, 400, "{}", typo.body);
    assert!(typo.body.contains("recall_window"), "{}", typo.body);
    let wrong = call("PATCH", r#"{"friends_required": "yes"}"#).await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert_eq!(call("GET", "").await.json(), now);

    // PUT is the whole policy: what it leaves out goes back to the default.
    let put = call("PUT", r#"{"friends_required": true}"#).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let after = call("GET", "").await.json();
    assert_eq!(after["recall_window_secs"], 120);
    assert_eq!(after["friends_required"], true);

    let missing = request(admin, "GET", "/api/v1/im/tenants/999999/policy", &auth, b"").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    b.kill9().await;
}
