//! Replication by depot COPY (issue 16, "Replication by depot COPY") on a
//! real grid: `lors upload --copies 3` stores each block once from the
//! client and the depots COPY it to the other replicas (legacy COPY on the
//! legacy port, secure COPY with an L-Bone grant held by the source
//! depot's key at the secure levels); a COPY the target refuses falls back
//! to a send by the client; the L-Bone's `POST /v1/copy-grants` refuses
//! what it must.
//!
//! The bytes the client sent are counted at the depots (their Prometheus
//! `/metrics`): every byte a depot received into an allocation
//! (`ibp_bytes_in_total`) came either from the client or from another
//! depot's COPY, and every COPY a depot made is counted in its
//! `ibp_bytes_out_total` (nothing is downloaded meanwhile), so the client
//! sent `Σ in − Σ out`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

/// `GET url` (plain HTTP), the body.
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_once('/').expect("a path");
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

/// Gives every depot a metrics endpoint (a free loopback port written into
/// its configuration) and restarts it; the endpoints' URLs.
fn depot_metrics(g: &mut Grid) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..g.depots.len() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = g.depots[i].config.clone();
        let text = std::fs::read_to_string(&config).expect("the depot's configuration");
        std::fs::write(
            &config,
            format!("metrics_listen = \"127.0.0.1:{port}\"\n{text}"),
        )
        .expect("write the configuration");
        g.restart_depot(i).expect("the depot restarts");
        urls.push(format!("http://127.0.0.1:{port}/metrics"));
    }
    urls
}

/// (Σ bytes received into allocations, Σ bytes sent) over the depots.
fn depot_bytes(urls: &[String]) -> (u64, u64) {
    urls.iter().fold((0, 0), |(i, o), u| {
        let m = get(u);
        (
            i + sample(&m, "ibp_bytes_in_total"),
            o + sample(&m, "ibp_bytes_out_total"),
        )
    })
}

/// Uploads `data` with `--copies 3` at `security` (and `extra` arguments);
/// returns (bytes the client sent, bytes the depots copied, the upload's
/// stderr).
fn upload_counted(
    g: &Grid,
    urls: &[String],
    data: &[u8],
    dest: &str,
    security: &str,
    extra: &[&str],
) -> (u64, u64, String) {
    let (in0, out0) = depot_bytes(urls);
    let src = write(&g.user("alice").dir, "src", data);
    let o = lors(
        g,
        "alice",
        &[
            "upload",
            s(&src),
            dest,
            "--copies",
            "3",
            "--block-size",
            "256KiB",
            "--security",
            security,
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    );
    assert_eq!(code(&o), 0, "upload {dest}: {}", text(&o));
    let (in1, out1) = depot_bytes(urls);
    let (received, copied) = (in1 - in0, out1 - out0);
    (received - copied, copied, stderr(&o))
}

/// Every block of `path` has 3 mappings on 3 distinct depots, all with the
/// checksum of the block's bytes as stored (a COPY is byte for byte), the
/// same for the 3; each mapping reads back verified (`stat --check`).
fn three_replicas_each(g: &Grid, path: &str, blocks: usize) {
    let (trust, cred) = credentials(g, "alice");
    let mdm = lors::MetadataClient::connect(&g.mdm_urls.join(","), &trust, &cred)
        .expect("a metadata-manager client");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let x = rt.block_on(mdm.get(path, None)).expect("the exNode").exnode;
    assert_eq!(x.mappings.len(), 3 * blocks, "{path}: {:?}", x.mappings);
    let mut by_offset: std::collections::BTreeMap<u64, Vec<&exnode::Mapping>> = Default::default();
    for m in &x.mappings {
        by_offset.entry(m.logical_offset).or_default().push(m);
    }
    assert_eq!(by_offset.len(), blocks, "{path}");
    for (off, ms) in by_offset {
        let depots: std::collections::BTreeSet<_> = ms.iter().map(|m| &m.depot).collect();
        assert_eq!(depots.len(), 3, "{path} block at {off}: {ms:?}");
        assert!(ms[0].checksum.is_some(), "{path} block at {off}: {ms:?}");
        assert!(
            ms.iter()
                .all(|m| m.checksum == ms[0].checksum && m.alloc_offset == 0),
            "{path} block at {off}: one checksum: {ms:?}"
        );
    }
    check_clean(g, "alice", path, path);
}

#[test]
fn copies_are_made_by_the_depots_and_the_client_sends_each_byte_once() {
    let _timer = Timer::start("copies_are_made_by_the_depots_and_the_client_sends_each_byte_once");
    let mut g = start(GridOptions::default());
    let urls = depot_metrics(&mut g);
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/alice"]));
    let data = bytes(1_000_000, 16);
    let blocks = 4; // 256 KiB blocks

    // Full security: secure COPY with the L-Bone's grants.
    let (sent, copied, err) = upload_counted(&g, &urls, &data, "/vo1/alice/full", "full", &[]);
    // Encrypted: each block's ciphertext is as long as its plaintext.
    assert_eq!(
        sent,
        data.len() as u64,
        "the client sent each byte once: {err}"
    );
    assert_eq!(
        copied,
        2 * data.len() as u64,
        "the depots made 2 copies: {err}"
    );
    assert!(!err.contains("COPY"), "no COPY fell back: {err}");
    three_replicas_each(&g, "/vo1/alice/full", blocks);

    // One block at a time: block i's first replica is on depot i mod 3,
    // which copies it to the other two. Block 3's source (depot 0) has
    // kept its sessions from block 0 (same targets, same grants): at most
    // 6 sessions opened, at least 2 COPYs through kept ones (more if this
    // upload's grants are those of the one before, byte for byte).
    let sessions = |what: &str| -> u64 { urls.iter().map(|u| sample(&get(u), what)).sum() };
    let (opened0, reused0) = (
        sessions("ibp_copy_sessions_opened_total"),
        sessions("ibp_copy_sessions_reused_total"),
    );
    let (sent, copied, err) = upload_counted(
        &g,
        &urls,
        &data,
        "/vo1/alice/one-by-one",
        "full",
        &["--threads", "1"],
    );
    assert_eq!(sent, data.len() as u64, "one by one: {err}");
    assert_eq!(copied, 2 * data.len() as u64, "one by one: {err}");
    let opened = sessions("ibp_copy_sessions_opened_total") - opened0;
    let reused = sessions("ibp_copy_sessions_reused_total") - reused0;
    assert_eq!(
        opened + reused,
        2 * blocks as u64,
        "a session per COPY: {err}"
    );
    assert!(
        reused >= 2 && opened <= 6,
        "kept sessions reused: opened {opened}, reused {reused}: {err}"
    );
    three_replicas_each(&g, "/vo1/alice/one-by-one", blocks);

    // Legacy: the legacy COPY (depot to depot on the legacy ports).
    let (sent, copied, err) = upload_counted(&g, &urls, &data, "/vo1/alice/legacy", "legacy", &[]);
    assert_eq!(
        sent,
        data.len() as u64,
        "legacy: the client sent each byte once: {err}"
    );
    assert_eq!(copied, 2 * data.len() as u64, "legacy: 2 copies: {err}");
    three_replicas_each(&g, "/vo1/alice/legacy", blocks);

    // `lors augment` makes the new replicas by COPY too: the client sends
    // nothing (encrypted and legacy alike).
    for (name, security) in [("aug-full", "full"), ("aug-legacy", "legacy")] {
        let path = format!("/vo1/alice/{name}");
        let src = write(&g.user("alice").dir, name, &data);
        ok(lors(
            &g,
            "alice",
            &[
                "upload",
                s(&src),
                &path,
                "--block-size",
                "256KiB",
                "--security",
                security,
            ],
        ));
        let (in0, out0) = depot_bytes(&urls);
        let o = lors(&g, "alice", &["augment", &path, "--copies", "3"]);
        assert_eq!(code(&o), 0, "augment {path}: {}", text(&o));
        let (in1, out1) = depot_bytes(&urls);
        assert_eq!(out1 - out0, 2 * data.len() as u64, "{path}: {}", text(&o));
        assert_eq!(
            in1 - in0,
            out1 - out0,
            "{path}: the client sent nothing: {}",
            text(&o)
        );
        three_replicas_each(&g, &path, blocks);
    }

    // Each depot alone holds a whole, readable copy: download with the
    // other two killed.
    g.kill_depot(1);
    g.kill_depot(2);
    download_is(&g, "alice", "/vo1/alice/full", &data, "full, depot 0 alone");
    download_is(
        &g,
        "alice",
        "/vo1/alice/legacy",
        &data,
        "legacy, depot 0 alone",
    );
    download_is(
        &g,
        "alice",
        "/vo1/alice/aug-full",
        &data,
        "augmented, depot 0 alone",
    );
}

#[test]
fn at_the_crypto_level_the_depots_copy_over_their_tls_ports() {
    let _timer = Timer::start("at_the_crypto_level_the_depots_copy_over_their_tls_ports");
    let mut g = start(GridOptions {
        data_port: true,
        ..Default::default()
    });
    let urls = depot_metrics(&mut g);
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/alice"]));
    let data = bytes(700_000, 18);
    let (sent, copied, err) = upload_counted(&g, &urls, &data, "/vo1/alice/crypto", "crypto", &[]);
    assert_eq!(
        sent,
        data.len() as u64,
        "the client sent each byte once: {err}"
    );
    assert_eq!(copied, 2 * data.len() as u64, "2 copies: {err}");
    three_replicas_each(&g, "/vo1/alice/crypto", 3);
    download_is(&g, "alice", "/vo1/alice/crypto", &data, "crypto level");
}

/// The certificate (DER) a new TLS connection to `addr` is served with.
async fn peer_certificate(
    addr: &str,
    trust: &ibp_auth::TrustStore,
    cred: &ibp_auth::ProxyCredential,
) -> Vec<u8> {
    let cfg = ibp_auth::tls::client_config(trust, Some(cred)).expect("a TLS configuration");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

fn credentials(g: &Grid, user: &str) -> (ibp_auth::TrustStore, ibp_auth::ProxyCredential) {
    let trust = lors::credentials::TrustSource::Dir(g.trust_dir.clone())
        .load()
        .expect("load the trust directory");
    let cred = ibp_auth::ProxyCredential::load(&g.proxy(user)).expect("load the proxy");
    (trust, cred)
}

#[test]
fn a_copy_the_target_refuses_falls_back_to_a_send_by_the_client() {
    let _timer = Timer::start("a_copy_the_target_refuses_falls_back_to_a_send_by_the_client");
    let mut g = start(GridOptions::default());
    let urls = depot_metrics(&mut g);
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/alice"]));
    let data = bytes(600_000, 17);
    let (sent, _, err) = upload_counted(&g, &urls, &data, "/vo1/alice/before", "full", &[]);
    assert_eq!(sent, data.len() as u64, "{err}");

    // Every depot gets a new key. The L-Bone learned the old ones for the
    // upload above and keeps them a minute: its grants for the next COPYs
    // are held by keys the depots no longer have, and each target refuses
    // the source's AUTH.
    let (trust, cred) = credentials(&g, "alice");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    for i in 0..g.depots.len() {
        let renewed = g.renew_depot_certificate(i).expect("a new certificate");
        g.reload_depot(i).expect("SIGHUP");
        let addr = g.depots[i].tls_addr.clone().expect("a TLS port");
        wait_until(
            Duration::from_secs(30),
            "the renewed certificate is served",
            || rt.block_on(peer_certificate(&addr, &trust, &cred)) == renewed,
        );
    }
    let (sent, copied, err) = upload_counted(&g, &urls, &data, "/vo1/alice/after", "full", &[]);
    assert_eq!(copied, 0, "no COPY succeeded: {err}");
    assert_eq!(
        sent,
        3 * data.len() as u64,
        "the client sent every replica: {err}"
    );
    assert!(
        err.contains("depot COPY from") && err.contains("the client sends this replica itself"),
        "the fallback is reported: {err}"
    );
    three_replicas_each(&g, "/vo1/alice/after", 3);
    download_is(&g, "alice", "/vo1/alice/after", &data, "after the fallback");
}

/// The key hash of depot `i`'s current TLS key.
fn depot_key(g: &Grid, i: usize) -> [u8; 32] {
    let pem = std::fs::read_to_string(g.depots[i].dir.join("server.key")).expect("the key");
    let key = rcgen::KeyPair::from_pem(&pem).expect("a key pair");
    ibp_auth::key_hash(&key.public_key_der())
}

#[test]
fn the_lbone_issues_copy_grants_held_by_the_source_and_refuses_the_rest() {
    let _timer =
        Timer::start("the_lbone_issues_copy_grants_held_by_the_source_and_refuses_the_rest");
    let g = start(GridOptions::default());
    let (trust, alice) = credentials(&g, "alice");
    let (_, bob) = credentials(&g, "bob");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let addr = |i: usize| g.depots[i].tls_addr.clone().expect("a TLS port");
    let ask = |cred: &ibp_auth::ProxyCredential,
               vo: Option<&str>,
               source: String,
               targets: Vec<String>| {
        rt.block_on(lors::depots::copy_grants(
            &g.lbone_url,
            &trust,
            cred,
            vo,
            &source,
            &targets,
        ))
    };

    // Granted: one grant per target, held by the source depot's key (not
    // the caller's), for alice's VO and VO ID.
    let ok_grants = ask(&alice, None, addr(0), vec![addr(1), addr(2)]).expect("copy grants");
    assert_eq!(ok_grants.grants.len(), 2);
    assert_eq!(ok_grants.vo, "vo1");
    assert_eq!(ok_grants.vo_id, g.user("alice").vo_id);
    let source_key = depot_key(&g, 0);
    let alice_key = alice.key_hash().expect("alice's key hash");
    let now = ibp_auth::unix_now();
    for (i, c) in ok_grants.grants.iter().enumerate() {
        assert_eq!(c.target, addr(i + 1));
        let grant =
            ibp_auth::tokens::DepotGrant::verify(&c.grant, &trust, &c.target, &source_key, now)
                .expect("the grant is held by the source depot's key");
        assert_eq!(grant.vo_id, g.user("alice").vo_id);
        assert!(grant.not_after <= alice.not_after().expect("the proxy's expiry"));
        assert!(
            ibp_auth::tokens::DepotGrant::verify(&c.grant, &trust, &c.target, &alice_key, now)
                .is_err(),
            "not usable with the caller's own key"
        );
    }

    // A source the L-Bone does not know (no registered depot there).
    let e = ask(&alice, None, "127.0.0.1:1".into(), vec![addr(1)])
        .expect_err("an unknown source")
        .to_string();
    assert!(
        e.contains("HTTP 404") && e.contains("no depot with a secure port at"),
        "{e}"
    );
    // A target that is not a depot of the VO.
    let e = ask(&alice, None, addr(0), vec!["127.0.0.1:2".into()])
        .expect_err("an unknown target")
        .to_string();
    assert!(
        e.contains("HTTP 404") && e.contains("\"127.0.0.1:2\""),
        "{e}"
    );
    // A VO the caller's proxy does not carry.
    let e = ask(&alice, Some("vo2"), addr(0), vec![addr(1)])
        .expect_err("another VO")
        .to_string();
    assert!(e.contains("HTTP 403"), "{e}");

    // Malformed requests: no target, the source as its own target, more
    // targets than one request may name.
    for (targets, why) in [
        (vec![], "targets: 1.."),
        (vec![addr(0)], "its own COPY"),
        (
            vec![addr(1); lbone_api::MAX_COPY_TARGETS + 1],
            "targets: 1..",
        ),
    ] {
        let e = ask(&alice, None, addr(0), targets)
            .expect_err("a malformed request")
            .to_string();
        assert!(e.contains("HTTP 400") && e.contains(why), "{e}");
    }

    // No credential at all: refused before anything is looked at.
    let anonymous = ibp_https::Client::new(
        ibp_https::BaseUrl::parse(&g.lbone_url).expect("the L-Bone's URL"),
        ibp_auth::tls::client_config(&trust, None).expect("a TLS configuration"),
        false,
    );
    let request = lbone_api::CopyGrantRequest {
        vo: None,
        source: addr(0),
        targets: vec![addr(1)],
    };
    let r = rt
        .block_on(anonymous.post_json("/v1/copy-grants", &request))
        .expect("an answer");
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        !String::from_utf8_lossy(&r.body).contains("grant"),
        "no grant without a credential"
    );

    // A depot registered in the VO no more: refused as source and target.
    let lbone_admin = |args: &[&str]| {
        let mut c = std::process::Command::new(&g.bins.lbone);
        c.arg("admin")
            .args(["--lbone", &g.lbone_url])
            .arg("--proxy")
            .arg(g.proxy("alice"))
            .arg("--trust")
            .arg(&g.trust_dir)
            .args(args);
        run_limited(c, Duration::from_secs(60))
    };
    let o = lbone_admin(&["remove", "--vo", "vo1", "--name", &g.depots[2].name]);
    assert!(o.status.success(), "lbone admin remove: {}", text(&o));
    for (source, target) in [(addr(2), addr(0)), (addr(0), addr(2))] {
        let e = ask(&alice, None, source, vec![target])
            .expect_err("a depot of no VO of the caller")
            .to_string();
        assert!(
            e.contains("HTTP 404") && e.contains("VO vo1 has no depot"),
            "{e}"
        );
    }

    // A member the VO's admins removed: no grants at all.
    ask(&bob, None, addr(0), vec![addr(1)]).expect("bob's grants before his removal");
    let o = lbone_admin(&["member", "remove", "--vo", "vo1", &g.user("bob").vo_id]);
    assert!(
        o.status.success(),
        "lbone admin member remove: {}",
        text(&o)
    );
    let e = ask(&bob, None, addr(0), vec![addr(1)])
        .expect_err("a removed member")
        .to_string();
    assert!(
        e.contains("HTTP 403") && e.contains("removed member"),
        "{e}"
    );
}
