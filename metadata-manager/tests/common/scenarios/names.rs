//! Members by name (`/v1/names/resolve`, `/v1/names/of`): names from
//! certificate subjects, within the caller's VO only, ambiguous names
//! answered with every VO ID, removed members left out.

use serde_json::json;

use crate::common::{Db, Grid, Settings};

pub async fn names(db: Db) {
    let g = Grid::start(db, Settings::default());
    // CN=alice twice in vo1 (two VO IDs), bob once, and a bob in vo2.
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let alice2_u = g.pki.user("alice", "vo1", "alice-second", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    let carol_u = g.pki.user("carol", "vo1", "carol", &[]);
    let bob2_u = g.pki.user("bob", "vo2", "bob-of-vo2", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    g.introduce(&[&alice_u, &alice2_u, &bob_u, &carol_u, &bob2_u, &boss_u])
        .await;
    let (carol, bob2, boss) = (g.client(&carol_u), g.client(&bob2_u), g.client(&boss_u));

    let r = carol
        .post(
            "/v1/names/resolve",
            json!({"names": ["bob", "alice", "nobody", "Bob"]}),
        )
        .await
        .ok();
    assert_eq!(r["vo"], "vo1");
    assert_eq!(
        r["resolved"],
        json!([
            {"name": "bob", "vo_ids": ["bob"]},
            {"name": "alice", "vo_ids": ["alice", "alice-second"]},
            {"name": "nobody", "vo_ids": []},
            {"name": "Bob", "vo_ids": []},
        ]),
        "exact names, every VO ID of an ambiguous one, vo2's bob not seen from vo1"
    );
    // From vo2, its own bob only.
    let r = bob2
        .post("/v1/names/resolve", json!({"names": ["bob", "carol"]}))
        .await
        .ok();
    assert_eq!(r["vo"], "vo2");
    assert_eq!(
        r["resolved"],
        json!([{"name": "bob", "vo_ids": ["bob-of-vo2"]}, {"name": "carol", "vo_ids": []}])
    );

    let r = carol
        .post(
            "/v1/names/of",
            json!({"vo_ids": ["bob", "alice", "alice-second", "bob-of-vo2", "ghost"]}),
        )
        .await
        .ok();
    assert_eq!(
        r["names"],
        json!([
            {"vo_id": "bob", "name": "bob", "unique": true},
            {"vo_id": "alice", "name": "alice", "unique": false},
            {"vo_id": "alice-second", "name": "alice", "unique": false},
        ]),
        "another VO's and unknown VO IDs are left out"
    );

    // A removed member has no name any more.
    boss.post("/v1/vos/vo1/members/remove", json!({ "vo_id": "bob" }))
        .await
        .ok();
    let r = carol
        .post("/v1/names/resolve", json!({"names": ["bob"]}))
        .await
        .ok();
    assert_eq!(r["resolved"], json!([{"name": "bob", "vo_ids": []}]));

    // Bad input: too many names, too long a name, unknown fields.
    let many: Vec<String> = (0..1001).map(|i| format!("n{i}")).collect();
    carol
        .post("/v1/names/resolve", json!({ "names": many }))
        .await
        .refused(400, "at most 1000 names");
    carol
        .post("/v1/names/resolve", json!({ "names": ["x".repeat(257)] }))
        .await
        .refused(400, "at most 256 bytes");
    carol
        .post("/v1/names/of", json!({ "vo_ids": [], "vo": "vo2" }))
        .await
        .refused(400, "unknown field");
    // Without a credential: refused.
    g.anonymous()
        .post("/v1/names/resolve", json!({"names": ["bob"]}))
        .await
        .refused(401, "");
}

/// Display names (`/v1/names/set`): chosen by the member, resolved and
/// shown like certified names (a pseudonymous member's `pseudonym:<p>`
/// keeps resolving), unique within a VO, never with `:` or `@`, seen by a
/// VO admin, cleared with `null`.
pub async fn display_names(db: Db) {
    let g = Grid::start(db, Settings::default());
    let pseud_u = g
        .pki
        .user("pseudonym:abcdefghijklmnop", "vo1", "p-member", &[]);
    let carol_u = g.pki.user("carol", "vo1", "carol", &[]);
    let boss_u = g.pki.user("boss", "vo1", "boss", &["admins"]);
    let other_u = g.pki.user("dave", "vo2", "dave-of-vo2", &[]);
    g.introduce(&[&pseud_u, &carol_u, &boss_u, &other_u]).await;
    let (pseud, carol, boss, other) = (
        g.client(&pseud_u),
        g.client(&carol_u),
        g.client(&boss_u),
        g.client(&other_u),
    );

    let r = pseud
        .post("/v1/names/set", json!({"name": "  Alice L. "}))
        .await
        .ok();
    assert_eq!(
        r,
        json!({"vo": "vo1", "vo_id": "p-member", "name": "Alice L."}),
        "trimmed"
    );
    let r = carol
        .post(
            "/v1/names/resolve",
            json!({"names": ["Alice L.", "pseudonym:abcdefghijklmnop"]}),
        )
        .await
        .ok();
    assert_eq!(
        r["resolved"],
        json!([
            {"name": "Alice L.", "vo_ids": ["p-member"]},
            {"name": "pseudonym:abcdefghijklmnop", "vo_ids": ["p-member"]},
        ])
    );
    let r = carol
        .post("/v1/names/of", json!({"vo_ids": ["p-member", "carol"]}))
        .await
        .ok();
    assert_eq!(
        r["names"],
        json!([
            {"vo_id": "p-member", "name": "Alice L.", "unique": true},
            {"vo_id": "carol", "name": "carol", "unique": true},
        ])
    );
    let w = pseud.get("/v1/whoami").await.ok();
    assert_eq!(w["display_name"], "Alice L.");

    // Taken (chosen or certified, letter case aside), or looking certified.
    carol
        .post("/v1/names/set", json!({"name": "alice l."}))
        .await
        .refused(409, "another member of VO vo1 is called");
    pseud
        .post("/v1/names/set", json!({"name": "Carol"}))
        .await
        .refused(409, "another member of VO vo1 is called");
    for bad in ["", "   ", "pseudonym:x", "carol@vo1", "a\nb"] {
        carol
            .post("/v1/names/set", json!({ "name": bad }))
            .await
            .refused(400, "display name");
    }
    carol
        .post("/v1/names/set", json!({"name": "x".repeat(65)}))
        .await
        .refused(400, "1 to 64 bytes");
    // A member's own certified name is theirs to choose; another VO's
    // members do not count.
    carol
        .post("/v1/names/set", json!({"name": "carol"}))
        .await
        .ok();
    other
        .post("/v1/names/set", json!({"name": "Alice L."}))
        .await
        .ok();

    // The VO admin's list.
    let m = boss.get("/v1/vos/vo1/members").await.ok();
    let row = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vo_id"] == "p-member")
        .cloned()
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(row["display_name"], "Alice L.", "{m}");
    assert!(
        row["subject"]
            .as_str()
            .unwrap()
            .contains("CN=pseudonym:abcdefghijklmnop"),
        "{m}"
    );

    // Cleared: the chosen name resolves no more, the certified one does.
    let r = pseud
        .post("/v1/names/set", json!({ "name": null }))
        .await
        .ok();
    assert_eq!(r["name"], serde_json::Value::Null);
    let r = carol
        .post(
            "/v1/names/resolve",
            json!({"names": ["Alice L.", "pseudonym:abcdefghijklmnop"]}),
        )
        .await
        .ok();
    assert_eq!(
        r["resolved"],
        json!([
            {"name": "Alice L.", "vo_ids": []},
            {"name": "pseudonym:abcdefghijklmnop", "vo_ids": ["p-member"]},
        ])
    );
    carol
        .post("/v1/names/set", json!({"name": "x", "vo": "vo2"}))
        .await
        .refused(400, "unknown field");
    g.anonymous()
        .post("/v1/names/set", json!({"name": "x"}))
        .await
        .refused(401, "");
}
