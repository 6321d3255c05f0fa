//! Several VOs in one proxy on a real grid (issue 21, item 3): the grid
//! serves vo1 and vo2 ([`GridOptions::vo2`]); alice is a member of both,
//! and a VO admin (group `admins`) in vo1 only; carol administers vo2.
//! One `lors login --vo vo1 --vo vo2` proxy uploads and downloads in both
//! VOs' namespaces, gets depots from the L-Bone for each VO, and the
//! depots honour each VO's grants; in vo2 alice never has her vo1 rights.
//! A forged or untrusted vo2 attribute set is refused for vo2, naming
//! why, at the metadata manager, the L-Bone and a depot, while vo1 keeps
//! working; a VO the proxy does not carry is refused as for a non-member.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::tokens::DepotGrant;
use ibp_auth::{ProxyCredential, TrustStore, VoAttributes};
use ibp_depot_client::SecureClient;
use ibp_grid::grid::{Grid, GridOptions, VO2};

/// `online-ca admin --config CA ARGS`; returns stdout.
fn online_ca_admin(g: &Grid, args: &[&str]) -> String {
    let mut c = Command::new(&g.bins.online_ca);
    c.arg("admin").arg("--config").arg(&g.ca_config).args(args);
    ok(run_limited(c, LORS_LIMIT))
}

/// Adds `user` to vo2 (with `group`); returns the VO ID the CA gave.
fn add_to_vo2(g: &Grid, user: &str, group: Option<&str>) -> String {
    let identity = format!("local:{user}");
    let mut args = vec!["member", "add", "--vo", VO2, "--identity", &identity];
    if let Some(gr) = group {
        args.extend(["--group", gr]);
    }
    let out = online_ca_admin(g, &args);
    out.lines()
        .last()
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no VO ID in {out:?}"))
        .to_owned()
}

/// `lors login --vo V1 [--vo V2 ...]` as `user` into `proxy`.
fn login(g: &Grid, user: &str, proxy: &Path, vos: &[&str], json: bool) -> std::process::Output {
    let mut c = g.lors(user);
    c.env("X509_USER_PROXY", proxy)
        .args(["login", "--ca", &g.ca_url, "--method", "local"])
        .args(["--user", user, "--password-stdin", "--valid", "02:00"]);
    for vo in vos {
        c.args(["--vo", vo]);
    }
    if json {
        c.arg("--json");
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("lors login starts");
    let password = g.user(user).password.clone();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password written");
    child.wait_with_output().expect("lors login ends")
}

/// `lors ARGS` as `user` with the proxy `proxy`.
fn lors_with(g: &Grid, user: &str, proxy: &Path, args: &[&str]) -> std::process::Output {
    let mut c = lors_cmd(g, user, args);
    c.env("X509_USER_PROXY", proxy);
    run_limited(c, LORS_LIMIT)
}

/// The offer of `lors depots --vo VO --json`.
fn depots(g: &Grid, proxy: &Path, vo: &str) -> serde_json::Value {
    let out = ok(lors_with(
        g,
        "alice",
        proxy,
        &["depots", "--vo", vo, "--json"],
    ));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("depots --json ({e}): {out}"))
}

/// Straight to depot 0's TLS port with `proxy`: AUTH with a grant for
/// (`vo`, `vo_id`) bound to the proxy's key, signed with the grid's L-Bone
/// key (what the L-Bone signs), then QUOTA.
fn depot_auth(g: &Grid, proxy: &Path, vo: &str, vo_id: &str) -> Result<(), String> {
    let cred = ProxyCredential::load(proxy).map_err(|e| e.to_string())?;
    let trust = TrustStore::load(&g.trust_dir).map_err(|e| e.to_string())?;
    let key = ibp_auth::keys::load_signing_key(&g.dir.join("lbone/lbone.key"))
        .map_err(|e| e.to_string())?;
    let addr = g.depots[0].tls_addr.clone().expect("a TLS depot");
    let now = ibp_auth::unix_now();
    let grant = DepotGrant {
        depot: addr.clone(),
        vo: vo.into(),
        vo_id: vo_id.into(),
        holder: cred.key_hash().map_err(|e| e.to_string())?,
        issued: now,
        not_after: now + 600,
    }
    .sign(&key);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut c = SecureClient::connect(&addr, "127.0.0.1", &trust, &cred)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        c.auth(&grant).await.map_err(|e| format!("AUTH: {e}"))?;
        c.quota().await.map_err(|e| format!("QUOTA: {e}"))?;
        Ok(())
    })
}

/// A proxy below `below` (alice's multi-VO proxy) carrying its vo1
/// attribute set and, for vo2, `vo2_set` instead of the CA's.
fn proxy_with_vo2_set(below: &Path, vo2_set: Vec<u8>, out: &Path) -> PathBuf {
    let cred = ProxyCredential::load(below).expect("alice's proxy");
    let sets = ibp_auth::attributes::sets_in_certificate(&cred.chain[0]).expect("her sets");
    assert_eq!(sets.len(), 2, "a vo1 and a vo2 set");
    let p = ProxyCredential::create_multi_vo(
        &cred.chain,
        &cred.key_pkcs8,
        &ProxyOptions {
            lifetime: 3000,
            attributes: Some(sets[0].clone()),
            path_len: None,
        },
        &[vo2_set],
        &[],
    )
    .expect("a proxy of the proxy");
    p.save(out).expect("proxy written");
    out.to_path_buf()
}

/// `lors stat --json PATH` as `user` (owner, rights).
fn stat(g: &Grid, user: &str, path: &str) -> serde_json::Value {
    let out = ok(lors(g, user, &["stat", "--json", path]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stat --json ({e}): {out}"))
}

/// `POST /v1/stat {path}` at the metadata manager with `proxy`, acting
/// for `vo` (the `ibp-vo` header): status and body.
fn stat_acting(g: &Grid, proxy: &Path, path: &str, vo: Option<&str>) -> (u16, String) {
    let cred = ProxyCredential::load(proxy).expect("proxy");
    let trust = TrustStore::load(&g.trust_dir).expect("trust");
    let tls = ibp_auth::tls::client_config(&trust, Some(&cred)).expect("TLS");
    let url = ibp_https::BaseUrl::parse(&g.mdm_url).expect("URL");
    let client = ibp_https::Client::new(url, tls, true);
    let body = serde_json::to_vec(&serde_json::json!({ "path": path })).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(client.request_acting(ibp_https::Method::POST, "/v1/stat", Some(body), vo))
        .expect("an answer");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Waits until the L-Bone offers every depot to vo2.
fn wait_vo2_depots(g: &Grid, proxy: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offer = depots(g, proxy, VO2);
        let n = offer["depots"].as_array().map_or(0, Vec::len);
        if n == g.depots.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the L-Bone offers {n} depots to vo2: {offer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_proxy_acts_in_each_of_its_vos_and_never_mixes_them() {
    let g = start(GridOptions {
        vo2: true,
        ..Default::default()
    });
    let alice_vo1 = g.user("alice").vo_id.clone();
    let alice_vo2 = add_to_vo2(&g, "alice", None);
    let carol_vo2 = add_to_vo2(&g, "carol", Some("admins"));
    assert_ne!(alice_vo1, alice_vo2);

    // Carol, vo2's admin, registers the depots for vo2 with a vo2 proxy.
    let carol2 = g.user("carol").dir.join("vo2.proxy");
    ok(login(&g, "carol", &carol2, &[VO2], false));
    g.register_depots_for(VO2, &carol2)
        .expect("depots registered for vo2");

    // Alice: one proxy for both VOs.
    let alice = g.proxy("alice");
    let out = ok(login(&g, "alice", &alice, &["vo1", VO2], true));
    let new: serde_json::Value = serde_json::from_str(&out).expect("login --json");
    assert_eq!(new["vo"], "vo1", "{new}");
    assert_eq!(new["vo_id"], alice_vo1.as_str(), "{new}");
    assert_eq!(new["also"][0]["vo"], VO2, "{new}");
    assert_eq!(new["also"][0]["vo_id"], alice_vo2.as_str(), "{new}");
    assert_eq!(new["also"][0]["groups"], serde_json::json!([]), "{new}");
    let info: serde_json::Value =
        serde_json::from_str(&ok(lors(&g, "alice", &["proxy-info", "--json"]))).unwrap();
    assert_eq!(info["vo"], "vo1", "{info}");
    assert_eq!(info["other_vos"], serde_json::json!([VO2]), "{info}");
    assert_eq!(info["verified"], true, "{info}");
    wait_vo2_depots(&g, &alice);

    // The L-Bone: each query's VO, with that VO's VO ID.
    for (vo, id) in [("vo1", &alice_vo1), (VO2, &alice_vo2)] {
        let offer = depots(&g, &alice, vo);
        assert_eq!(offer["vo"], vo, "{offer}");
        assert_eq!(offer["vo_id"], id.as_str(), "{offer}");
        assert_eq!(
            offer["depots"].as_array().map(Vec::len),
            Some(g.depots.len())
        );
    }
    // A VO the proxy does not carry: refused as for a non-member.
    let o = lors_with(&g, "alice", &alice, &["depots", "--vo", "vo3"]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(
        stderr(&o).contains("carries no VO attributes for \"vo3\""),
        "{}",
        text(&o)
    );

    // The metadata manager: the key for both VOs, then files in both
    // namespaces, each owned by the member of its VO.
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/alice"]));
    ok(lors(&g, "alice", &["mkdir", "/vo2/alice"]));
    let one = bytes(300_000, 1);
    let two = bytes(200_000, 2);
    upload(&g, "alice", "one", &one, "/vo1/alice/one", &[]);
    upload(&g, "alice", "two", &two, "/vo2/alice/two", &[]);
    download_is(&g, "alice", "/vo1/alice/one", &one, "vo1 file");
    download_is(&g, "alice", "/vo2/alice/two", &two, "vo2 file");
    for (path, owner) in [
        ("/vo1/alice/one", format!("user:{alice_vo1}@vo1")),
        ("/vo2/alice/two", format!("user:{alice_vo2}@vo2")),
    ] {
        assert_eq!(stat(&g, "alice", path)["owner"], owner.as_str(), "{path}");
        let st = stat_json(&g, "alice", path);
        assert!(
            mappings(&st)
                .iter()
                .all(|m| m["security"].as_str() != Some("legacy")),
            "{path} is on secure depots (grants of its VO): {st}"
        );
    }

    // The metadata manager acts for the VO the request names: a path in
    // another VO the proxy carries is refused (its rights would be the
    // wrong VO's); a VO it does not carry acts as its first VO.
    let (st, body) = stat_acting(&g, &alice, "/vo2/alice/two", Some("vo2"));
    assert_eq!(st, 200, "{body}");
    let (st, body) = stat_acting(&g, &alice, "/vo2/alice/two", Some("vo1"));
    assert_eq!(st, 403, "{body}");
    assert!(
        body.contains("/vo2/alice/two is in VO vo2, which your proxy carries, but this request acts for VO vo1"),
        "{body}"
    );
    let (st, body) = stat_acting(&g, &alice, "/vo2/alice/two", None);
    assert_eq!(st, 403, "without the header, the first VO: {body}");
    let (st, body) = stat_acting(&g, &alice, "/vo1/alice/one", Some("vo2"));
    assert_eq!(st, 403, "{body}");
    let (st, body) = stat_acting(&g, &alice, "/vo1/alice/one", Some("vo3"));
    assert_eq!(st, 200, "a VO not carried: the first VO acts: {body}");

    // The depots: a grant of each VO, for the member of that VO.
    depot_auth(&g, &alice, "vo1", &alice_vo1).expect("a vo1 grant");
    depot_auth(&g, &alice, VO2, &alice_vo2).expect("a vo2 grant");
    let e = depot_auth(&g, &alice, VO2, &alice_vo1).expect_err("vo1's VO ID in vo2");
    assert!(e.contains("depot grant is for vo2/"), "{e}");
    let e = depot_auth(&g, &alice, "vo3", &alice_vo1).expect_err("a VO not carried");
    assert!(e.contains("carries no VO attributes for \"vo3\""), "{e}");

    // Alice is a vo1 admin: she may delete carol's vo1 file ...
    let carol_lors = |args: &[&str]| lors_with(&g, "carol", &carol2, args);
    let c = write(&g.user("carol").dir, "c", &bytes(1000, 3));
    ok(lors(&g, "carol", &["mkdir", "/vo1/carol"]));
    ok(lors(
        &g,
        "carol",
        &["upload", s(&c), "/vo1/carol/c", "--no-encrypt"],
    ));
    ok(lors(&g, "alice", &["rm", "/vo1/carol/c"]));
    // ... but not in vo2, where carol is the admin and she is not: she
    // acts there as her vo2 self, with no right on carol's file.
    ok(carol_lors(&["mkdir", "/vo2/carol"]));
    ok(carol_lors(&[
        "upload",
        s(&c),
        "/vo2/carol/c",
        "--no-encrypt",
    ]));
    let o = lors(&g, "alice", &["rm", "/vo2/carol/c"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let want = format!("delete right on /vo2/carol/c is needed; you (user:{alice_vo2}@vo2) have -");
    assert!(stderr(&o).contains(&want), "{}", text(&o));
    ok(carol_lors(&["stat", "/vo2/carol/c"]));
    // Members of vo2 are for vo2's admins; vo1's are alice's.
    let o = lors(&g, "alice", &["members", "list", "--vo", VO2]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    ok(lors(&g, "alice", &["members", "list", "--vo", "vo1"]));
    assert!(
        ok(carol_lors(&["members", "list", "--vo", VO2])).contains(&alice_vo2),
        "carol sees alice's vo2 VO ID"
    );
    assert!(
        ok(carol_lors(&["members", "list", "--vo", VO2])).contains(&carol_vo2),
        "carol sees her own vo2 VO ID"
    );

    // A vo2 attribute set nobody trusts (an AA of its own), or the CA's
    // with a byte changed: refused for vo2, naming why, everywhere; vo1
    // unaffected.
    let ca = ibp_auth::pki::Authority::new_ca("Test Grid", "Mallory CA", 30).unwrap();
    let stranger = ca.new_aa("Test Grid", VO2, 30).unwrap();
    let cred = ProxyCredential::load(&alice).unwrap();
    let sets = ibp_auth::attributes::sets_in_certificate(&cred.chain[0]).unwrap();
    let real = ibp_auth::attributes::SignedAttributes::parse(&sets[1]).unwrap();
    let forged = stranger
        .sign_attributes(&VoAttributes {
            groups: vec![ibp_auth::Group {
                id: "g".into(),
                name: "admins".into(),
            }],
            ..real.attributes.clone()
        })
        .unwrap();
    let mut tampered = sets[1].clone();
    let at = tampered
        .windows(alice_vo2.len())
        .position(|w| w == alice_vo2.as_bytes())
        .expect("the VO ID in the set");
    tampered[at] ^= 1;
    let dir = g.user("alice").dir.clone();
    for (what, set, why) in [
        ("untrusted", forged, "not trusted for that VO"),
        ("tampered", tampered, "signature does not verify"),
    ] {
        let p = proxy_with_vo2_set(&alice, set, &dir.join(format!("{what}.proxy")));
        let refused = "the VO attributes for \"vo2\" in this credential were refused";
        // vo1 works.
        ok(lors_with(&g, "alice", &p, &["stat", "/vo1/alice/one"]));
        depot_auth(&g, &p, "vo1", &alice_vo1).expect("vo1 still");
        assert_eq!(depots(&g, &p, "vo1")["vo"], "vo1");
        // vo2 does not, and says why.
        for args in [
            &["stat", "/vo2/alice/two"][..],
            &["depots", "--vo", VO2][..],
        ] {
            let o = lors_with(&g, "alice", &p, args);
            assert_ne!(code(&o), 0, "{what} {args:?}: {}", text(&o));
            let err = stderr(&o);
            assert!(
                err.contains(refused) && err.contains(why),
                "{what} {args:?}: {}",
                text(&o)
            );
        }
        let e = depot_auth(&g, &p, VO2, &alice_vo2).expect_err("vo2 refused at the depot");
        assert!(e.contains(refused) && e.contains(why), "{what}: {e}");
    }
}
