//! Members by name on a real grid (issue 19: "owners and ACL entries by
//! name (`alice@vo1`), not only by VO ID; `lors share PATH alice@vo1` by
//! name").

mod common;

use common::*;
use ibp_grid::grid::GridOptions;

/// The VO ID `lors whoami --json` gives `user`.
fn vo_id(g: &ibp_grid::grid::Grid, user: &str) -> String {
    let w: serde_json::Value =
        serde_json::from_str(&ok(lors(g, user, &["whoami", "--json"]))).expect("whoami --json");
    w["vo_id"].as_str().expect("vo_id").to_owned()
}

#[test]
fn share_unshare_and_acls_by_name() {
    let _timer = Timer::start("share_unshare_and_acls_by_name");
    let g = start(GridOptions::default());
    for u in ["alice", "bob", "carol"] {
        keys_init(&g, u);
    }
    let (alice_id, bob_id) = (vo_id(&g, "alice"), vo_id(&g, "bob"));
    let who = ok(lors(&g, "bob", &["whoami"]));
    assert!(who.contains("name      : bob@vo1\n"), "{who}");

    let data = bytes(200_000, 7);
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice"]));
    upload(&g, "alice", "f.bin", &data, "/vo1/alice/f", &[]);
    // bob cannot read it yet.
    let o = lors(&g, "bob", &["download", "/vo1/alice/f", "-"]);
    assert_eq!(code(&o), 3, "{}", text(&o));

    // Shared by name: the message names the principal, bob reads the file.
    let out = ok(lors(&g, "alice", &["share", "/vo1/alice/f", "bob@vo1"]));
    assert!(out.contains(&format!("user:{bob_id}@vo1")), "{out}");
    download_is(&g, "bob", "/vo1/alice/f", &data, "shared by name");

    // acl get shows names, and the owner with both forms; --ids the IDs.
    let acl = ok(lors(&g, "alice", &["acl", "get", "/vo1/alice/f"]));
    assert!(
        acl.contains(&format!(
            "# owner: alice@vo1 (user:{alice_id}@vo1, all rights)"
        )),
        "{acl}"
    );
    assert!(acl.contains("\nbob@vo1=r\n"), "{acl}");
    assert!(!acl.contains(&bob_id), "{acl}");
    let ids = ok(lors(&g, "alice", &["acl", "get", "--ids", "/vo1/alice/f"]));
    assert!(ids.contains(&format!("user:{bob_id}@vo1=r")), "{ids}");

    // acl set takes names too (and replaces the list).
    ok(lors(
        &g,
        "alice",
        &["acl", "set", "/vo1/alice/f", "--access", "carol@vo1=r"],
    ));
    let acl = ok(lors(&g, "alice", &["acl", "get", "/vo1/alice/f"]));
    assert!(acl.contains("\ncarol@vo1=r\n"), "{acl}");
    assert!(!acl.contains("bob@vo1"), "replaced: {acl}");

    // Unknown, foreign-VO and malformed names are refused before anything
    // changes.
    let o = lors(&g, "alice", &["share", "/vo1/alice/f", "nobody@vo1"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(
        stderr(&o).contains("no member of VO vo1 is called \"nobody\""),
        "{}",
        text(&o)
    );
    let o = lors(&g, "alice", &["share", "/vo1/alice/f", "bob@vo2"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        stderr(&o).contains("names are looked up in your own VO (vo1) only"),
        "{}",
        text(&o)
    );
    let o = lors(
        &g,
        "alice",
        &["acl", "set", "/vo1/alice/f", "--access", "nobody@vo1=r"],
    );
    assert_eq!(code(&o), 7, "{}", text(&o));
    let acl = ok(lors(&g, "alice", &["acl", "get", "/vo1/alice/f"]));
    assert!(acl.contains("\ncarol@vo1=r\n"), "unchanged: {acl}");

    // Share with bob again, then unshare by name: bob is refused again.
    ok(lors(&g, "alice", &["share", "/vo1/alice/f", "bob@vo1"]));
    download_is(&g, "bob", "/vo1/alice/f", &data, "shared again");
    ok(lors(&g, "alice", &["unshare", "/vo1/alice/f", "bob@vo1"]));
    let o = lors(&g, "bob", &["download", "/vo1/alice/f", "-"]);
    assert_eq!(code(&o), 3, "unshared by name: {}", text(&o));

    // A member a VO admin removed has no name any more.
    ok(lors(
        &g,
        "alice",
        &["members", "remove", &bob_id, "--mdm-only"],
    ));
    let o = lors(&g, "alice", &["share", "/vo1/alice/f", "bob@vo1"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
}
