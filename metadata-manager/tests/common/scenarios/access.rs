//! Access control: rights, groups and VOs, default ACLs, revocation.

use serde_json::json;
use uuid::Uuid;

use crate::common::{acl_pairs, exnode_of, Db, Grid, Settings};

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
    // The right is checked before the exNode is parsed.
    bob.put_doc(F, 1, "<exnode not even xml", &[])
        .await
        .refused(403, "write right");
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
    // The right is checked before the exNode is parsed.
    bob.put_doc(F, 1, "<exnode not even xml", &[])
        .await
        .refused(403, "write right");
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
    // A put is refused before its exNode is read: a malformed one gets
    // the removal, not a parse error.
    bob.put_doc(f, 1, "<exnode not even xml", &[])
        .await
        .refused(403, removed);
    bob.put_doc("/vo1/new", 0, "<exnode not even xml", &[])
        .await
        .refused(403, removed);
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
