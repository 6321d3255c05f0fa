//! Keys, usage, shutdown and replicas on one database.

use std::time::Duration;

use ibp_auth::tokens::FileTicket;
use ibp_auth::unix_now;
use serde_json::json;
use uuid::Uuid;

use crate::common::{encrypted_exnode, exnode_of, x25519, As, Db, Grid, Settings};

/// Key-wrapping public keys, wrapped data keys per version and recipient,
/// and the VO's escrow key.
pub async fn keys(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let carol_u = g.pki.user("carol", "vo1", "carol", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    let boss2_u = g.pki.user("boss2", "vo2", "boss2", &["admins"]);
    g.introduce(&[&alice_u, &bob_u, &carol_u, &boss_u, &boss2_u])
        .await;
    let (a, bob, carol, boss, boss2) = (
        g.client(&alice_u),
        g.client(&bob_u),
        g.client(&carol_u),
        g.client(&boss_u),
        g.client(&boss2_u),
    );

    // Public keys.
    let r = a
        .put("/v1/keys/me", json!({ "public_key": x25519(1) }))
        .await
        .ok();
    assert_eq!(r["principal"], "user:alice@vo1");
    assert_eq!(a.get("/v1/whoami").await.ok()["public_key"], x25519(1));
    let r = bob
        .post("/v1/keys/lookup", json!({ "recipient": "user:alice@vo1" }))
        .await
        .ok();
    assert_eq!(r["public_key"], x25519(1));
    // Replaced by a new registration.
    a.put("/v1/keys/me", json!({ "public_key": x25519(2) }))
        .await
        .ok();
    let r = boss2
        .post("/v1/keys/lookup", json!({ "recipient": "user:alice@vo1" }))
        .await
        .ok();
    assert_eq!(r["public_key"], x25519(2));
    bob.post("/v1/keys/lookup", json!({ "recipient": "user:carol@vo1" }))
        .await
        .refused(404, "user:carol@vo1 has no registered public key");
    bob.post("/v1/keys/lookup", json!({ "recipient": "user:ghost@vo1" }))
        .await
        .refused(404, "has no registered public key");
    bob.post("/v1/keys/lookup", json!({ "recipient": "escrow:vo1" }))
        .await
        .refused(404, "escrow:vo1 has no registered public key");

    // The escrow key: VO admins only.
    let needs = "administering VO vo1 needs its group \"admins\"";
    a.put("/v1/vos/vo1/escrow", json!({ "public_key": x25519(9) }))
        .await
        .refused(403, needs);
    boss2
        .put("/v1/vos/vo1/escrow", json!({ "public_key": x25519(9) }))
        .await
        .refused(403, needs);
    boss.put("/v1/vos/vo1/escrow", json!({ "public_key": "x25519 xx" }))
        .await
        .refused(400, "x25519");
    let r = boss
        .put("/v1/vos/vo1/escrow", json!({ "public_key": x25519(9) }))
        .await
        .ok();
    assert_eq!(r["recipient"], "escrow:vo1");
    let r = carol
        .post("/v1/keys/lookup", json!({ "recipient": "escrow:vo1" }))
        .await
        .ok();
    assert_eq!(r["public_key"], x25519(9));

    // An encrypted version needs the writer's own wrapped key.
    let f = "/vo1/secret";
    let id = Uuid::new_v4();
    let ex = exnode::to_xml(&encrypted_exnode(id, 2000));
    a.put_doc(f, 0, &ex, &[]).await.refused(
        400,
        "the exNode is encrypted but no data key is wrapped for you (user:alice@vo1)",
    );
    a.put_doc(f, 0, &ex, &[("user:bob@vo1", "WB0")])
        .await
        .refused(400, "no data key is wrapped for you (user:alice@vo1)");
    a.stat(f).await.refused(404, "no such file");
    let r = a
        .put_doc(
            f,
            0,
            &ex,
            &[("user:alice@vo1", "WA1"), ("escrow:vo1", "WE1")],
        )
        .await
        .ok();
    assert_eq!(r["version"], 1);
    let r = a.get_file(f).await.ok();
    assert_eq!(r["wrapped_key"], "WA1");
    assert_eq!(r["key_id"], format!("k-{}", &id.simple().to_string()[..8]));
    let back = exnode::from_xml(r["exnode"].as_str().unwrap().as_bytes()).unwrap();
    assert!(back.encryption.is_some());

    // Wrapped keys go to their recipient only.
    a.acl_set(f, &[("user:bob@vo1", "r"), ("user:carol@vo1", "r")])
        .await
        .ok();
    assert!(bob.get_file(f).await.ok()["wrapped_key"].is_null());
    let add = |path: &str, recipient: &str, wrapped: &str| json!({ "path": path, "recipient": recipient, "wrapped": wrapped });
    bob.post("/v1/keys/add", add(f, "user:bob@vo1", "WB1"))
        .await
        .refused(403, "admin right on /vo1/secret is needed");
    let r = a
        .post("/v1/keys/add", add(f, "user:bob@vo1", "WB1"))
        .await
        .ok();
    assert_eq!(r["version"], 1);
    assert_eq!(bob.get_file(f).await.ok()["wrapped_key"], "WB1");
    assert!(carol.get_file(f).await.ok()["wrapped_key"].is_null());
    assert_eq!(a.get_file(f).await.ok()["wrapped_key"], "WA1");
    a.post("/v1/keys/add", add(f, "user:ghost@vo1", "W"))
        .await
        .refused(400, "unknown user ghost@vo1");
    a.post(
        "/v1/keys/add",
        json!({ "path": f, "version": 7, "recipient": "user:carol@vo1", "wrapped": "W" }),
    )
    .await
    .refused(404, "no version 7");
    a.post("/v1/keys/add", add("/vo1", "user:carol@vo1", "W"))
        .await
        .refused(403, "admin right on /vo1");
    // A VO admin holds the admin right on every entry.
    boss.post("/v1/keys/add", add(f, "user:carol@vo1", "WC1"))
        .await
        .ok();
    assert_eq!(carol.get_file(f).await.ok()["wrapped_key"], "WC1");

    // A new upload (a fresh data key: another key id) has its own keys.
    let mut ex2 = encrypted_exnode(id, 3000);
    if let Some(e) = ex2.encryption.as_mut() {
        e.key_id = "k-second-upload".into();
    }
    let ex2 = exnode::to_xml(&ex2);
    a.put_doc(f, 1, &ex2, &[("user:alice@vo1", "WA2")])
        .await
        .ok();
    assert!(bob.get_file(f).await.ok()["wrapped_key"].is_null());
    let r = bob
        .post("/v1/get", json!({ "path": f, "version": 1 }))
        .await
        .ok();
    assert_eq!(r["wrapped_key"], "WB1");
    assert_eq!(a.get_file(f).await.ok()["wrapped_key"], "WA2");

    // Removing a recipient's keys (every version).
    bob.post(
        "/v1/keys/remove",
        json!({ "path": f, "recipient": "user:bob@vo1" }),
    )
    .await
    .refused(403, "admin right");
    let r = a
        .post(
            "/v1/keys/remove",
            json!({ "path": f, "recipient": "user:bob@vo1" }),
        )
        .await
        .ok();
    assert_eq!(r["removed"], 1);
    let r = bob
        .post("/v1/get", json!({ "path": f, "version": 1 }))
        .await
        .ok();
    assert!(r["wrapped_key"].is_null());

    // Escrowed keys: to the VO's admins only.
    let r = boss
        .post("/v1/keys/escrow", json!({ "path": f, "version": 1 }))
        .await
        .ok();
    assert_eq!(r["wrapped_key"], "WE1");
    assert_eq!(r["recipient"], "escrow:vo1");
    assert_eq!(r["id"], id.to_string());
    boss.post("/v1/keys/escrow", json!({ "path": f }))
        .await
        .refused(
            404,
            "version 2 of /vo1/secret has no key wrapped for escrow:vo1",
        );
    let only = "escrowed keys of VO vo1's files are released to its admins";
    a.post("/v1/keys/escrow", json!({ "path": f, "version": 1 }))
        .await
        .refused(403, only);
    bob.post("/v1/keys/escrow", json!({ "path": f, "version": 1 }))
        .await
        .refused(403, only);
    boss2
        .post("/v1/keys/escrow", json!({ "path": f, "version": 1 }))
        .await
        .refused(403, only);
    boss.post("/v1/keys/escrow", json!({ "path": "/vo1/none" }))
        .await
        .refused(404, "no such file: /vo1/none");

    // A version made by maintenance keeps the data key (same key id): the
    // base version's wrapped keys carry over, for every recipient the put
    // does not wrap for itself.
    a.post("/v1/keys/add", add(f, "user:carol@vo1", "WC2"))
        .await
        .ok();
    a.put_doc(f, 2, &ex2, &[("user:alice@vo1", "WA3")])
        .await
        .ok();
    assert_eq!(carol.get_file(f).await.ok()["wrapped_key"], "WC2");
    assert_eq!(a.get_file(f).await.ok()["wrapped_key"], "WA3");
    // Another key id again: nothing carried over.
    a.put_doc(f, 3, &ex, &[("user:alice@vo1", "WA4")])
        .await
        .ok();
    assert!(carol.get_file(f).await.ok()["wrapped_key"].is_null());
    assert_eq!(a.get_file(f).await.ok()["wrapped_key"], "WA4");
}

/// The length of the exNode a writer gets for one version (as stored).
pub async fn exnode_len(c: &As, path: &str, version: u64) -> u64 {
    let r = c.get_version(path, version).await.ok();
    // As stored: without the signature the manager adds as it serves.
    let mut x = exnode::from_xml(r["exnode"].as_str().expect("an exNode").as_bytes()).unwrap();
    exnode::signature::split(&mut x).unwrap().expect("signed");
    exnode::to_xml(&x).len() as u64
}

/// Usage per owner: members see their own row, VO admins every row and
/// the totals; logical bytes count current versions, stored bytes every
/// version's replicas; entries and exNode bytes (every version kept) are
/// what the quotas count, shown with the limits and the VO's use.
pub async fn usage(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    g.introduce(&[&alice_u, &bob_u, &boss_u]).await;
    let (a, bob, boss) = (g.client(&alice_u), g.client(&bob_u), g.client(&boss_u));
    let a1 = Uuid::new_v4();
    a.put_ex("/vo1/a1", 0, &exnode_of(a1, 3000, 2)).await.ok();
    a.put_ex("/vo1/a1", 1, &exnode_of(a1, 1000, 3)).await.ok();
    a.put_ex("/vo1/a2", 0, &exnode_of(Uuid::new_v4(), 500, 1))
        .await
        .ok();
    bob.put_ex("/vo1/b1", 0, &exnode_of(Uuid::new_v4(), 2000, 1))
        .await
        .ok();
    let (a1v1, a1v2, a2v1, b1v1) = (
        exnode_len(&a, "/vo1/a1", 1).await,
        exnode_len(&a, "/vo1/a1", 2).await,
        exnode_len(&a, "/vo1/a2", 1).await,
        exnode_len(&bob, "/vo1/b1", 1).await,
    );
    let alice_row = json!({
        "owner": "user:alice@vo1", "files": 2, "versions": 3,
        // a1's second version keeps two of the first's allocations, adds
        // one and leaves out four (as maintenance does, whose client
        // releases them): each allocation counts once, the four not at all.
        "logical": 1000 + 500, "stored": 3000 + 500,
        "entries": 2, "exnode_bytes": a1v1 + a1v2 + a2v1,
    });
    let bob_row = json!({
        "owner": "user:bob@vo1", "files": 1, "versions": 1, "logical": 2000, "stored": 2000,
        "entries": 1, "exnode_bytes": b1v1,
    });
    // The defaults: docs/metadata-manager.md.
    let limits = json!({
        "user_entries": 100_000, "user_exnode_bytes": 1u64 << 30,
        "vo_entries": 1_000_000, "vo_exnode_bytes": 16u64 << 30,
    });
    let vo_used = json!({ "entries": 3, "exnode_bytes": a1v1 + a1v2 + a2v1 + b1v1 });

    let r = a.post("/v1/usage", json!({})).await.ok();
    assert_eq!(
        r,
        json!({ "vo": "vo1", "users": [alice_row.clone()], "limits": limits, "vo_used": vo_used })
    );
    let r = bob.post("/v1/usage", json!({ "vo": "vo1" })).await.ok();
    assert_eq!(
        r,
        json!({ "vo": "vo1", "users": [bob_row.clone()], "limits": limits, "vo_used": vo_used })
    );
    let r = boss.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r["users"], json!([alice_row, bob_row]));
    assert_eq!(
        r["total"],
        json!({ "files": 3, "versions": 4, "logical": 3500, "stored": 5500 })
    );
    assert_eq!(r["vo_used"], vo_used);

    // Deleting an old version frees stored bytes and its exNode, not
    // logical bytes.
    a.post("/v1/delete", json!({ "path": "/vo1/a1", "version": 1 }))
        .await
        .ok();
    let r = a.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r["users"][0]["versions"], 2);
    assert_eq!(r["users"][0]["logical"], 1500);
    assert_eq!(r["users"][0]["stored"], 3500);
    assert_eq!(r["users"][0]["exnode_bytes"], a1v2 + a2v1);
    assert_eq!(r["vo_used"]["exnode_bytes"], a1v2 + a2v1 + b1v1);
    // A moved file still counts for its owner; a directory is an entry.
    a.mkdir("/vo1/d").await.ok();
    a.mv("/vo1/a2", "/vo1/d/a2").await.ok();
    let r = boss.post("/v1/usage", json!({})).await.ok();
    assert_eq!(
        r["total"],
        json!({ "files": 3, "versions": 3, "logical": 3500, "stored": 5500 })
    );
    assert_eq!(r["users"][0]["entries"], 3);
    assert_eq!(r["vo_used"]["entries"], 4);
    // Deleting frees the entry and every version's bytes; a user with
    // directories only still has a row.
    bob.mkdir("/vo1/bd").await.ok();
    bob.delete("/vo1/b1").await.ok();
    let r = bob.post("/v1/usage", json!({})).await.ok();
    assert_eq!(
        r["users"],
        json!([{ "owner": "user:bob@vo1", "files": 0, "versions": 0, "logical": 0, "stored": 0,
                 "entries": 1, "exnode_bytes": 0 }])
    );
    assert_eq!(
        r["vo_used"],
        json!({ "entries": 4, "exnode_bytes": a1v2 + a2v1 })
    );
}

/// A member of one VO asks for another VO's usage: refused (403), where it
/// used to answer 200 with an empty list (saying whether the other VO used
/// the manager at all). Admins of the other VO are refused too.
pub async fn usage_of_another_vo_is_refused(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let boss2_u = g.pki.user("boss2", "vo2", "boss2", &["admins"]);
    g.introduce(&[&alice_u, &boss2_u]).await;
    let (a, boss2) = (g.client(&alice_u), g.client(&boss2_u));
    a.create("/vo1/a", 100).await;
    boss2
        .post("/v1/usage", json!({ "vo": "vo1" }))
        .await
        .refused(
        403,
        "usage of VO vo1 is shown to its members only; you (user:boss2@vo2) are a member of VO vo2",
    );
    a.post("/v1/usage", json!({ "vo": "vo2" }))
        .await
        .refused(403, "usage of VO vo2 is shown to its members only");
    a.post("/v1/usage", json!({ "vo": "vo3" }))
        .await
        .refused(403, "usage of VO vo3");
    // Their own VO still answers.
    let r = boss2.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r["vo"], "vo2");
    assert_eq!(r["users"], json!([]));
    let r = a.post("/v1/usage", json!({ "vo": "vo1" })).await.ok();
    assert_eq!(r["users"][0]["files"], 1);
}

/// SIGTERM stops the manager promptly and cleanly.
pub async fn shutdown_is_prompt(db: Db) {
    let mut g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let a = g.client(&alice_u);
    a.create("/vo1/f", 10).await;
    let (status, took) = g.server.stop();
    let status = status.expect("the manager exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    let log = g.server.log_text();
    assert!(log.contains("metadata manager stopped"), "{log}");
    assert!(a
        .try_call(ibp_https::Method::GET, "/v1/whoami", None)
        .await
        .is_err());
}

/// Two server processes on one PostgreSQL database serve the same data:
/// written through one, read through the other; ACL changes, member
/// removal and optimistic concurrency hold across them; one stopping does
/// not stop the other.
pub async fn replicas_share_database(db: Db) {
    assert!(db.is_postgres(), "replicas need a shared database");
    let mut g = Grid::start(db, Settings::default());
    let second = g.spawn_server(1);
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    let a0 = g.client(&alice_u);
    let a1 = g.client_of(&second, &alice_u);
    let bob0 = g.client(&bob_u);
    let bob1 = g.client_of(&second, &bob_u);
    let boss1 = g.client_of(&second, &boss_u);
    g.introduce(&[&alice_u, &bob_u, &boss_u]).await;

    // Written through one, read through the other.
    a0.mkdir("/vo1/d").await.ok();
    let id = a0.create("/vo1/d/f", 1234).await;
    let r0 = a0.get_file("/vo1/d/f").await.ok();
    let r1 = a1.get_file("/vo1/d/f").await.ok();
    assert_eq!(r1["id"], id.to_string());
    // Both sign with the same key: the same exNode, each signed as served
    // (the times of signing may differ).
    let trust = g.pki.client_trust_store();
    let signed = |r: &serde_json::Value| {
        let mut x = exnode::from_xml(r["exnode"].as_str().unwrap().as_bytes()).unwrap();
        let sig = exnode::signature::split(&mut x).unwrap().expect("signed");
        let keys = trust.token_keys(ibp_auth::trust::TokenSigner::MetadataManager);
        let v = exnode::signature::verify(&x, &sig, keys).unwrap();
        assert_eq!((v.file, v.version), (id, 1));
        x
    };
    assert_eq!(signed(&r1), signed(&r0));
    FileTicket::verify(
        r1["ticket"].as_str().unwrap(),
        &trust,
        &id.to_string(),
        &alice_u.key_hash(),
        unix_now(),
    )
    .unwrap();
    // The ACL set through one applies on the other.
    bob0.get_file("/vo1/d/f").await.refused(403, "read right");
    a1.acl_set("/vo1/d/f", &[("user:bob@vo1", "rw")]).await.ok();
    bob0.get_file("/vo1/d/f").await.ok();
    a0.acl_set("/vo1/d", &[("user:bob@vo1", "rw")]).await.ok();
    assert_eq!(
        bob1.list("/vo1/d").await.ok()["entries"][0]["id"],
        id.to_string()
    );

    // Concurrent writers through both servers: one winner per round.
    let writers: Vec<As> = (0..8)
        .map(|i| match i % 4 {
            0 => g.client(&alice_u),
            1 => g.client_of(&second, &alice_u),
            2 => g.client(&bob_u),
            _ => g.client_of(&second, &bob_u),
        })
        .collect();
    for base in 1..=3u64 {
        let tasks: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let w = w.clone();
                let ex = exnode_of(id, 100 * base + i as u64, 1);
                tokio::spawn(async move { w.put_ex("/vo1/d/f", base, &ex).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            let r = t.await.unwrap();
            if r.status == 200 {
                wins += 1;
                assert_eq!(r.body["version"], base + 1);
            } else {
                r.refused(409, &format!("version {} is current", base + 1));
            }
        }
        assert_eq!(wins, 1, "round {base}");
    }
    assert_eq!(a1.stat("/vo1/d/f").await.ok()["versions"], 4);
    // Creation race across both.
    let tasks: Vec<_> = writers
        .iter()
        .map(|w| {
            let w = w.clone();
            tokio::spawn(async move {
                w.put_ex("/vo1/d/new", 0, &exnode_of(Uuid::new_v4(), 5, 1))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 200 {
            wins += 1;
        } else {
            r.refused(409, "/vo1/d/new");
        }
    }
    assert_eq!(wins, 1);

    // A member removed through one is refused by the other.
    boss1
        .post("/v1/vos/vo1/members/remove", json!({ "vo_id": "bob" }))
        .await
        .ok();
    bob0.get_file("/vo1/d/f")
        .await
        .refused(403, "VO vo1 removed member bob");
    bob1.get_file("/vo1/d/f")
        .await
        .refused(403, "VO vo1 removed member bob");

    // One replica stops; the other goes on.
    let (status, took) = g.server.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let r = a1.get_file("/vo1/d/f").await.ok();
    assert_eq!(r["version"], 4);
    a1.create("/vo1/d/after-stop", 5).await;
    assert_eq!(
        a1.list("/vo1/d").await.ok()["entries"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    drop(second);
}
