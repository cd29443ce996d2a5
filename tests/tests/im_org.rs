//! The organisation directory end to end: CSV import builds the department tree and
//! re-import updates in place, the first-login password change is enforced over MQTT,
//! clients sync the directory incrementally and hear of changes (coalesced), departments
//! refuse deletion while not empty.

use std::collections::HashMap;

use bytes::Bytes;
use switchboard_client::im::{ImClient, ImError};
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{Packet, ReasonCode, Version};
use switchboard_tests::im::{Device, ImBroker, config};
use switchboard_tests::{RawClient, connect_packet};

const CSV: &str = "\
account,name,department,title,position,phone,email
alice,Alice,Sales/East/Shanghai,Manager,A-1,13800000001,alice@example.com
bob,Bob,Sales/East,Engineer,,13800000002,bob@example.com
carol,Carol,R&D;Sales/East/Shanghai,Architect,,,carol@example.com
dave,Dave,,CEO,,,
";

/// The department id at `path` ("" is the root).
fn dept_ids(b: &ImBroker, t: u64) -> HashMap<String, u64> {
    b.im.list_depts(t)
        .expect("departments")
        .into_iter()
        .map(|d| {
            (
                d["path"].as_str().expect("path").to_owned(),
                d["dept_id"].as_u64().expect("id"),
            )
        })
        .collect()
}

fn members_of(b: &ImBroker, t: u64, dept: u64) -> Vec<String> {
    let (list, next) = b.im.dept_members(t, dept, None, 1000).expect("members");
    assert_eq!(next, "");
    let mut v: Vec<String> = list.into_iter().map(|u| u.account).collect();
    v.sort();
    v
}

/// A device logged in with the directory password (`{app_key}:{account}`).
async fn password_login(
    b: &ImBroker,
    t: u64,
    account: &str,
    password: &str,
    client_id: &str,
) -> Result<Device, ImError> {
    let app_key = b.im.tenant(t).expect("tenant").app_key.clone();
    let mut cfg = config(b.addr, account, client_id, password);
    cfg.username = Some(format!("{app_key}:{account}"));
    let (client, events) = ImClient::connect(cfg).await?;
    Ok(Device { client, events })
}

fn code(r: Result<impl Sized, ImError>) -> u32 {
    match r {
        Ok(_) => 0,
        Err(ImError::Status { code, .. }) => code,
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_builds_the_tree_from_paths_and_reimport_updates_in_place() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    let r = b.im.import_csv(t, CSV, None).await.expect("import");
    assert_eq!((r.rows, r.created, r.updated), (4, 4, 0));
    assert_eq!(
        r.departments_created, 4,
        "Sales, Sales/East, Sales/East/Shanghai, R&D"
    );
    let ids = dept_ids(&b, t);
    for p in ["", "Sales", "Sales/East", "Sales/East/Shanghai", "R&D"] {
        assert!(ids.contains_key(p), "{p} in {ids:?}");
    }
    assert_eq!(ids[""], 1, "the root is department 1");
    assert_eq!(
        members_of(&b, t, ids["Sales/East/Shanghai"]),
        ["alice", "carol"]
    );
    assert_eq!(members_of(&b, t, ids["Sales/East"]), ["bob"]);
    assert_eq!(members_of(&b, t, ids["R&D"]), ["carol"]);
    assert_eq!(members_of(&b, t, 1), ["dave"], "no department: the root");
    let alice = b.im.user(t, "alice").expect("read").expect("alice");
    assert_eq!(
        (
            alice.title.as_str(),
            alice.phone.as_str(),
            alice.email.as_str()
        ),
        ("Manager", "13800000001", "alice@example.com")
    );

    // The same file again changes nothing.
    let again = b.im.import_csv(t, CSV, None).await.expect("re-import");
    assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 4));
    assert_eq!(again.departments_created, 0);

    // Bob is promoted and moves to a new department; nobody is duplicated.
    let moved = CSV.replace(
        "bob,Bob,Sales/East,Engineer",
        "bob,Bob,Sales/West,Lead Engineer",
    );
    let r = b.im.import_csv(t, &moved, None).await.expect("re-import");
    assert_eq!((r.created, r.updated, r.unchanged), (0, 1, 3));
    assert_eq!(r.departments_created, 1);
    let ids = dept_ids(&b, t);
    assert_eq!(members_of(&b, t, ids["Sales/East"]), Vec::<String>::new());
    assert_eq!(members_of(&b, t, ids["Sales/West"]), ["bob"]);
    let bob = b.im.user(t, "bob").expect("read").expect("bob");
    assert_eq!(bob.title, "Lead Engineer");
    assert_eq!(bob.uid, 2, "updated in place, same uid");

    // Export gives the import's columns back, and importing it is a no-op.
    let (csv, next) = b.im.export_csv(t, None, None).expect("export");
    assert_eq!(next, "");
    assert!(
        csv.starts_with("account,name,department,title,position,phone,email\n"),
        "{csv}"
    );
    assert!(
        csv.contains("carol,Carol,Sales/East/Shanghai;R&D,Architect"),
        "{csv}"
    );
    let r =
        b.im.import_csv(t, &csv, None)
            .await
            .expect("import the export");
    assert_eq!((r.created, r.updated, r.unchanged), (0, 0, 4));

    // A bad row refuses the whole file.
    let bad = "account,department\nok-user,Sales\nnot valid!,Sales\n";
    let e = b.im.import_csv(t, bad, None).await.expect_err("bad row");
    assert!(e.to_string().contains("line 3"), "{e}");
    assert!(b.im.user(t, "ok-user").expect("read").is_none());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_with_the_default_password_must_change_it_before_anything_else() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.im.import_csv(t, CSV, Some("Welcome-2026"))
        .await
        .expect("import");
    let d = password_login(&b, t, "alice", "Welcome-2026", "alice-1")
        .await
        .expect("login succeeds");
    let convs = d.client.conversations().await;
    assert_eq!(code(convs), 403, "restricted until the password changes");
    let sync: Result<im::DirSyncResponse, _> = d
        .client
        .request("dir/sync", &im::DirSyncRequest::default())
        .await;
    assert_eq!(code(sync), 403);
    let me: im::MeResponse = d
        .client
        .request("dir/me", &im::MeRequest {})
        .await
        .expect("dir/me is allowed");
    assert!(me.password_change_required);
    assert_eq!(me.member.expect("member").title, "Manager");

    // A token login of the same user (part 1) is not restricted.
    let token = b.im.issue_token(t, "alice", "", 600).expect("token");
    let other = Device::connect(b.addr, "alice", "alice-token", &token).await;
    other
        .client
        .conversations()
        .await
        .expect("token logins work");

    let change = |old: &str, new: &str| im::ChangePasswordRequest {
        old_password: old.into(),
        new_password: new.into(),
    };
    let wrong: Result<im::Ack, _> = d
        .client
        .request("dir/change_password", &change("nope", "Alice-secret-1"))
        .await;
    assert_eq!(code(wrong), 403);
    let short: Result<im::Ack, _> = d
        .client
        .request("dir/change_password", &change("Welcome-2026", "short"))
        .await;
    assert_eq!(code(short), 400);
    d.client
        .change_password("Welcome-2026", "Alice-secret-1")
        .await
        .expect("changed");
    d.client
        .conversations()
        .await
        .expect("the same connection is unrestricted now");
    d.client.shutdown().await;

    // The default password no longer works; the new one logs in without restriction.
    let app_key = b.im.tenant(t).expect("tenant").app_key.clone();
    let mut c = connect_packet(Version::V5, "alice-2");
    c.username = Some(format!("{app_key}:alice"));
    c.password = Some(Bytes::from("Welcome-2026"));
    let (_, ack) = RawClient::connect_or_closed(b.addr, c).await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword));
    let again = password_login(&b, t, "alice", "Alice-secret-1", "alice-3")
        .await
        .expect("new password");
    let me = again.client.me().await.expect("me");
    assert!(!me.password_change_required);
    again.client.conversations().await.expect("not restricted");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_sync_is_incremental_and_changes_are_announced_coalesced() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.im.import_csv(t, CSV, None).await.expect("import");
    let mut d = b.device(t, "dave", "dave-1").await;
    let full: im::DirSyncResponse = d
        .client
        .request("dir/sync", &im::DirSyncRequest::default())
        .await
        .expect("sync");
    assert!(!full.more);
    assert_eq!(full.members.len(), 4);
    assert_eq!(full.departments.len(), 5, "root + 4");
    let shanghai = full
        .departments
        .iter()
        .find(|x| x.path == "Sales/East/Shanghai")
        .expect("path");
    assert_eq!(shanghai.name, "Shanghai");
    let v1 = full.version;
    assert!(v1 > 0);

    // Paged: one entity per page still gets everything, in as many pages.
    let mut since = 0;
    let mut seen = 0;
    for _ in 0..20 {
        let page: im::DirSyncResponse = d
            .client
            .request(
                "dir/sync",
                &im::DirSyncRequest {
                    since_version: since,
                    limit: 1,
                },
            )
            .await
            .expect("page");
        seen += page.members.len() + page.departments.len();
        assert!(page.members.len() + page.departments.len() <= 1);
        since = page.version;
        if !page.more {
            break;
        }
    }
    assert_eq!((seen, since), (9, v1));

    // 50 new members in one import: one burst, few events, not one per row.
    let mut rows = String::from("account,department,title\n");
    for i in 0..50 {
        rows.push_str(&format!("new{i},Support,Agent\n"));
    }
    b.im.import_csv(t, &rows, None).await.expect("import");
    b.im.set_member(
        t,
        serde_json::from_value(serde_json::json!({ "account": "bob", "title": "CTO" }))
            .expect("input"),
        true,
    )
    .await
    .expect("update bob");
    let mut events = 0;
    let head = loop {
        let v = d
            .next(|k| match k {
                Kind::Directory(c) => Some(c.version),
                _ => None,
            })
            .await;
        events += 1;
        if v >= v1 + 52 {
            break v;
        }
    };
    // 52 changes; events leave at most once per 100 ms: a handful (generous for slow
    // machines), never one per change.
    assert!(
        events <= 10,
        "{events} DirectoryChanged events for one burst"
    );
    let delta: im::DirSyncResponse = d
        .client
        .request(
            "dir/sync",
            &im::DirSyncRequest {
                since_version: v1,
                limit: 0,
            },
        )
        .await
        .expect("incremental sync");
    assert_eq!(delta.version, head);
    assert_eq!(
        delta.members.len(),
        51,
        "the 50 new members and bob, nothing else"
    );
    assert_eq!(delta.departments.len(), 1, "Support");
    let bob = delta
        .members
        .iter()
        .find(|m| m.account == "bob")
        .expect("bob");
    assert_eq!(bob.title, "CTO");
    let nothing: im::DirSyncResponse = d
        .client
        .request(
            "dir/sync",
            &im::DirSyncRequest {
                since_version: head,
                limit: 0,
            },
        )
        .await
        .expect("up to date");
    assert!(nothing.members.is_empty() && nothing.departments.is_empty());

    // Removing a member shows up as removed.
    b.im.remove_member(t, "carol", None).await.expect("remove");
    let after: im::DirSyncResponse = d
        .client
        .request(
            "dir/sync",
            &im::DirSyncRequest {
                since_version: head,
                limit: 0,
            },
        )
        .await
        .expect("sync");
    assert_eq!(after.members.len(), 1);
    assert!(after.members[0].removed && after.members[0].account == "carol");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_are_browsed_paged_and_deleted_only_when_empty() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    let sales = b.im.create_dept(t, "Sales", 1).await.expect("create");
    let east = b.im.create_dept(t, "East", sales).await.expect("create");
    let dup = b.im.create_dept(t, "East", sales).await;
    assert_eq!(
        dup.expect_err("same name").to_string().split(':').next(),
        Some("conflict")
    );
    assert!(
        b.im.create_dept(t, "a/b", sales).await.is_err(),
        "no '/' in names"
    );
    assert!(
        b.im.create_dept(t, "Orphan", 999).await.is_err(),
        "parent must exist"
    );
    let mut csv = String::from("account,department\n");
    for i in 0..25 {
        csv.push_str(&format!("m{i:02},Sales/East\n"));
    }
    b.im.import_csv(t, &csv, None).await.expect("import");
    let d = b.device(t, "m00", "m00").await;
    let mut after = String::new();
    let mut all = Vec::new();
    loop {
        let page: im::DepartmentResponse = d
            .client
            .request(
                "dir/department",
                &im::DepartmentRequest {
                    dept_id: east,
                    after: after.clone(),
                    limit: 10,
                },
            )
            .await
            .expect("page");
        assert_eq!(page.department.expect("dept").path, "Sales/East");
        all.extend(page.members.into_iter().map(|m| m.account));
        if page.next.is_empty() {
            break;
        }
        after = page.next;
    }
    assert_eq!(all.len(), 25);
    let root: im::DepartmentResponse = d
        .client
        .request("dir/department", &im::DepartmentRequest::default())
        .await
        .expect("root");
    assert_eq!(root.children.len(), 1);
    assert_eq!(root.children[0].id, sales);

    assert!(
        b.im.delete_dept(t, sales).await.is_err(),
        "has a sub-department"
    );
    assert!(b.im.delete_dept(t, east).await.is_err(), "has members");
    assert!(
        b.im.update_dept(t, sales, None, Some(east)).await.is_err(),
        "no cycles"
    );
    let renamed =
        b.im.update_dept(t, east, Some("Eastern"), None)
            .await
            .expect("rename");
    assert_eq!(renamed.name, "Eastern");
    for i in 0..25 {
        b.im.remove_member(t, &format!("m{i:02}"), Some(east))
            .await
            .expect("remove");
    }
    b.im.delete_dept(t, east).await.expect("empty now");
    b.im.delete_dept(t, sales).await.expect("empty now");
    assert!(b.im.delete_dept(t, 1).await.is_err(), "never the root");
    b.stop().await;
}
