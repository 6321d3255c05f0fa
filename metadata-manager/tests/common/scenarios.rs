//! The metadata manager suite, run once per database (tests/sqlite.rs,
//! tests/postgres.rs). Each scenario starts its own manager and database
//! and talks to it over mutual TLS as several users of two VOs.

use std::collections::BTreeSet;
use std::time::Duration;

use ibp_auth::tokens::FileTicket;
use ibp_auth::{unix_now, TrustStore};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    acl_pairs, encrypted_exnode, exnode_of, manage_caps, mapping, mint_user, x25519, As, Db, Grid,
    Settings,
};

const F: &str = "/vo1/proj/f";

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect()
}

/// The owner has every right; another member has none until an ACL entry
/// grants it, and then exactly the rights granted: get and ticket need r,
/// a new version w, delete d, reading and changing the ACL a. VO admins
/// hold d and a on every entry of their VO, never r or w.
pub async fn rights_granted_and_refused(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice = g.pki.user("alice", "vo1", "alice", &["users"]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &["users"]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    g.introduce(&[&alice, &bob_u, &boss_u]).await;
    let (a, bob, boss) = (g.client(&alice), g.client(&bob_u), g.client(&boss_u));

    a.mkdir("/vo1/proj").await.ok();
    let id = a.create(F, 2500).await;
    let r = a.get_file(F).await.ok();
    assert_eq!(r["rights"], "rwda");
    assert_eq!(r["version"], 1);
    assert_eq!(r["size"], 2500);
    let ex = exnode::from_xml(r["exnode"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(ex.file, Some(id));
    assert_eq!(ex.version, 1);
    assert_eq!(ex.mappings.len(), 3);
    let acl = a.acl_get(F).await.ok();
    assert_eq!(acl["owner"], "user:alice@vo1");
    assert!(acl_pairs(&acl["access"]).is_empty());

    // Nothing for bob yet.
    let v2 = exnode_of(id, 2600, 1);
    bob.get_file(F).await.refused(
        403,
        "read right on /vo1/proj/f is needed; you (user:bob@vo1) have -",
    );
    bob.ticket(F).await.refused(403, "read right");
    bob.put_ex(F, 1, &v2).await.refused(403, "write right");
    bob.delete(F).await.refused(403, "delete right");
    bob.acl_get(F).await.refused(403, "admin right");
    bob.acl_set(F, &[("user:bob@vo1", "rwda")])
        .await
        .refused(403, "admin right");
    bob.list("/vo1/proj").await.refused(403, "read right");
    bob.mkdir("/vo1/proj/sub").await.refused(403, "write right");
    bob.put_ex("/vo1/proj/mine", 0, &exnode_of(Uuid::new_v4(), 10, 1))
        .await
        .refused(403, "write right on /vo1/proj is needed");

    // r only.
    a.acl_set(F, &[("user:bob@vo1", "r")]).await.ok();
    let r = bob.get_file(F).await.ok();
    assert_eq!(r["rights"], "r");
    assert_eq!(r["id"], id.to_string());
    bob.ticket(F).await.ok();
    bob.put_ex(F, 1, &v2).await.refused(403, "write right");
    bob.delete(F).await.refused(403, "delete right");
    bob.acl_get(F).await.refused(403, "admin right");

    // w only: a new version, but no reading.
    a.acl_set(F, &[("user:bob@vo1", "w")]).await.ok();
    let r = bob.put_ex(F, 1, &v2).await.ok();
    assert_eq!(r["version"], 2);
    assert_eq!(r["size"], 2600);
    bob.get_file(F)
        .await
        .refused(403, "you (user:bob@vo1) have w");
    bob.ticket(F).await.refused(403, "read right");
    bob.delete(F).await.refused(403, "delete right");
    let r = a.get_file(F).await.ok();
    assert_eq!(r["version"], 2);
    assert_eq!(r["size"], 2600);

    // a only: the ACL, with which bob may grant himself more.
    a.acl_set(F, &[("user:bob@vo1", "a")]).await.ok();
    bob.get_file(F).await.refused(403, "have a");
    let acl = bob.acl_get(F).await.ok();
    assert_eq!(acl_pairs(&acl["access"]), pairs(&[("user:bob@vo1", "a")]));
    bob.acl_set(F, &[("user:bob@vo1", "ra")]).await.ok();
    assert_eq!(bob.get_file(F).await.ok()["rights"], "ra");
    bob.delete(F).await.refused(403, "delete right");

    // VO admins: admin and delete, no read.
    let acl = boss.acl_get(F).await.ok();
    assert_eq!(acl["owner"], "user:alice@vo1");
    boss.get_file(F)
        .await
        .refused(403, "you (user:boss@vo1) have da");
    boss.put_ex(F, 2, &exnode_of(id, 5, 1))
        .await
        .refused(403, "write right");

    // d only: delete.
    a.acl_set(F, &[("user:bob@vo1", "d")]).await.ok();
    bob.get_file(F).await.refused(403, "have d");
    let r = bob.delete(F).await.ok();
    assert_eq!(r["released"].as_array().unwrap().len(), 2);
    a.get_file(F)
        .await
        .refused(404, "no such file: /vo1/proj/f");

    // The owner of a directory has all rights on it; an admin may delete it.
    boss.delete("/vo1/proj").await.ok();
    a.stat("/vo1/proj")
        .await
        .refused(404, "no such file or directory");
}

/// Groups (by ID or by name), whole VOs, and the VO qualification of every
/// principal: a vo2 user with the same VO ID or group ID as a vo1 user gets
/// nothing from vo1 entries unless named with @vo2.
pub async fn groups_vos_and_cross_vo(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let carol_u = g.pki.user("carol", "vo1", "carol", &["physics"]);
    let dave_u = g.pki.user("dave", "vo1", "dave", &["chem"]);
    // vo2 users with vo1 users' VO IDs and group (same group ID and name).
    let alice2_u = g.pki.user("alice2", "vo2", "alice", &[]);
    let carol2_u = g.pki.user("carol2", "vo2", "carol", &["physics", "admins"]);
    let a = g.client(&alice_u);
    g.introduce(&[&alice_u]).await;
    a.mkdir("/vo1/proj").await.ok();
    a.create(F, 100).await;

    // Nobody of the group, and carol, has used the manager yet.
    a.acl_set(F, &[("group:physics@vo1", "r")])
        .await
        .refused(400, "unknown group physics@vo1");
    a.acl_set(F, &[("user:carol@vo1", "r")])
        .await
        .refused(400, "unknown user carol@vo1");
    a.acl_set(F, &[("user:alice@vo2", "r")])
        .await
        .refused(400, "unknown user alice@vo2");
    g.introduce(&[&carol_u, &dave_u, &alice2_u, &carol2_u])
        .await;
    let (carol, dave, alice2, carol2) = (
        g.client(&carol_u),
        g.client(&dave_u),
        g.client(&alice2_u),
        g.client(&carol2_u),
    );
    let who = carol2.get("/v1/whoami").await.ok();
    assert_eq!(who["principal"], "user:carol@vo2");
    assert_eq!(who["admin"], true);

    // Same VO ID in another VO: not the owner.
    alice2
        .get_file(F)
        .await
        .refused(403, "you (user:alice@vo2) have -");

    // A group by name resolves to its ID.
    let acl = a.acl_set(F, &[("group:physics@vo1", "r")]).await.ok();
    assert_eq!(
        acl_pairs(&acl["access"]),
        pairs(&[("group:gid-physics@vo1", "r")])
    );
    assert_eq!(carol.get_file(F).await.ok()["rights"], "r");
    dave.get_file(F)
        .await
        .refused(403, "(user:dave@vo1) have -");
    carol2
        .get_file(F)
        .await
        .refused(403, "(user:carol@vo2) have -");
    // ... and by ID.
    let acl = a.acl_set(F, &[("group:gid-physics@vo1", "rw")]).await.ok();
    assert_eq!(
        acl_pairs(&acl["access"]),
        pairs(&[("group:gid-physics@vo1", "rw")])
    );
    assert_eq!(carol.get_file(F).await.ok()["rights"], "rw");
    // The same group of vo2 is another group.
    a.acl_set(F, &[("group:physics@vo2", "r")]).await.ok();
    carol.get_file(F).await.refused(403, "have -");
    assert_eq!(carol2.get_file(F).await.ok()["rights"], "r");
    alice2.get_file(F).await.refused(403, "have -");

    // A whole VO.
    a.acl_set(F, &[("vo:vo1", "r")]).await.ok();
    for c in [&carol, &dave] {
        assert_eq!(c.get_file(F).await.ok()["rights"], "r");
    }
    alice2.get_file(F).await.refused(403, "have -");
    carol2.get_file(F).await.refused(403, "have -");
    a.acl_set(F, &[("vo:vo2", "r")]).await.ok();
    assert_eq!(alice2.get_file(F).await.ok()["rights"], "r");
    dave.get_file(F).await.refused(403, "have -");

    // Named with its VO, a vo2 user gets exactly that.
    a.acl_set(F, &[("user:alice@vo2", "rw"), ("vo:vo1", "r")])
        .await
        .ok();
    assert_eq!(alice2.get_file(F).await.ok()["rights"], "rw");
    carol2.get_file(F).await.refused(403, "have -");
    // A vo2 admin holds nothing on vo1's entries.
    carol2.delete(F).await.refused(403, "delete right");
    carol2.acl_get(F).await.refused(403, "admin right");

    // Union of matching entries.
    a.acl_set(
        F,
        &[
            ("group:physics@vo1", "w"),
            ("user:carol@vo1", "r"),
            ("vo:vo1", "d"),
        ],
    )
    .await
    .ok();
    assert_eq!(carol.get_file(F).await.ok()["rights"], "rwd");
    dave.get_file(F).await.refused(403, "have d");

    // Malformed entries.
    a.acl_set(F, &[("user:carol@vo1", "r"), ("user:carol@vo1", "w")])
        .await
        .refused(400, "user:carol@vo1 is listed twice");
    a.acl_set(F, &[("user:carol@vo1", "rx")])
        .await
        .refused(400, "bad rights");
    a.acl_set(F, &[("carol", "r")])
        .await
        .refused(400, "bad principal");
    a.acl_set(F, &[("role:x@vo1", "r")])
        .await
        .refused(400, "bad principal");
}

/// A directory's default ACL becomes the ACL of new files and the ACL and
/// default ACL of new subdirectories; changing it later leaves existing
/// children alone.
pub async fn default_acl_inheritance(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let carol_u = g.pki.user("carol", "vo1", "carol", &["physics"]);
    g.introduce(&[&alice_u, &bob_u, &carol_u]).await;
    let (a, bob, carol) = (g.client(&alice_u), g.client(&bob_u), g.client(&carol_u));

    a.mkdir("/vo1/shared").await.ok();
    let first = [("group:gid-physics@vo1", "rw"), ("user:bob@vo1", "r")];
    let acl = a
        .acl_default(
            "/vo1/shared",
            &[("group:physics@vo1", "rw"), ("user:bob@vo1", "r")],
        )
        .await
        .ok();
    assert_eq!(acl_pairs(&acl["default"]), pairs(&first));
    assert!(acl_pairs(&acl["access"]).is_empty());
    // The directory's own access is unchanged: bob cannot list it.
    bob.list("/vo1/shared").await.refused(403, "read right");

    let f1 = a.create("/vo1/shared/f1", 10).await;
    let acl = a.acl_get("/vo1/shared/f1").await.ok();
    assert_eq!(acl_pairs(&acl["access"]), pairs(&first));
    assert!(acl.get("default").is_none(), "a file has no default ACL");
    a.mkdir("/vo1/shared/sub").await.ok();
    let acl = a.acl_get("/vo1/shared/sub").await.ok();
    assert_eq!(acl_pairs(&acl["access"]), pairs(&first));
    assert_eq!(acl_pairs(&acl["default"]), pairs(&first));
    a.create("/vo1/shared/sub/f2", 10).await;
    let acl = a.acl_get("/vo1/shared/sub/f2").await.ok();
    assert_eq!(acl_pairs(&acl["access"]), pairs(&first));

    // The inherited entries work.
    assert_eq!(bob.get_file("/vo1/shared/f1").await.ok()["rights"], "r");
    assert_eq!(
        bob.list("/vo1/shared/sub").await.ok()["entries"][0]["path"],
        "/vo1/shared/sub/f2"
    );
    let r = carol
        .put_ex("/vo1/shared/f1", 1, &exnode_of(f1, 20, 1))
        .await
        .ok();
    assert_eq!(r["version"], 2);
    // carol may create in sub (w on the directory); the new file is hers.
    carol.create("/vo1/shared/sub/by-carol", 5).await;
    let st = carol.stat("/vo1/shared/sub/by-carol").await.ok();
    assert_eq!(st["owner"], "user:carol@vo1");
    assert_eq!(st["rights"], "rwda");

    // Change the default: existing children keep theirs.
    let second = [("user:bob@vo1", "rwda")];
    a.acl_default("/vo1/shared", &second).await.ok();
    for p in ["/vo1/shared/f1", "/vo1/shared/sub", "/vo1/shared/sub/f2"] {
        let acl = a.acl_get(p).await.ok();
        assert_eq!(acl_pairs(&acl["access"]), pairs(&first), "{p}");
    }
    assert_eq!(
        acl_pairs(&a.acl_get("/vo1/shared/sub").await.ok()["default"]),
        pairs(&first)
    );
    a.create("/vo1/shared/f3", 10).await;
    a.mkdir("/vo1/shared/sub2").await.ok();
    for p in ["/vo1/shared/f3", "/vo1/shared/sub2"] {
        let acl = a.acl_get(p).await.ok();
        assert_eq!(acl_pairs(&acl["access"]), pairs(&second), "{p}");
    }
    assert_eq!(bob.get_file("/vo1/shared/f3").await.ok()["rights"], "rwda");
    carol
        .get_file("/vo1/shared/f3")
        .await
        .refused(403, "have -");
    assert_eq!(bob.get_file("/vo1/shared/f1").await.ok()["rights"], "r");

    // Only directories have defaults; some entries must be given.
    a.post(
        "/v1/acl/set",
        json!({ "path": "/vo1/shared/f1", "default": [] }),
    )
    .await
    .refused(400, "only directories have default ACLs");
    a.post("/v1/acl/set", json!({ "path": "/vo1/shared" }))
        .await
        .refused(400, "give `access` and/or `default`");
}

/// Taking a right away, and removing a member, take effect at the next
/// request; restoring a member works; only VO admins administer members.
pub async fn revocation(db: Db) {
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
    let f = "/vo1/f";
    a.create(f, 10).await;
    a.acl_set(f, &[("user:bob@vo1", "r")]).await.ok();
    let t = bob.ticket(f).await.ok();
    assert!(t["ticket"].as_str().is_some_and(|s| !s.is_empty()));
    bob.get_file(f).await.ok();

    // The ACL entry is removed: the next get and ticket are refused.
    a.acl_set(f, &[]).await.ok();
    bob.get_file(f).await.refused(403, "read right on /vo1/f");
    bob.ticket(f).await.refused(403, "read right on /vo1/f");

    // A member removed by a VO admin.
    a.acl_set(f, &[("user:bob@vo1", "r"), ("user:carol@vo1", "r")])
        .await
        .ok();
    bob.get_file(f).await.ok();
    let r = boss
        .post("/v1/vos/vo1/members/remove", json!({ "vo_id": "bob" }))
        .await
        .ok();
    assert_eq!(r["removed"], true);
    let removed = "VO vo1 removed member bob from this metadata manager (by user:boss@vo1)";
    bob.get_file(f).await.refused(403, removed);
    bob.ticket(f).await.refused(403, removed);
    bob.get("/v1/whoami").await.refused(403, removed);
    bob.list("/vo1").await.refused(403, removed);
    // Others are unaffected.
    carol.get_file(f).await.ok();
    a.get_file(f).await.ok();
    let members = boss.get("/v1/vos/vo1/members").await.ok();
    let row = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["vo_id"] == "bob")
        .cloned()
        .unwrap();
    assert!(row["removed_at"].is_i64(), "{row}");
    assert_eq!(row["removed_by"], "user:boss@vo1");
    let carol_row = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["vo_id"] == "carol")
        .cloned()
        .unwrap();
    assert!(carol_row["removed_at"].is_null());

    // Not by non-admins, nor by another VO's admins; not oneself; not
    // unknown members.
    let needs = "administering VO vo1 needs its group \"admins\"";
    carol
        .post("/v1/vos/vo1/members/remove", json!({ "vo_id": "alice" }))
        .await
        .refused(403, needs);
    carol
        .post("/v1/vos/vo1/members/restore", json!({ "vo_id": "bob" }))
        .await
        .refused(403, needs);
    carol.get("/v1/vos/vo1/members").await.refused(403, needs);
    boss2
        .post("/v1/vos/vo1/members/remove", json!({ "vo_id": "alice" }))
        .await
        .refused(403, needs);
    boss2
        .post("/v1/vos/vo1/members/restore", json!({ "vo_id": "bob" }))
        .await
        .refused(403, needs);
    a.get_file(f).await.ok();
    boss.post("/v1/vos/vo1/members/remove", json!({ "vo_id": "boss" }))
        .await
        .refused(400, "you cannot remove yourself");
    boss.post("/v1/vos/vo1/members/remove", json!({ "vo_id": "nobody" }))
        .await
        .refused(404, "unknown member nobody@vo1");
    bob.get_file(f).await.refused(403, removed);

    // Restored.
    let r = boss
        .post("/v1/vos/vo1/members/restore", json!({ "vo_id": "bob" }))
        .await
        .ok();
    assert_eq!(r["removed"], false);
    assert_eq!(bob.get_file(f).await.ok()["rights"], "r");
    bob.ticket(f).await.ok();

    // An admin may add a member ahead of their first contact, so that ACLs
    // can name them.
    boss.post("/v1/vos/vo1/members", json!({ "vo_id": "newcomer" }))
        .await
        .ok();
    a.acl_set(f, &[("user:newcomer@vo1", "r")]).await.ok();
    carol
        .post("/v1/vos/vo1/members", json!({ "vo_id": "x" }))
        .await
        .refused(403, needs);
}

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

    let check = |r: &Value, file: Uuid, user: &super::User| -> FileTicket {
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

/// Every kind of malformed request is refused with 400 (413 for a large
/// exNode) and a message that says what is wrong.
pub async fn bad_input(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            max_exnode: "4KiB",
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob2_u = g.pki.user("bob2", "vo2", "bob2", &[]);
    g.introduce(&[&alice_u, &bob2_u]).await;
    let a = g.client(&alice_u);
    let small = exnode::to_xml(&exnode_of(Uuid::new_v4(), 10, 1));

    // Paths, on every endpoint that takes one.
    let bad_paths: &[(&str, &str)] = &[
        ("/vo1/../x", "`.` and `..` are not allowed"),
        ("/vo1/./x", "`.` and `..` are not allowed"),
        ("//x", "must start with a VO name"),
        ("/vo1//x", "has an empty component (`//`)"),
        ("vo1/x", "must be absolute"),
        ("", "must be absolute"),
        ("/.vo/x", "must start with a VO name"),
        ("/vo 1/x", "must start with a VO name"),
        ("/vo1/a\nb", "control characters are not allowed"),
        ("/vo1/a\u{0}b", "control characters are not allowed"),
    ];
    let long = format!("/vo1/{}", "n".repeat(256));
    let deep = format!("/vo1{}", "/d".repeat(65));
    let huge = format!("/vo1/{}", "a/".repeat(2100));
    let mut all: Vec<(String, &str)> = bad_paths.iter().map(|(p, m)| (p.to_string(), *m)).collect();
    all.push((long, "component longer than 255 bytes"));
    all.push((deep, "deeper than 64"));
    all.push((huge, "path longer than 4096 bytes"));
    for (p, msg) in &all {
        a.stat(p).await.refused(400, msg);
        a.list(p).await.refused(400, msg);
        a.mkdir(p).await.refused(400, msg);
        a.put_doc(p, 0, &small, &[]).await.refused(400, msg);
        a.get_file(p).await.refused(400, msg);
        a.ticket(p).await.refused(400, msg);
        a.delete(p).await.refused(400, msg);
        a.acl_get(p).await.refused(400, msg);
        a.mv(p, "/vo1/y").await.refused(400, msg);
        a.mv("/vo1/y", p).await.refused(400, msg);
    }
    // Nothing was created on the way.
    let root = a.list("/vo1").await.ok();
    assert_eq!(root["entries"].as_array().unwrap().len(), 0, "{root}");

    // VO roots.
    a.mkdir("/vo1").await.refused(400, "/vo1 is a VO root");
    a.delete("/vo1").await.refused(400, "/vo1 is a VO root");
    a.put_doc("/vo1", 0, &small, &[])
        .await
        .refused(400, "/vo1 is a VO root, not a file");
    a.mv("/vo1", "/vo1/x")
        .await
        .refused(400, "a VO root cannot be moved");
    // A tree whose VO root does not exist: not created for an outsider.
    a.put_doc("/vo9/x", 0, &small, &[])
        .await
        .refused(404, "no such file or directory: /vo9");
    a.mkdir_p("/vo9/a/b")
        .await
        .refused(404, "no such file or directory: /vo9");
    a.stat("/vo9")
        .await
        .refused(404, "no such file or directory: /vo9");
    // Another VO's tree.
    g.client(&bob2_u).list("/vo2").await.ok();
    a.list("/vo2").await.refused(403, "read right on /vo2");
    a.put_doc("/vo2/x", 0, &small, &[])
        .await
        .refused(403, "write right on /vo2");
    a.mkdir("/vo2/x").await.refused(403, "write right on /vo2");
    // Missing parents, files as parents.
    a.mkdir("/vo1/missing/x")
        .await
        .refused(404, "no such file or directory: /vo1/missing");
    a.put_doc("/vo1/missing/x", 0, &small, &[])
        .await
        .refused(404, "no such file or directory: /vo1/missing");
    a.create("/vo1/file", 10).await;
    a.mkdir("/vo1/file/x")
        .await
        .refused(400, "/vo1/file is not a directory");
    a.put_doc("/vo1/file/x", 0, &small, &[])
        .await
        .refused(400, "/vo1/file is not a directory");
    a.mkdir("/vo1/dir").await.ok();
    a.put_doc("/vo1/dir", 1, &small, &[])
        .await
        .refused(400, "/vo1/dir is a directory");
    a.post(
        "/v1/list",
        json!({ "path": "/vo1", "after": "a/b", "limit": 5 }),
    )
    .await
    .refused(400, "`after` is a name, not a path");

    // Oversized exNodes: over max_exnode, and over the request body limit.
    let big = exnode::to_xml(&exnode_of(Uuid::new_v4(), 20 * super::BLOCK, 1));
    assert!(big.len() > 4096, "{}", big.len());
    a.put_doc("/vo1/big", 0, &big, &[]).await.refused(
        413,
        &format!(
            "exNode of {} bytes; this metadata manager accepts at most 4096",
            big.len()
        ),
    );
    let enormous = format!("{small}{}", " ".repeat(3 << 20));
    a.put_doc("/vo1/big", 0, &enormous, &[]).await.refused(
        413,
        "bad request body: Failed to buffer the request body: length limit exceeded",
    );
    a.stat("/vo1/big").await.refused(404, "no such file");

    // Inconsistent exNodes.
    let id = Uuid::new_v4();
    let mut overlap = exnode_of(id, 1500, 1);
    overlap.mappings = vec![mapping(0, 1000, 1000, "a"), mapping(500, 1000, 1000, "b")];
    a.put_ex("/vo1/x", 0, &overlap).await.refused(
        400,
        "exNode refused: mappings 0 and 1 overlap inconsistently: [0, 1000) and [500, 1500)",
    );
    let mut gap = exnode_of(id, 2000, 1);
    gap.mappings = vec![mapping(0, 1000, 1000, "a"), mapping(1500, 500, 500, "b")];
    a.put_ex("/vo1/x", 0, &gap).await.refused(
        400,
        "exNode refused: bytes [1000, 1500) of the file are held by no mapping",
    );
    let mut beyond = exnode_of(id, 500, 1);
    beyond.mappings = vec![mapping(0, 1000, 1000, "a")];
    a.put_ex("/vo1/x", 0, &beyond)
        .await
        .refused(400, "beyond the file size 500");
    let mut no_read = exnode_of(id, 100, 1);
    no_read.mappings[0].read = None;
    a.put_ex("/vo1/x", 0, &no_read)
        .await
        .refused(400, "has no read capability");
    let mut anonymous = exnode_of(id, 100, 1);
    anonymous.file = None;
    a.put_ex("/vo1/x", 0, &anonymous)
        .await
        .refused(400, "exNode refused: it has no file UUID");
    for garbage in ["", "not xml at all", "<exnode", "<a></b>", "\u{0}\u{1}"] {
        a.put_doc("/vo1/x", 0, garbage, &[])
            .await
            .refused(400, "exNode refused");
    }
    let doctype = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE exnode [<!ENTITY big \"{}\">]>\n{}",
        "x".repeat(100),
        small
            .split_once("?>")
            .map(|(_, rest)| rest)
            .unwrap_or(&small)
    );
    a.put_doc("/vo1/x", 0, &doctype, &[])
        .await
        .refused(400, "DTDs and entity declarations are refused");
    a.stat("/vo1/x").await.refused(404, "no such file");

    // ACLs naming nobody known.
    a.acl_set("/vo1/file", &[("user:ghost@vo1", "r")])
        .await
        .refused(400, "unknown user ghost@vo1");
    a.acl_set("/vo1/file", &[("group:ghosts@vo1", "r")])
        .await
        .refused(400, "unknown group ghosts@vo1");
    let many: Vec<(String, String)> = (0..257)
        .map(|i| (format!("user:u{i}@vo1"), "r".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(p, r)| (p.as_str(), r.as_str())).collect();
    a.acl_set("/vo1/file", &many)
        .await
        .refused(400, "more than 256 ACL entries");

    // Wrong JSON.
    a.post("/v1/stat", json!({ "path": "/vo1", "bogus": 1 }))
        .await
        .refused(400, "unknown field `bogus`");
    a.post("/v1/stat", json!({}))
        .await
        .refused(400, "missing field `path`");
    a.post("/v1/stat", json!({ "path": 5 }))
        .await
        .refused(400, "bad request body");
    a.post("/v1/put", json!({ "path": "/vo1/y", "exnode": small }))
        .await
        .refused(400, "missing field `base_version`");
    a.post(
        "/v1/put",
        json!({ "path": "/vo1/y", "base_version": -1, "exnode": small }),
    )
    .await
    .refused(400, "bad request body");
    a.post_raw("/v1/stat", b"{not json")
        .await
        .refused(400, "bad request body");
    a.post(
        "/v1/acl/set",
        json!({ "path": "/vo1/file", "access": [{ "principal": "vo:vo1" }] }),
    )
    .await
    .refused(400, "missing field `rights`");
    a.mv("/vo1/dir", "/vo1/dir/inside")
        .await
        .refused(400, "cannot move /vo1/dir into itself");
    a.post("/v1/usage", json!({ "vo": "bad vo" }))
        .await
        .refused(400, "bad VO name");
    a.put("/v1/keys/me", json!({ "public_key": "x25519 c2hvcnQ=" }))
        .await
        .refused(400, "`x25519 <base64 of 32 bytes>`");
    a.put("/v1/keys/me", json!({ "public_key": "rsa AAAA" }))
        .await
        .refused(400, "`x25519 <base64 of 32 bytes>`");
    a.put_doc("/vo1/y", 0, &small, &[("alice", "W")])
        .await
        .refused(400, "bad key recipient \"alice\"");
    a.put_doc("/vo1/y", 0, &small, &[("user:alice@vo1", "W\u{1}")])
        .await
        .refused(400, "printable ASCII");
    a.put_doc(
        "/vo1/y",
        0,
        &small,
        &[("user:alice@vo1", "W"), ("user:alice@vo1", "V")],
    )
    .await
    .refused(400, "two wrapped keys for user:alice@vo1");
    a.post("/v1/keys/lookup", json!({ "recipient": "group:g@vo1" }))
        .await
        .refused(400, "bad key recipient");
    // The manager still serves.
    a.stat("/vo1/file").await.ok();
}

/// Who may talk to the manager at all: a proxy with VO attributes from a
/// trusted CA and the VO's pinned attribute authority.
pub async fn authentication(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &["admins", "users"]);
    let a = g.client(&alice_u);
    let who = a.get("/v1/whoami").await.ok();
    assert_eq!(who["vo"], "vo1");
    assert_eq!(who["vo_id"], "alice");
    assert_eq!(who["principal"], "user:alice@vo1");
    assert_eq!(who["admin"], true);
    assert_eq!(
        who["groups"],
        json!([{ "id": "gid-admins", "name": "admins" }, { "id": "gid-users", "name": "users" }])
    );
    assert!(who["public_key"].is_null());
    assert!(who["credential_not_after"].as_i64().unwrap() > unix_now());

    // No client certificate: 401 on every call.
    let anon = g.anonymous();
    let need = "a proxy credential with VO attributes is required";
    anon.get("/v1/whoami").await.refused(401, need);
    anon.stat("/vo1").await.refused(401, need);
    anon.get_file("/vo1/x").await.refused(401, need);
    anon.get("/v1/vos/vo1/members").await.refused(401, need);

    // A VO whose attribute authority the manager does not pin; vo1
    // attributes signed by vo2's authority; a certificate of a CA the
    // manager does not trust (with its own AA). The TLS handshake refuses
    // them (or, should the chain pass, the API answers 403).
    let v3 = g.pki.user("v3", "vo3", "v3", &[]);
    let aa2 = &g.pki.aas.iter().find(|(v, _)| v == "vo2").unwrap().1;
    let forged = mint_user(&g.pki.ca, aa2, "forged", "vo1", "forged", &["admins"]);
    let rogue_ca = ibp_auth::pki::Authority::new_ca(super::ORG, "Rogue CA", 30).unwrap();
    let rogue_aa = rogue_ca.new_aa(super::ORG, "vo1", 30).unwrap();
    let rogue = mint_user(&rogue_ca, &rogue_aa, "rogue", "vo1", "rogue", &["admins"]);
    for (what, u) in [
        ("unpinned VO", &v3),
        ("wrong AA", &forged),
        ("untrusted CA", &rogue),
    ] {
        match g
            .client_with(&u.credential)
            .try_call(ibp_https::Method::GET, "/v1/whoami", None)
            .await
        {
            Err(e) => assert!(
                !matches!(
                    e,
                    ibp_https::HttpError::Connect { .. } | ibp_https::HttpError::Timeout { .. }
                ),
                "{what}: {e}"
            ),
            Ok(r) => {
                r.refused(403, "credential refused");
            }
        }
    }
    // None of them became a member.
    let members = a.get("/v1/vos/vo1/members").await.ok();
    let ids: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["vo_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice"]);
    // Unknown routes.
    assert_eq!(a.get("/v1/nothing").await.status, 404);
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
    assert_eq!(st["stored"], 2500 + 2 * 1200);
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
    a.put_ex(f, 0, &exnode_of(vid, 1500, 1)).await.ok();
    a.put_ex(f, 1, &exnode_of(vid, 2500, 2)).await.ok();
    a.put_ex(f, 2, &exnode_of(vid, 500, 3)).await.ok();
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
    let want2: BTreeSet<String> = manage_caps(vid, 2500, 2).into_iter().collect();
    assert_eq!(caps(&released[0]), want2);
    assert_eq!(want2.len(), 6);
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
    assert_eq!(
        caps(&released[1]),
        manage_caps(vid, 500, 3).into_iter().collect()
    );
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

    // A new version has its own keys.
    let ex2 = exnode::to_xml(&encrypted_exnode(id, 3000));
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
}

/// Usage per owner: members see their own row, VO admins every row and
/// the totals; logical bytes count current versions, stored bytes every
/// version's replicas.
pub async fn usage(db: Db) {
    let g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    let boss2_u = g.pki.user("boss2", "vo2", "boss2", &["admins"]);
    g.introduce(&[&alice_u, &bob_u, &boss_u, &boss2_u]).await;
    let (a, bob, boss, boss2) = (
        g.client(&alice_u),
        g.client(&bob_u),
        g.client(&boss_u),
        g.client(&boss2_u),
    );
    let a1 = Uuid::new_v4();
    a.put_ex("/vo1/a1", 0, &exnode_of(a1, 3000, 2)).await.ok();
    a.put_ex("/vo1/a1", 1, &exnode_of(a1, 1000, 3)).await.ok();
    a.put_ex("/vo1/a2", 0, &exnode_of(Uuid::new_v4(), 500, 1))
        .await
        .ok();
    bob.put_ex("/vo1/b1", 0, &exnode_of(Uuid::new_v4(), 2000, 1))
        .await
        .ok();
    let alice_row = json!({
        "owner": "user:alice@vo1", "files": 2, "versions": 3,
        "logical": 1000 + 500, "stored": 6000 + 3000 + 500,
    });
    let bob_row = json!({
        "owner": "user:bob@vo1", "files": 1, "versions": 1, "logical": 2000, "stored": 2000,
    });

    let r = a.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r, json!({ "vo": "vo1", "users": [alice_row.clone()] }));
    let r = bob.post("/v1/usage", json!({ "vo": "vo1" })).await.ok();
    assert_eq!(r, json!({ "vo": "vo1", "users": [bob_row.clone()] }));
    let r = boss.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r["users"], json!([alice_row, bob_row]));
    assert_eq!(
        r["total"],
        json!({ "files": 3, "versions": 4, "logical": 3500, "stored": 11500 })
    );
    // Another VO's usage: nothing of theirs, no totals.
    let r = boss2.post("/v1/usage", json!({ "vo": "vo1" })).await.ok();
    assert_eq!(r, json!({ "vo": "vo1", "users": [] }));
    let r = a.post("/v1/usage", json!({ "vo": "vo2" })).await.ok();
    assert_eq!(r, json!({ "vo": "vo2", "users": [] }));

    // Deleting an old version frees stored bytes, not logical ones.
    a.post("/v1/delete", json!({ "path": "/vo1/a1", "version": 1 }))
        .await
        .ok();
    let r = a.post("/v1/usage", json!({})).await.ok();
    assert_eq!(r["users"][0]["versions"], 2);
    assert_eq!(r["users"][0]["logical"], 1500);
    assert_eq!(r["users"][0]["stored"], 3500);
    // A moved file still counts for its owner.
    a.mkdir("/vo1/d").await.ok();
    a.mv("/vo1/a2", "/vo1/d/a2").await.ok();
    let r = boss.post("/v1/usage", json!({})).await.ok();
    assert_eq!(
        r["total"],
        json!({ "files": 3, "versions": 3, "logical": 3500, "stored": 5500 })
    );
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
    assert_eq!(r1["exnode"], r0["exnode"]);
    // Both sign with the same key.
    let trust = g.pki.client_trust_store();
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
    a1.delete("/vo1/d/new").await.ok();
    drop(second);
}
