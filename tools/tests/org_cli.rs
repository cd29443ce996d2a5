//! `switchboard ctl dept ...`, `ctl user create --dept` and `ctl broadcast` against a
//! broker process: the output shapes scripts rely on.

use switchboard_tests::TempDir;
use switchboard_tests::process::BrokerProcess;

fn json(s: &str) -> serde_json::Value {
    BrokerProcess::json(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dept_create_prints_its_integer_id_and_users_land_in_it() {
    let dir = TempDir::new("org-cli");
    let b =
        BrokerProcess::start_with_admin(env!("CARGO_BIN_EXE_switchboard"), dir.path(), &[]).await;
    let t = json(&b.ctl(&["tenant", "create", "acme", "--json"]).await);
    let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();

    let out = b
        .ctl(&["dept", "create", "--tenant", &tenant, "Sales", "--json"])
        .await;
    let v = json(&out);
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{out}");
    let sales = v["dept_id"].as_u64().expect("an integer dept_id");
    assert!(sales > 1, "the root is 1");
    let east = json(
        &b.ctl(&[
            "dept",
            "create",
            "--tenant",
            &tenant,
            "East",
            "--parent",
            &sales.to_string(),
            "--json",
        ])
        .await,
    )["dept_id"]
        .as_u64()
        .expect("id");
    let u = json(
        &b.ctl(&[
            "user",
            "create",
            "--tenant",
            &tenant,
            "alice",
            "--dept",
            &east.to_string(),
            "--json",
        ])
        .await,
    );
    assert_eq!(u["user_id"], "alice");

    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "账号,姓名,部门,职务\nbob,Bob,Sales/West,Engineer\n").expect("write");
    let r = json(
        &b.ctl(&[
            "dept",
            "import",
            "--tenant",
            &tenant,
            csv.to_str().expect("path"),
            "--default-password",
            "Welcome-1",
            "--json",
        ])
        .await,
    );
    assert_eq!(
        (r["created"].as_u64(), r["departments_created"].as_u64()),
        (Some(1), Some(1))
    );

    let list = json(
        &b.ctl(&["dept", "list", "--tenant", &tenant, "--json"])
            .await,
    );
    let paths: Vec<&str> = list["departments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, ["", "Sales", "Sales/East", "Sales/West"]);

    let export = b.ctl(&["dept", "export", "--tenant", &tenant]).await;
    assert!(export.contains("alice,,Sales/East,"), "{export}");
    assert!(export.contains("bob,Bob,Sales/West,Engineer"), "{export}");

    let sent = json(
        &b.ctl(&[
            "broadcast",
            "--tenant",
            &tenant,
            "--dept",
            &sales.to_string(),
            "hello sales",
            "--json",
        ])
        .await,
    );
    assert_eq!(sent["conversation"], format!("b:d{sales}"));
    assert_eq!(sent["seq"], 1);
    // Seed 000: the enterprise administrator, made with the tenant, in the root department.
    let t2 = json(
        &b.ctl(&[
            "tenant",
            "create",
            "bigco",
            "--admin-account",
            "boss",
            "--admin-password",
            "Initial-1",
            "--json",
        ])
        .await,
    );
    assert_eq!(t2.as_object().map(|o| o.len()), Some(4), "{t2}");
    let tenant2 = t2["tenant_id"].as_u64().expect("tenant id").to_string();
    let export = b.ctl(&["dept", "export", "--tenant", &tenant2]).await;
    assert!(export.contains("boss,,,Administrator,"), "{export}");
    b.kill9().await;
}
