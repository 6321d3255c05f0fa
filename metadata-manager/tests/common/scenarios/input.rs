//! Refusals: malformed requests and unacceptable credentials.

use ibp_auth::unix_now;
use serde_json::json;
use uuid::Uuid;

use crate::common::{exnode_of, mapping, mint_user, Db, Grid, Settings};

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
    let big = exnode::to_xml(&exnode_of(Uuid::new_v4(), 20 * crate::common::BLOCK, 1));
    assert!(big.len() > 4096, "{}", big.len());
    a.put_doc("/vo1/big", 0, &big, &[]).await.refused(
        413,
        &format!(
            "exNode of {} bytes; this metadata manager accepts at most 4096",
            big.len()
        ),
    );
    // The server answers before reading the whole body and closes the
    // connection, so a client still sending may see a reset instead of the
    // answer: retry a few times for the answer itself.
    let enormous = format!("{small}{}", " ".repeat(3 << 20));
    let body =
        serde_json::to_vec(&json!({ "path": "/vo1/big", "base_version": 0, "exnode": enormous }))
            .unwrap();
    let mut answer = None;
    for _ in 0..5 {
        match a
            .try_call(ibp_https::Method::POST, "/v1/put", Some(body.clone()))
            .await
        {
            Ok(r) => {
                answer = Some(r);
                break;
            }
            Err(e) => assert!(
                !matches!(
                    e,
                    ibp_https::HttpError::Connect { .. } | ibp_https::HttpError::Timeout { .. }
                ),
                "{e}"
            ),
        }
    }
    answer
        .expect("an answer to an oversized body in 5 tries")
        .refused(
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
    // An entry without rights would grant nothing (rights only add up).
    a.acl_set("/vo1/file", &[("vo:vo1", "-")])
        .await
        .refused(400, "an entry without rights grants nothing");
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
    let rogue_ca = ibp_auth::pki::Authority::new_ca(crate::common::ORG, "Rogue CA", 30).unwrap();
    let rogue_aa = rogue_ca.new_aa(crate::common::ORG, "vo1", 30).unwrap();
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
    // Attributes this manager cannot name in ACLs (a VO ID outside
    // A-Za-z0-9._:-, e.g. with the `@` that ends the ID in `user:ID@VO`)
    // are refused up front, not stored.
    let at = g.pki.user("at", "vo1", "bob@vo2", &[]);
    let c = g.client(&at);
    c.get("/v1/whoami")
        .await
        .refused(403, "VO ID \"bob@vo2\" cannot be used here");
    c.put_ex("/vo1/c", 0, &exnode_of(uuid::Uuid::new_v4(), 5, 1))
        .await
        .refused(403, "VO ID");
    // None of them became a member.
    let members = a.get("/v1/vos/vo1/members").await.ok();
    let ids: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["vo_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice"]);
    // A VO ID with `:` (as some attribute authorities write them) is
    // fine, and can be named in an ACL.
    let colon = g.pki.user("colon", "vo1", "vo1:0042", &[]);
    let cc = g.client(&colon);
    assert_eq!(
        cc.get("/v1/whoami").await.ok()["principal"],
        "user:vo1:0042@vo1"
    );
    a.post("/v1/mkdir", json!({"path": "/vo1/shared-colon"}))
        .await
        .ok();
    let acl = a
        .post(
            "/v1/acl/set",
            json!({"path": "/vo1/shared-colon", "access": [{"principal": "user:vo1:0042@vo1", "rights": "r"}]}),
        )
        .await
        .ok();
    assert_eq!(acl["access"][0]["principal"], "user:vo1:0042@vo1");
    cc.post("/v1/list", json!({"path": "/vo1/shared-colon"}))
        .await
        .ok();
    // Unknown routes.
    assert_eq!(a.get("/v1/nothing").await.status, 404);
}
