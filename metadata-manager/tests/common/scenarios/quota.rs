//! Limits on what one member or one VO may make the manager hold: the
//! size of one exNode, entries and exNode bytes per owner and per VO tree,
//! and the memory and disk taken by many large puts at once.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{exnode_of, lors_exnode, As, Db, Grid, Reply, Settings, BLOCK};

/// Asserts a quota refusal: 403, the message, and the `quota` object
/// naming the limit, its value, the use and the request. Returns the
/// object.
#[track_caller]
fn quota_refused(r: Reply, limit: &str, whose: &str) -> Value {
    let msg = r
        .clone()
        .refused(403, &format!("quota exceeded: {limit} of {whose} is "));
    let q = r.body["quota"].clone();
    assert_eq!(q["limit"], limit, "{}", r.body);
    let (max, used, request) = (
        q["max"].as_u64().unwrap(),
        q["used"].as_u64().unwrap(),
        q["request"].as_u64().unwrap(),
    );
    assert!(used <= max && used + request > max, "{q}");
    assert!(
        msg.contains(&format!(
            "; {used} are used and this request needs {request} more"
        )),
        "{msg}"
    );
    q
}

/// The caller's usage row and the VO's use.
async fn used(c: &As) -> (Value, Value) {
    let r = c.post("/v1/usage", json!({})).await.ok();
    let me = c.user().principal();
    let row = r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["owner"] == me.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    (row, r["vo_used"].clone())
}

/// A member fills their quota: the next mkdir or put is refused with 403
/// naming `user_entries` or `user_exnode_bytes` (old versions count), and
/// nothing of it is stored; keys/add is held to it too; other members
/// carry on; deleting frees room.
pub async fn member_cannot_grow_the_database_past_their_quota(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            extra: "user_entries = 4\nuser_exnode_bytes = \"24KiB\"\nvo_entries = \"unlimited\"\nvo_exnode_bytes = \"unlimited\"\n",
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    g.introduce(&[&alice_u, &bob_u]).await;
    let (a, bob) = (g.client(&alice_u), g.client(&bob_u));

    // Entries: directories and files.
    a.mkdir("/vo1/ad").await.ok();
    a.create("/vo1/f1", 10).await;
    a.create("/vo1/f2", 10).await;
    a.create("/vo1/ad/f3", 10).await;
    let q = quota_refused(
        a.mkdir("/vo1/x").await,
        "user_entries",
        "user:alice@vo1 in VO vo1",
    );
    assert_eq!(
        q,
        json!({ "limit": "user_entries", "vo": "vo1", "owner": "user:alice@vo1",
                "max": 4, "used": 4, "request": 1 })
    );
    let small = exnode_of(Uuid::new_v4(), 10, 1);
    quota_refused(
        a.put_ex("/vo1/y", 0, &small).await,
        "user_entries",
        "user:alice@vo1 in VO vo1",
    );
    a.mkdir_p("/vo1/p/q")
        .await
        .refused(403, "quota exceeded: user_entries");
    for p in ["/vo1/x", "/vo1/y", "/vo1/p"] {
        a.stat(p).await.refused(404, "no such file");
    }
    // Others carry on.
    bob.create("/vo1/b1", 10).await;
    bob.mkdir("/vo1/bd").await.ok();

    // Bytes: new versions of one file until refused; the current version
    // alone is far below the limit, the versions kept are not.
    let f1 = a.get_file("/vo1/f1").await.ok();
    let id: Uuid = f1["id"].as_str().unwrap().parse().unwrap();
    let big = exnode_of(id, 8 * BLOCK, 1);
    let big_len = exnode::to_xml(&big).len() as u64;
    assert!(big_len < 24 << 10 && big_len > 2 << 10, "{big_len}");
    let mut version = 1;
    let refused = loop {
        assert!(version < 30, "no quota refusal after {version} versions");
        let r = a.put_ex("/vo1/f1", version, &big).await;
        if r.status != 200 {
            break r;
        }
        version += 1;
    };
    let q = quota_refused(refused, "user_exnode_bytes", "user:alice@vo1 in VO vo1");
    assert!(version >= 3, "refused at version {version}");
    assert_eq!(q["max"], 24 << 10);
    let (row, _) = used(&a).await;
    assert_eq!(row["exnode_bytes"], q["used"], "{row}");
    assert_eq!(row["versions"], version + 2, "{row}");
    assert_eq!(row["entries"], 4);
    assert_eq!(
        a.stat("/vo1/f1").await.ok()["version"],
        version,
        "the refused put left the file as it was"
    );
    // keys/add stores bytes too: held to the quota.
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 10, "no quota refusal after {n} wrapped keys");
        let r = a
            .post(
                "/v1/keys/add",
                json!({ "path": "/vo1/f1", "recipient": format!("escrow:v{n}"), "wrapped": "K".repeat(4000) }),
            )
            .await;
        if r.status != 200 {
            break r;
        }
    };
    quota_refused(refused, "user_exnode_bytes", "user:alice@vo1 in VO vo1");
    // Others carry on.
    bob.put_ex("/vo1/b2", 0, &exnode_of(Uuid::new_v4(), 8 * BLOCK, 1))
        .await
        .ok();
    // Deleting an old version frees its bytes: the put goes through.
    a.post("/v1/delete", json!({ "path": "/vo1/f1", "version": 1 }))
        .await
        .ok();
    a.post("/v1/delete", json!({ "path": "/vo1/f1", "version": 2 }))
        .await
        .ok();
    a.put_ex("/vo1/f1", version, &big).await.ok();
    // Deleting a file frees its entry.
    a.delete("/vo1/f2").await.ok();
    a.mkdir("/vo1/x").await.ok();
    let (row, _) = used(&a).await;
    assert_eq!(row["entries"], 4);
}

/// The members of a VO together fill its quota: the next change is
/// refused with 403 naming `vo_entries` or `vo_exnode_bytes`; another VO
/// carries on.
pub async fn vo_cannot_grow_the_database_past_its_quota(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            extra: "vo_entries = 5\nvo_exnode_bytes = \"12KiB\"\n",
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let carol_u = g.pki.user("carol", "vo2", "carol", &[]);
    g.introduce(&[&alice_u, &bob_u, &carol_u]).await;
    let (a, bob, carol) = (g.client(&alice_u), g.client(&bob_u), g.client(&carol_u));
    a.create("/vo1/a1", 10).await;
    a.create("/vo1/a2", 10).await;
    // One large exNode goes past the VO's bytes.
    let big = exnode_of(Uuid::new_v4(), 30 * BLOCK, 1);
    assert!(exnode::to_xml(&big).len() > 12 << 10);
    let q = quota_refused(
        bob.put_ex("/vo1/big", 0, &big).await,
        "vo_exnode_bytes",
        "VO vo1",
    );
    assert_eq!(q["owner"], "user:bob@vo1");
    bob.stat("/vo1/big").await.refused(404, "no such file");
    // Entries.
    a.mkdir("/vo1/ad").await.ok();
    bob.create("/vo1/b1", 10).await;
    bob.mkdir("/vo1/bd").await.ok();
    let q = quota_refused(bob.mkdir("/vo1/more").await, "vo_entries", "VO vo1");
    assert_eq!(
        (q["max"].clone(), q["used"].clone(), q["request"].clone()),
        (json!(5), json!(5), json!(1))
    );
    quota_refused(
        a.put_ex("/vo1/a3", 0, &exnode_of(Uuid::new_v4(), 10, 1))
            .await,
        "vo_entries",
        "VO vo1",
    );
    let r = a.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r["limits"]["vo_entries"], 5);
    assert_eq!(r["limits"]["vo_exnode_bytes"], 12 << 10);
    assert_eq!(r["vo_used"]["entries"], 5);
    // Another VO carries on.
    carol.mkdir("/vo2/c").await.ok();
    carol.create("/vo2/c/f", 10).await;
    // Room again after a delete.
    a.delete("/vo1/a1").await.ok();
    bob.mkdir("/vo1/more").await.ok();
}

/// An exNode over the default `max_exnode` (8 MiB) is refused with 413;
/// the largest file of the documented envelope (docs/metadata-manager.md:
/// 15 GiB in 8 MiB blocks, three copies, as `lors upload` writes it) is
/// accepted. The old default (16 MiB) took both.
pub async fn exnode_over_the_default_max_exnode_is_refused(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            max_exnode: "",
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let a = g.client(&alice_u);
    let ok = lors_exnode(Uuid::new_v4(), 15 << 30, 8 << 20, 3);
    assert_eq!(ok.mappings.len(), 5760);
    let doc = exnode::to_xml(&ok);
    assert!(doc.len() <= 8 << 20, "{}", doc.len());
    let key = "user:alice@vo1";
    let r = a.put_doc("/vo1/ok", 0, &doc, &[(key, "W")]).await.ok();
    assert_eq!(r["size"], 15u64 << 30);
    let over = lors_exnode(Uuid::new_v4(), 16 << 30, 8 << 20, 3);
    let doc = exnode::to_xml(&over);
    assert!(doc.len() > 8 << 20, "{}", doc.len());
    a.put_doc("/vo1/over", 0, &doc, &[(key, "W")])
        .await
        .refused(
            413,
            &format!(
                "exNode of {} bytes; this metadata manager accepts at most {}",
                doc.len(),
                8 << 20
            ),
        );
    a.stat("/vo1/over").await.refused(404, "no such file");
}

/// 24 puts of exNodes of the largest size at once, by 12 members: the
/// manager's memory stays bounded by `max_buffered_bodies` (where it used
/// to grow with the number of puts: 24 puts of 16 MiB took 920 MB) and the
/// database by `vo_exnode_bytes` (where 35 puts grew it by 579 MB); every
/// answer is a success or a quota refusal.
pub async fn concurrent_large_puts_keep_memory_and_disk_bounded(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            max_exnode: "",
            // Waiting for room is part of the test, not a failure; nor is
            // a handshake slowed by 24 connections on a busy 2-core machine.
            extra: "vo_exnode_bytes = \"40MiB\"\nbuffered_body_wait = \"200s\"\nhandshake_timeout = \"60s\"\n",
            ..Settings::default()
        },
    );
    let dir = g.path().join("mdm");
    let disk = || {
        ["metadata.db", "metadata.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    let users: Vec<_> = (0..12)
        .map(|i| g.pki.user(&format!("u{i}"), "vo1", &format!("u{i}"), &[]))
        .collect();
    g.introduce(&users.iter().collect::<Vec<_>>()).await;
    let (rss0, _) = g.server.memory();
    let disk0 = disk();
    let mut puts = Vec::new();
    let mut doc_len = 0;
    for (i, u) in users.iter().enumerate() {
        let mut c = g.client(u);
        c.client.total_timeout = Duration::from_secs(220);
        c.client.connect_timeout = Duration::from_secs(60);
        for j in 0..2 {
            let ex = lors_exnode(Uuid::new_v4(), 15 << 30, 8 << 20, 3);
            let doc = exnode::to_xml(&ex);
            doc_len = doc_len.max(doc.len() as u64);
            let c = c.clone();
            let key = u.principal();
            puts.push(tokio::spawn(async move {
                c.put_doc(&format!("/vo1/f{i}-{j}"), 0, &doc, &[(&key, "W")])
                    .await
            }));
        }
    }
    assert_eq!(puts.len(), 24);
    let mut stored = 0u64;
    for p in puts {
        let r = p.await.unwrap();
        if r.status == 200 {
            stored += 1;
        } else {
            quota_refused(r, "vo_exnode_bytes", "VO vo1");
        }
    }
    let (rss, hwm) = g.server.memory();
    let grew = disk().saturating_sub(disk0);
    eprintln!(
        "24 puts of {doc_len} bytes: {stored} stored; RSS {} MiB before, {} MiB after, peak {} MiB; database grew {} MiB",
        rss0 >> 20,
        rss >> 20,
        hwm >> 20,
        grew >> 20
    );
    assert_eq!(stored, (40 << 20) / doc_len, "as many as fit in 40 MiB");
    // max_buffered_bodies (32 MiB) of bodies in process at once, each
    // with its exNode parsed and re-encoded: a few times that at most.
    assert!(
        hwm < 256 << 20,
        "peak RSS {} MiB (24 puts of {doc_len} bytes)",
        hwm >> 20
    );
    assert!(
        grew < (40 << 20) + (24 << 20),
        "the database grew {} MiB for {stored} exNodes of {doc_len} bytes",
        grew >> 20
    );
    // Still serving.
    g.client(&users[0]).get("/v1/whoami").await.ok();
}

/// A request whose body is sent to the manager and held open: the TLS
/// connection of `user` with the headers of a put of `length` bytes and
/// the first bytes of its body.
async fn held_put(
    g: &Grid,
    user: &crate::common::User,
    length: usize,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let trust = g.pki.client_trust_store();
    let tls = ibp_auth::tls::client_config(&trust, Some(&user.credential)).unwrap();
    let tcp = tokio::net::TcpStream::connect(g.server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/put HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"path\": \"/vo1/held\", \"base_version\": 0, \"exnode\": \""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// Waits (bounded) until the server's log has `n` lines containing
/// `needle`.
async fn log_lines(g: &Grid, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = g.server.log_text();
        if text.lines().filter(|l| l.contains(needle)).count() >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {n} log lines with {needle:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One member sends puts and holds their bodies open: they take at most
/// half of `max_buffered_bodies` (their next large request gets 503 at
/// once); another member's large put waits `buffered_body_wait`, then gets
/// 503; small requests are served meanwhile; a client without a
/// credential is refused before its body is read; once the held request
/// ends, large puts go through again.
pub async fn one_member_cannot_hold_the_put_budget(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            extra: "max_buffered_bodies = \"1MiB\"\nbuffered_body_wait = \"1s\"\n",
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let carol_u = g.pki.user("carol", "vo1", "carol", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    g.introduce(&[&alice_u, &bob_u, &carol_u, &boss_u]).await;
    let (a, bob, carol) = (g.client(&alice_u), g.client(&bob_u), g.client(&carol_u));
    g.client(&boss_u)
        .post("/v1/vos/vo1/members/remove", json!({ "vo_id": "carol" }))
        .await
        .ok();
    // Over the 424 KiB Alice leaves, within max_exnode (1 MiB).
    let ex = exnode_of(Uuid::new_v4(), 800 * BLOCK, 1);
    let doc = exnode::to_xml(&ex);
    assert!(
        doc.len() > 450 << 10 && doc.len() < 1 << 20,
        "{}",
        doc.len()
    );
    let admitted = "large request admitted under max_buffered_bodies";

    // Alice holds 600 KiB of the 1024.
    let held = held_put(&g, &alice_u, 600 << 10).await;
    log_lines(&g, admitted, 1).await;
    // Her next large request: refused at once.
    let t = std::time::Instant::now();
    a.put_ex("/vo1/a2", 0, &ex).await.refused(
        503,
        "busy: your requests already hold 600 KiB of the 1024 KiB of request bodies",
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Bob's does not fit in the rest: it waits 1 s, then 503.
    let t = std::time::Instant::now();
    bob.put_ex("/vo1/b1", 0, &ex)
        .await
        .refused(503, "found no room within 1s; retry shortly");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    // Small requests are served meanwhile, by both.
    bob.create("/vo1/small", 10).await;
    a.get("/v1/whoami").await.ok();
    // No credential: refused before anything is read or waited for.
    let body =
        serde_json::to_vec(&json!({ "path": "/vo1/x", "base_version": 0, "exnode": doc })).unwrap();
    let t = std::time::Instant::now();
    g.anonymous()
        .post_raw("/v1/put", &body)
        .await
        .refused(401, "a proxy credential with VO attributes is required");
    // Nor does a removed member.
    carol
        .post_raw("/v1/put", &body)
        .await
        .refused(403, "VO vo1 removed member carol");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The held request ends: the budget is free again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = bob.put_ex("/vo1/b1", 0, &ex).await;
        if r.status == 200 {
            break;
        }
        r.refused(503, "busy");
        assert!(
            std::time::Instant::now() < deadline,
            "the budget stayed taken"
        );
    }
    bob.stat("/vo1/b1").await.ok();
    a.put_ex("/vo1/a2", 0, &exnode_of(Uuid::new_v4(), 800 * BLOCK, 1))
        .await
        .ok();
}
