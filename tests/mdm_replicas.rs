//! Two metadata-manager replicas on one PostgreSQL database, each with its
//! own ticket-signing key, and `lors` given both URLs: a replica killed
//! with SIGKILL is failed over (listing, reading, writing), the depots
//! honour the other replica's tickets, and the optimistic-concurrency
//! guarantee holds across replicas (two writers of one version through
//! two replicas: exactly one wins). Several L-Bone URLs fail over too.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use ibp_grid::grid::GridOptions;
use ibp_testkit::pg::PgCluster;

#[test]
fn replicas_fail_over_and_keep_one_winner() {
    let _t = Timer::start("replicas_fail_over_and_keep_one_winner");
    let pg = PgCluster::start();
    let mut g = start(GridOptions {
        mdm_database: Some(pg.url.clone()),
        mdm_replicas: 2,
        ..GridOptions::default()
    });
    assert_eq!(g.mdm_urls.len(), 2);
    assert_ne!(g.mdm_urls[0], g.mdm_urls[1]);
    // Each replica signs tickets with its own key; both are trusted.
    let pubs = std::fs::read_dir(g.trust_dir.join("metadata"))
        .expect("trust/metadata")
        .count();
    assert_eq!(pubs, 2, "one ticket key per replica in the trust directory");
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/r"]));
    let a = bytes(700_000, 1);
    upload(&g, "alice", "a.bin", &a, "/vo1/r/a", &[]);

    // Several L-Bone URLs too: one that refuses connections is skipped;
    // none answering is said so.
    let dead = "https://127.0.0.1:1";
    let l = bytes(20_000, 9);
    let src = write(&g.user("alice").dir, "l.bin", &l);
    let mut c = lors_cmd(&g, "alice", &["upload", s(&src), "/vo1/r/l"]);
    c.env("LORS_LBONE_URL", format!("{dead},{}", g.lbone_url));
    ok(run_limited(c, LORS_LIMIT));
    download_is(
        &g,
        "alice",
        "/vo1/r/l",
        &l,
        "l, placed through the second L-Bone URL",
    );
    let mut c = lors_cmd(&g, "alice", &["depots"]);
    c.env("LORS_LBONE_URL", format!("{dead},{dead}"));
    let o = run_limited(c, LORS_LIMIT);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no L-Bone answered (2 tried)"),
        "{}",
        text(&o)
    );

    // The first replica killed: everything goes on through the second.
    g.kill_mdm_replica(0);
    let ls = ok(lors(&g, "alice", &["ls", "/vo1/r"]));
    assert!(ls.contains('a'), "listed through the second replica: {ls}");
    // A download needs a ticket: the second replica's, which the depots
    // honour.
    download_is(&g, "alice", "/vo1/r/a", &a, "a, read after the failover");
    let b = bytes(300_000, 2);
    upload(&g, "alice", "b.bin", &b, "/vo1/r/b", &[]);
    download_is(&g, "alice", "/vo1/r/b", &b, "b, written after the failover");

    // The first replica back (same port, same database): it sees b.
    g.restart_mdm_replica(0).expect("restart the first replica");
    let mut only_first = lors_cmd(&g, "alice", &["stat", "/vo1/r/b"]);
    only_first.env("LORS_METADATA_URL", &g.mdm_urls[0]);
    let o = run_limited(only_first, LORS_LIMIT);
    assert!(o.status.success(), "the first replica sees b: {}", text(&o));

    // Two writers of version 1 of a, one through each replica: one wins,
    // the other gets a conflict; the winner's version is the current one.
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let clients: Vec<lors::MetadataClient> = g
        .mdm_urls
        .iter()
        .map(|u| client_of(&g, "alice", u))
        .collect();
    let current = rt
        .block_on(clients[0].get("/vo1/r/a", None))
        .expect("get a");
    assert_eq!(current.version, 1);
    let xml = current.answer.exnode.clone();
    let me = rt.block_on(clients[0].whoami()).expect("whoami");
    let keys = vec![lors::metadata::WrappedKey {
        recipient: me.principal.clone(),
        wrapped: current
            .answer
            .wrapped_key
            .clone()
            .expect("alice's wrapped key"),
    }];
    let results: Vec<_> = rt.block_on(async {
        let (x, y) = tokio::join!(
            clients[0].put_version("/vo1/r/a", 1, &xml, &keys),
            clients[1].put_version("/vo1/r/a", 1, &xml, &keys),
        );
        vec![x, y]
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one writer wins: {results:?}");
    let loser = results.iter().find(|r| r.is_err()).expect("a loser");
    assert!(
        matches!(loser, Err(lors::credentials::Error::Conflict(_))),
        "the other gets a conflict: {loser:?}"
    );
    let st = rt.block_on(clients[1].stat("/vo1/r/a")).expect("stat a");
    assert_eq!(st.version, 2, "one new version, not two");

    // Both replicas down: a clear error naming the failure, not a hang.
    g.kill_mdm_replica(0);
    g.kill_mdm_replica(1);
    let o = lors(&g, "alice", &["ls", "/vo1/r"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no metadata-manager replica answered (2 tried)"),
        "{}",
        text(&o)
    );
}

/// A metadata-manager client of `user` for the replica at `url` only.
fn client_of(g: &ibp_grid::grid::Grid, user: &str, url: &str) -> lors::MetadataClient {
    let env: HashMap<String, String> = g.env(user).into_iter().collect();
    let trust = lors::credentials::TrustSource::Dir(env["LORS_TRUST_DIR"].clone().into())
        .load()
        .expect("load the trust directory");
    let cred = ibp_auth::ProxyCredential::load(Path::new(&env["X509_USER_PROXY"]))
        .expect("load the proxy");
    lors::MetadataClient::connect(url, &trust, &cred).expect("a metadata-manager client")
}
