//! Files: concurrent versions, tickets, the namespace.

use std::collections::BTreeSet;

use ibp_auth::tokens::FileTicket;
use ibp_auth::{unix_now, TrustStore};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{exnode_of, manage_caps, As, Db, Grid, Settings};

/// Optimistic concurrency: of the puts based on the same version exactly
/// one wins and the others get 409 naming the current version; versions
/// stay consecutive; creating a file races the same way.
pub async fn concurrent_writers(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    g.introduce(&[&alice_u, &bob_u]).await;
    let a = g.client(&alice_u);
    let f = "/vo1/c";
    let id = a.create(f, 100).await;
    a.acl_set(f, &[("user:bob@vo1", "rw")]).await.ok();
    let a2 = g.client(&alice_u);
    // Writers on separate connections, both users.
    let writers: Vec<As> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                g.client(&alice_u)
            } else {
                g.client(&bob_u)
            }
        })
        .collect();

    // Two writers, same base.
    let (e1, e2) = (exnode_of(id, 201, 1), exnode_of(id, 202, 1));
    let (r1, r2) = tokio::join!(writers[0].put_ex(f, 1, &e1), writers[1].put_ex(f, 1, &e2));
    let (won, lost) = if r1.status == 200 { (r1, r2) } else { (r2, r1) };
    assert_eq!(won.clone().ok()["version"], 2);
    lost.refused(
        409,
        "/vo1/c changed: version 2 is current, your upload was based on version 1",
    );

    for round in 0..5u64 {
        let base = 2 + round;
        let tasks: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let w = w.clone();
                let ex = exnode_of(id, 1000 + 10 * base + i as u64, 1);
                tokio::spawn(async move { (i, w.put_ex(f, base, &ex).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            if r.status == 200 {
                assert_eq!(r.body["version"], base + 1);
                winners.push(i);
            } else {
                r.refused(
                    409,
                    &format!(
                        "version {} is current, your upload was based on version {base}",
                        base + 1
                    ),
                );
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let cur = a2.get_file(f).await.ok();
        assert_eq!(cur["version"], base + 1);
        assert_eq!(cur["size"], 1000 + 10 * base + winners[0] as u64);
    }
    // Versions 1..=7, consecutive, each readable.
    let st = a.stat(f).await.ok();
    assert_eq!(st["version"], 7);
    assert_eq!(st["versions"], 7);
    for v in 1..=7u64 {
        let r = a.get_version(f, v).await.ok();
        assert_eq!(r["version"], v);
        assert_eq!(r["current_version"], 7);
        let ex = exnode::from_xml(r["exnode"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(ex.version, v, "the stored exNode carries its version");
    }
    // A stale writer.
    a.put_ex(f, 3, &exnode_of(id, 5, 1)).await.refused(
        409,
        "version 7 is current, your upload was based on version 3",
    );
    // Ahead of the current version is as wrong.
    a.put_ex(f, 9, &exnode_of(id, 5, 1))
        .await
        .refused(409, "version 7 is current");
    // A new version keeps the UUID.
    a.put_ex(f, 7, &exnode_of(Uuid::new_v4(), 5, 1))
        .await
        .refused(400, "a new version keeps the file's UUID");
    // An existing path is not created again; a UUID is not used twice.
    a.put_ex(f, 0, &exnode_of(Uuid::new_v4(), 5, 1))
        .await
        .refused(
            409,
            "/vo1/c exists (to replace a file, give its current version as the base)",
        );
    a.put_ex("/vo1/other", 0, &exnode_of(id, 5, 1))
        .await
        .refused(409, &format!("UUID {id} is already used by another file"));

    // Creation race: eight new UUIDs, one path.
    for round in 0..3 {
        let path = format!("/vo1/new{round}");
        let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        let tasks: Vec<_> = writers
            .iter()
            .zip(&ids)
            .map(|(w, id)| {
                let (w, id, path) = (w.clone(), *id, path.clone());
                tokio::spawn(async move {
                    let r = w.put_ex(&path, 0, &exnode_of(id, 50, 1)).await;
                    (id, w, r)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (id, w, r) = t.await.unwrap();
            if r.status == 200 {
                assert_eq!(r.body["version"], 1);
                winners.push((id, w));
            } else {
                let msg = r.refused(409, &path);
                assert!(
                    msg.contains("exists") || msg.contains("created concurrently"),
                    "{msg}"
                );
            }
        }
        assert_eq!(winners.len(), 1, "creation round {round}");
        // The winner owns the new file.
        let (id, w) = &winners[0];
        let r = w.get_file(&path).await.ok();
        assert_eq!(r["id"], id.to_string());
        assert_eq!(r["version"], 1);
        let owner = a.stat(&path).await.ok()["owner"].clone();
        assert_eq!(owner, w.user().principal());
    }
}

/// Tickets verify with the manager's public key (a depot's `metadata/`
/// trust folder) for the file's UUID and the caller's key, for at most the
/// configured lifetime, and for nothing else.
pub async fn tickets(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            ticket_lifetime: "30s",
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    g.introduce(&[&alice_u, &bob_u]).await;
    let (a, bob) = (g.client(&alice_u), g.client(&bob_u));
    // What a depot trusts: CAs, AAs and metadata/metadata.pub.
    let trust = g.pki.client_trust_store();
    assert_eq!(
        trust
            .token_keys(ibp_auth::trust::TokenSigner::MetadataManager)
            .len(),
        1
    );
    let id = a.create("/vo1/f", 10).await;
    let other = a.create("/vo1/g", 10).await;
    a.mkdir("/vo1/d").await.ok();

    let check = |r: &Value, file: Uuid, user: &crate::common::User| -> FileTicket {
        let before = unix_now();
        let token = r["ticket"].as_str().unwrap();
        let t = FileTicket::verify(token, &trust, &file.to_string(), &user.key_hash(), before)
            .unwrap_or_else(|e| panic!("ticket does not verify: {e}"));
        assert_eq!(t.file, file.to_string());
        assert_eq!(t.vo, "vo1");
        assert_eq!(t.vo_id, user.vo_id);
        assert_eq!(t.holder, user.key_hash());
        assert_eq!(r["ticket_not_after"], t.not_after);
        assert!(t.not_after - t.issued <= 30, "{t:?}");
        assert!(t.not_after - t.issued >= 29, "{t:?}");
        assert!(t.not_after <= before + 30);
        assert!((before - 5..=before).contains(&t.issued), "{t:?}");
        t
    };
    for r in [
        a.get_file("/vo1/f").await.ok(),
        a.ticket("/vo1/f").await.ok(),
    ] {
        assert_eq!(r["id"], id.to_string());
        let t = check(&r, id, &alice_u);
        let token = r["ticket"].as_str().unwrap();
        let now = unix_now();
        // Not for another file, another holder, after expiry, or without
        // the manager's key.
        assert!(
            FileTicket::verify(token, &trust, &other.to_string(), &alice_u.key_hash(), now)
                .is_err()
        );
        assert!(
            FileTicket::verify(token, &trust, &id.to_string(), &bob_u.key_hash(), now).is_err()
        );
        // Valid to the end of its lifetime (plus the verifier's allowance
        // for clock skew), not a second longer.
        FileTicket::verify(
            token,
            &trust,
            &id.to_string(),
            &alice_u.key_hash(),
            t.not_after + trust.max_skew,
        )
        .unwrap();
        let expired = FileTicket::verify(
            token,
            &trust,
            &id.to_string(),
            &alice_u.key_hash(),
            t.not_after + trust.max_skew + 1,
        );
        assert!(
            matches!(expired, Err(ibp_auth::AuthError::Expired { .. })),
            "{expired:?}"
        );
        assert!(FileTicket::verify(
            token,
            &TrustStore::load(&g.pki.server_trust).unwrap(),
            &id.to_string(),
            &alice_u.key_hash(),
            now
        )
        .is_err());
        // A tampered token.
        let mut bad = token.to_owned();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(
            FileTicket::verify(&bad, &trust, &id.to_string(), &alice_u.key_hash(), now).is_err()
        );
    }
    // bob's ticket is bound to bob's key.
    a.acl_set("/vo1/f", &[("user:bob@vo1", "r")]).await.ok();
    let r = bob.ticket("/vo1/f").await.ok();
    check(&r, id, &bob_u);
    assert!(FileTicket::verify(
        r["ticket"].as_str().unwrap(),
        &trust,
        &id.to_string(),
        &alice_u.key_hash(),
        unix_now()
    )
    .is_err());
    // A reader gets the read capabilities only (a MANAGE capability would
    // let it release the allocations); a writer gets them all.
    let caps = |r: &Value| {
        let x = exnode::from_xml(r["exnode"].as_str().unwrap().as_bytes()).unwrap();
        assert!(!x.mappings.is_empty());
        assert!(x.mappings.iter().all(|m| m.read.is_some()));
        (
            x.mappings.iter().filter(|m| m.write.is_some()).count(),
            x.mappings.iter().filter(|m| m.manage.is_some()).count(),
            x.mappings.len(),
        )
    };
    let (w, m, _) = caps(&bob.get_file("/vo1/f").await.ok());
    assert_eq!((w, m), (0, 0));
    let (w, m, n) = caps(&a.get_file("/vo1/f").await.ok());
    assert_eq!((w, m), (n, n));
    a.acl_set("/vo1/f", &[("user:bob@vo1", "rw")]).await.ok();
    let (w, m, n) = caps(&bob.get_file("/vo1/f").await.ok());
    assert_eq!((w, m), (n, n));
    a.acl_set("/vo1/f", &[("user:bob@vo1", "r")]).await.ok();
    // A moved file keeps its UUID, so its tickets.
    a.mv("/vo1/f", "/vo1/d/f").await.ok();
    let r = a.ticket("/vo1/d/f").await.ok();
    check(&r, id, &alice_u);
    // Not for directories, nor missing files.
    a.ticket("/vo1/d")
        .await
        .refused(400, "/vo1/d is a directory");
    a.get_file("/vo1/d")
        .await
        .refused(400, "/vo1/d is a directory");
    a.ticket("/vo1/none")
        .await
        .refused(404, "no such file or directory: /vo1/none");
}

/// mkdir (-p), listing pages, stat, moves of files and of directories with
/// children, deleting files (every version's manage capabilities) and old
/// versions, non-empty directories, and UUIDs never reused.
pub async fn namespace(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    g.introduce(&[&alice_u, &bob_u]).await;
    let (a, bob) = (g.client(&alice_u), g.client(&bob_u));

    // mkdir and mkdir -p.
    let d = a.mkdir_p("/vo1/a/b/c").await.ok();
    assert_eq!(d["path"], "/vo1/a/b/c");
    assert_eq!(d["kind"], "dir");
    assert_eq!(d["owner"], "user:alice@vo1");
    for p in ["/vo1/a", "/vo1/a/b"] {
        assert_eq!(a.stat(p).await.ok()["kind"], "dir");
    }
    a.mkdir_p("/vo1/a/b/c").await.ok();
    a.mkdir("/vo1/a/b").await.refused(409, "/vo1/a/b exists");
    a.mkdir("/vo1/a/b/").await.refused(409, "/vo1/a/b exists");
    a.create("/vo1/a/file", 10).await;
    a.mkdir_p("/vo1/a/file")
        .await
        .refused(409, "/vo1/a/file exists and is not a directory");
    a.mkdir_p("/vo1/a/file/x")
        .await
        .refused(400, "/vo1/a/file is not a directory");

    // Listing in pages.
    a.mkdir("/vo1/many").await.ok();
    for i in 0..25 {
        a.create(&format!("/vo1/many/f{i:02}"), 1).await;
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let r = a
            .post(
                "/v1/list",
                json!({ "path": "/vo1/many", "limit": 10, "after": after }),
            )
            .await
            .ok();
        pages += 1;
        let page: Vec<String> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(page.len() <= 10);
        names.extend(page.clone());
        match r["next_after"].as_str() {
            Some(n) => {
                assert_eq!(Some(n), page.last().map(String::as_str));
                after = Some(n.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    assert_eq!(names, want);
    let r = a
        .post("/v1/list", json!({ "path": "/vo1/many", "after": "f22" }))
        .await
        .ok();
    assert_eq!(r["entries"].as_array().unwrap().len(), 2);
    assert!(r["next_after"].is_null());
    let e = &a.list("/vo1/many").await.ok()["entries"][0];
    assert_eq!(e["kind"], "file");
    assert_eq!(e["version"], 1);
    assert_eq!(e["size"], 1);
    // Listing a file shows the file.
    let r = a.list("/vo1/many/f03").await.ok();
    assert_eq!(r["entries"][0]["path"], "/vo1/many/f03");

    // stat.
    let id = a.create("/vo1/a/s", 2500).await;
    a.put_ex("/vo1/a/s", 1, &exnode_of(id, 1200, 2)).await.ok();
    let st = a.stat("/vo1/a/s").await.ok();
    assert_eq!(st["kind"], "file");
    assert_eq!(st["id"], id.to_string());
    assert_eq!(st["version"], 2);
    assert_eq!(st["versions"], 2);
    assert_eq!(st["size"], 1200);
    // Each allocation once, and what maintenance left out not at all:
    // the second version names two of the first's and leaves out the
    // third (test exNodes name allocations by offset and replica), as a
    // trim does, whose client releases it.
    assert_eq!(st["stored"], 1000 + 1000 + 1000 + 200);
    assert_eq!(st["rights"], "rwda");
    assert_eq!(st["owner"], "user:alice@vo1");
    // bob sees names in /vo1 (readable by the VO), not in /vo1/a.
    let st = bob.stat("/vo1/a").await.ok();
    assert_eq!(st["rights"], "-");
    bob.stat("/vo1/a/s")
        .await
        .refused(403, "read right on /vo1/a/s or its directory is needed");
    let root = bob.list("/vo1").await.ok();
    let top: Vec<&str> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["/vo1/a", "/vo1/many"]);

    // Moving a file.
    a.mv("/vo1/a/s", "/vo1/a/b/t").await.ok();
    a.get_file("/vo1/a/s")
        .await
        .refused(404, "no such file: /vo1/a/s");
    let r = a.get_file("/vo1/a/b/t").await.ok();
    assert_eq!(r["id"], id.to_string());
    assert_eq!(r["version"], 2);
    assert_eq!(a.get_version("/vo1/a/b/t", 1).await.ok()["size"], 2500);

    // Moving a directory with children (non-ASCII names included).
    a.mkdir_p("/vo1/dä/sub/deeper").await.ok();
    let x = a.create("/vo1/dä/sub/x", 10).await;
    let y = a.create("/vo1/dä/y", 10).await;
    let z = a.create("/vo1/dä/sub/deeper/z", 10).await;
    // A sibling sharing the prefix must not move.
    let sib = a.create("/vo1/dä-sibling", 10).await;
    let dir_id = a.stat("/vo1/dä").await.ok()["id"].clone();
    a.mv("/vo1/dä", "/vo1/a/moved-ü").await.ok();
    for (p, want) in [
        ("/vo1/a/moved-ü/sub/x", x),
        ("/vo1/a/moved-ü/y", y),
        ("/vo1/a/moved-ü/sub/deeper/z", z),
        ("/vo1/dä-sibling", sib),
    ] {
        let r = a.get_file(p).await.ok();
        assert_eq!(r["id"], want.to_string(), "{p}");
        assert_eq!(r["path"], p);
    }
    assert_eq!(a.stat("/vo1/a/moved-ü").await.ok()["id"], dir_id);
    let listed: Vec<String> = a.list("/vo1/a/moved-ü").await.ok()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ["/vo1/a/moved-ü/sub", "/vo1/a/moved-ü/y"]);
    let listed = a.list("/vo1/a/moved-ü/sub/deeper").await.ok();
    assert_eq!(listed["entries"][0]["path"], "/vo1/a/moved-ü/sub/deeper/z");
    for p in ["/vo1/dä", "/vo1/dä/y", "/vo1/dä/sub/x"] {
        a.stat(p).await.refused(404, "no such file or directory");
    }
    // New entries under the moved directory land in the right place.
    a.create("/vo1/a/moved-ü/sub/new", 10).await;
    assert_eq!(
        a.list("/vo1/a/moved-ü/sub").await.ok()["entries"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // And an ASCII directory back again.
    a.mv("/vo1/a/moved-ü/sub", "/vo1/sub").await.ok();
    assert_eq!(
        a.get_file("/vo1/sub/deeper/z").await.ok()["id"],
        z.to_string()
    );

    // Refused moves.
    a.mv("/vo1/sub", "/vo1/many")
        .await
        .refused(409, "/vo1/many exists");
    a.mv("/vo1/sub", "/vo2/sub")
        .await
        .refused(400, "different VOs' trees");
    a.mv("/vo1/nothing", "/vo1/x")
        .await
        .refused(404, "no such file or directory: /vo1/nothing");
    a.mv("/vo1/sub", "/vo1/nowhere/x")
        .await
        .refused(404, "no such file or directory: /vo1/nowhere");
    bob.mv("/vo1/sub", "/vo1/bobs")
        .await
        .refused(403, "delete right on /vo1/sub");
    a.acl_set("/vo1/sub", &[("user:bob@vo1", "d")]).await.ok();
    bob.mv("/vo1/sub", "/vo1/a/bobs")
        .await
        .refused(403, "write right on /vo1/a");

    // Deleting a file releases every version's manage capabilities.
    let f = "/vo1/v";
    let vid = Uuid::new_v4();
    // Version 2 keeps version 1's allocations and adds some (an
    // augment); version 3 is new content, in allocations of its own.
    let renamed = |cap: &mut Option<String>| {
        *cap = cap.as_ref().map(|c| c.replace("/0#", "/0#new"));
    };
    let mut x3 = exnode_of(vid, 500, 3);
    for m in &mut x3.mappings {
        renamed(&mut m.read);
        renamed(&mut m.write);
        renamed(&mut m.manage);
    }
    let v3: BTreeSet<String> = x3
        .manage_capabilities()
        .into_iter()
        .map(str::to_owned)
        .collect();
    a.put_ex(f, 0, &exnode_of(vid, 1500, 1)).await.ok();
    a.put_ex(f, 1, &exnode_of(vid, 2500, 2)).await.ok();
    a.put_ex(f, 2, &x3).await.ok();
    // Deleting an old version only.
    let r = a
        .post("/v1/delete", json!({ "path": f, "version": 2 }))
        .await
        .ok();
    let released = r["released"].as_array().unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0]["version"], 2);
    let caps = |v: &Value| -> BTreeSet<String> {
        v["manage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    };
    // Only what no remaining version (1 shares allocations with 2) still
    // uses.
    let all2: BTreeSet<String> = manage_caps(vid, 2500, 2).into_iter().collect();
    assert_eq!(all2.len(), 6);
    let still: BTreeSet<String> = manage_caps(vid, 1500, 1)
        .into_iter()
        .chain(v3.iter().cloned())
        .collect();
    let want2: BTreeSet<String> = all2.difference(&still).cloned().collect();
    assert!(!want2.is_empty() && want2.len() < all2.len());
    assert_eq!(caps(&released[0]), want2);
    a.get_version(f, 2)
        .await
        .refused(404, "/vo1/v has no version 2");
    assert_eq!(a.get_version(f, 1).await.ok()["size"], 1500);
    let st = a.stat(f).await.ok();
    assert_eq!(st["versions"], 2);
    assert_eq!(st["stored"], 1500 + 3 * 500);
    a.post("/v1/delete", json!({ "path": f, "version": 3 }))
        .await
        .refused(400, "version 3 is the current version of /vo1/v");
    a.post("/v1/delete", json!({ "path": f, "version": 9 }))
        .await
        .refused(404, "/vo1/v has no version 9");
    bob.post("/v1/delete", json!({ "path": f, "version": 1 }))
        .await
        .refused(403, "delete right");
    let r = a.delete(f).await.ok();
    let released = r["released"].as_array().unwrap();
    assert_eq!(
        released
            .iter()
            .map(|v| v["version"].clone())
            .collect::<Vec<_>>(),
        [json!(1), json!(3)]
    );
    assert_eq!(
        caps(&released[0]),
        manage_caps(vid, 1500, 1).into_iter().collect()
    );
    assert_eq!(caps(&released[1]), v3);
    a.get_file(f).await.refused(404, "no such file: /vo1/v");
    // The UUID of a deleted file is never used again, at any path.
    for p in [f, "/vo1/elsewhere"] {
        a.put_ex(p, 0, &exnode_of(vid, 10, 1)).await.refused(
            409,
            &format!("file UUID {vid} belonged to a deleted file and cannot be reused"),
        );
    }
    // The path itself is free again.
    a.create(f, 10).await;

    // Directories: not while not empty.
    a.delete("/vo1/a/b")
        .await
        .refused(400, "directory /vo1/a/b is not empty");
    a.delete("/vo1/a/b/t").await.ok();
    a.delete("/vo1/a/b/c").await.ok();
    let r = a.delete("/vo1/a/b").await.ok();
    assert_eq!(r["released"], json!([]));
    a.stat("/vo1/a/b")
        .await
        .refused(404, "no such file or directory");
    a.delete("/vo1/a/b")
        .await
        .refused(404, "no such file or directory");
}
