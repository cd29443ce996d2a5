//! `switchboard ctl dept ...`, `ctl user create --dept` and `ctl broadcast` against a
//! broker process: the output shapes scripts rely on.

use switchboard_tests::TempDir;
use switchboard_tests::process::BrokerProcess;
use tokio::process::Command;

async fn ctl(admin: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("ctl")
        .args(args)
        .args(["--admin", admin, "--data-dir"])
        .arg(dir)
        .output()
        .await
        .expect("ctl runs");
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dept_create_prints_its_integer_id_and_users_land_in_it() {
    let dir = TempDir::new("org-cli");
    let b = BrokerProcess::start(
        env!("CARGO_BIN_EXE_switchboard"),
        dir.path(),
        &[],
        &[("SWITCHBOARD__BROKER__ADMIN__LISTEN", "\"127.0.0.1:0\"")],
    )
    .await;
    let admin = b.admin.clone().expect("admin API");
    let d = dir.path();
    let t = json(&ctl(&admin, d, &["tenant", "create", "acme", "--json"]).await);
    let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();

    let out = ctl(
        &admin,
        d,
        &["dept", "create", "--tenant", &tenant, "Sales", "--json"],
    )
    .await;
    let v = json(&out);
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{out}");
    let sales = v["dept_id"].as_u64().expect("an integer dept_id");
    assert!(sales > 1, "the root is 1");
    let east = json(
        &ctl(
            &admin,
            d,
            &[
                "dept",
                "create",
                "--tenant",
                &tenant,
                "East",
                "--parent",
                &sales.to_string(),
                "--json",
            ],
        )
        .await,
    )["dept_id"]
        .as_u64()
        .expect("id");
    let u = json(
        &ctl(
            &admin,
            d,
            &[
                "user",
                "create",
                "--tenant",
                &tenant,
                "alice",
                "--dept",
                &east.to_string(),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(u["user_id"], "alice");

    let csv = d.join("people.csv");
    std::fs::write(&csv, "账号,姓名,部门,职务\nbob,Bob,Sales/West,Engineer\n").expect("write");
    let r = json(
        &ctl(
            &admin,
            d,
            &[
                "dept",
                "import",
                "--tenant",
                &tenant,
                csv.to_str().expect("path"),
                "--default-password",
                "Welcome-1",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(
        (r["created"].as_u64(), r["departments_created"].as_u64()),
        (Some(1), Some(1))
    );

    let list = json(&ctl(&admin, d, &["dept", "list", "--tenant", &tenant, "--json"]).await);
    let paths: Vec<&str> = list["departments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, ["", "Sales", "Sales/East", "Sales/West"]);

    let export = ctl(&admin, d, &["dept", "export", "--tenant", &tenant]).await;
    assert!(export.contains("alice,,Sales/East,"), "{export}");
    assert!(export.contains("bob,Bob,Sales/West,Engineer"), "{export}");

    let sent = json(
        &ctl(
            &admin,
            d,
            &[
                "broadcast",
                "--tenant",
                &tenant,
                "--dept",
                &sales.to_string(),
                "hello sales",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(sent["conversation"], format!("b:d{sales}"));
    assert_eq!(sent["seq"], 1);
    // Seed 000: the enterprise administrator, made with the tenant, in the root department.
    let t2 = json(
        &ctl(
            &admin,
            d,
            &[
                "tenant",
                "create",
                "bigco",
                "--admin-account",
                "boss",
                "--admin-password",
                "Initial-1",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(t2.as_object().map(|o| o.len()), Some(4), "{t2}");
    let tenant2 = t2["tenant_id"].as_u64().expect("tenant id").to_string();
    let export = ctl(&admin, d, &["dept", "export", "--tenant", &tenant2]).await;
    assert!(export.contains("boss,,,Administrator,"), "{export}");
    b.kill9().await;
}
