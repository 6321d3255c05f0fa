//! Uploads, downloads and maintenance against a real grid: online CA with
//! real logins, L-Bone, metadata manager and depots, each its own process
//! (`ibp_testkit::grid`), driven through the `lors` binary as a user would.
//!
//! Fault tests kill depots with SIGKILL and flip bytes in depots' data
//! files; every check is on content (bytes read back, exit codes, what the
//! metadata manager and `stat` report).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ibp_testkit::grid::{Grid, GridOptions};
use ibp_testkit::run_bounded;

const LIMIT: Duration = Duration::from_secs(240);

fn grid(depots: usize) -> Grid {
    Grid::start(GridOptions {
        depots,
        ..Default::default()
    })
    .expect("grid starts")
}

/// The `lors` binary under test with `user`'s environment.
fn lors_cmd(g: &Grid, user: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lors"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(g.env(user))
        .current_dir(&g.user(user).dir);
    c
}

fn run(mut c: Command) -> Output {
    run_bounded(
        {
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c
        },
        LIMIT,
    )
    .expect("lors runs")
}

fn lors(g: &Grid, user: &str, args: &[&str]) -> Output {
    let mut c = lors_cmd(g, user);
    c.args(args);
    run(c)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "lors failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write input");
    p
}

fn keys_init(g: &Grid, user: &str) {
    ok(lors(g, user, &["keys", "init"]));
}

fn vo_id(g: &Grid, user: &str) -> String {
    g.user(user).vo_id.clone()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn stat_json(g: &Grid, user: &str, path: &str) -> serde_json::Value {
    let out = ok(lors(g, user, &["stat", "--mappings", "--json", path]));
    serde_json::from_str(&out).expect("stat --json is JSON")
}

#[test]
fn full_crypto_round_trips_of_every_size_and_nothing_clear_on_depots() {
    let g = grid(3);
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let bs = 64 * 1024;
    for (i, n) in [0usize, 1, bs, bs + 1, 5 * bs + 17].into_iter().enumerate() {
        let data = bytes(n, i as u64 + 1);
        let src = write(&dir, &format!("in{i}"), &data);
        let dest = format!("/vo1/size-{n}");
        let out = ok(lors(
            &g,
            "alice",
            &[
                "upload",
                src.to_str().unwrap(),
                &dest,
                "--copies",
                "2",
                "--block-size",
                "64KiB",
            ],
        ));
        assert!(
            out.contains("encrypted") && out.contains("full security"),
            "{out}"
        );
        let back = dir.join(format!("out{i}"));
        ok(lors(
            &g,
            "alice",
            &["download", &dest, back.to_str().unwrap()],
        ));
        assert_eq!(std::fs::read(&back).unwrap(), data, "size {n}");
        let st = stat_json(&g, "alice", &dest);
        assert_eq!(st["size"], n as u64);
        assert_eq!(st["encrypted"], true);
        let maps = st["mappings"].as_array().unwrap();
        assert_eq!(maps.len(), 2 * n.div_ceil(bs), "size {n}: {st}");
        for pair in maps.chunks(2) {
            assert_ne!(
                pair[0]["depot"], pair[1]["depot"],
                "replicas on distinct depots"
            );
            assert_eq!(pair[0]["security"], "full");
        }
    }

    // 100 MiB with erasure coding 2+1 and a recognisable plaintext: the
    // depots hold none of it; the download is byte for byte.
    let marker = b"PLAINTEXT-MARKER-4f1c";
    let mut data = bytes(100 << 20, 99);
    for off in (0..data.len() - marker.len()).step_by(1 << 20) {
        data[off..off + marker.len()].copy_from_slice(marker);
    }
    let src = write(&dir, "big", &data);
    ok(lors(
        &g,
        "alice",
        &["upload", src.to_str().unwrap(), "/vo1/big", "--ec", "2+1"],
    ));
    let back = dir.join("big.out");
    let out = ok(lors(
        &g,
        "alice",
        &["download", "/vo1/big", back.to_str().unwrap()],
    ));
    assert!(out.contains("downloaded 100.0 MiB"), "{out}");
    assert!(std::fs::read(&back).unwrap() == data, "100 MiB differ");
    let st = stat_json(&g, "alice", "/vo1/big");
    let maps = st["mappings"].as_array().unwrap();
    // 8 MiB blocks: 13 groups of 3 shares, each share on its own depot.
    assert_eq!(maps.len(), 13 * 3, "{st}");
    for group in maps.chunks(3) {
        let depots: std::collections::HashSet<_> =
            group.iter().map(|m| m["depot"].as_str().unwrap()).collect();
        assert_eq!(
            depots.len(),
            3,
            "shares of a group on distinct depots: {group:?}"
        );
    }
    for d in &g.depots {
        for f in files_under(&d.data_dir) {
            let content = std::fs::read(&f).unwrap_or_default();
            assert!(
                !contains(&content, marker),
                "plaintext found on depot in {}",
                f.display()
            );
        }
    }
    // stat --check reads everything back.
    ok(lors(&g, "alice", &["stat", "--check", "/vo1/big"]));
}

#[test]
fn erasure_coded_and_replicated_files_survive_a_depot_killed_during_download() {
    let mut g = grid(3);
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes(48 << 20, 7);
    let src = write(&dir, "f", &data);
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            src.to_str().unwrap(),
            "/vo1/ec",
            "--ec",
            "2+1",
            "--block-size",
            "1MiB",
        ],
    ));
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            src.to_str().unwrap(),
            "/vo1/rep",
            "--copies",
            "2",
            "--block-size",
            "1MiB",
        ],
    ));
    // Start the download, then kill a depot while it runs.
    let back = dir.join("ec.out");
    let mut c = lors_cmd(&g, "alice");
    c.args([
        "download",
        "/vo1/ec",
        back.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn download");
    // Once a couple of ranges are written (the download's journal lists
    // them after its header line) and before the download ends.
    let journal = dir.join(".ec.out.lors-part.journal");
    kill_depot_in_flight(&mut g, 0, &mut child, |_| {
        std::fs::read_to_string(&journal).is_ok_and(|t| t.lines().count() >= 3)
    });
    let o = child.wait_with_output().expect("download ends");
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&back).unwrap() == data, "EC download differs");
    // The kill hit the download: ranges after it needed the dead depot's
    // shares (it holds data shares of two stripes in three).
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("failover") || out.contains("rebuilt from parity"),
        "the download did not notice the kill: {out}"
    );
    // The other file, with the depot already gone.
    let back = dir.join("rep.out");
    let out = ok(lors(
        &g,
        "alice",
        &["download", "/vo1/rep", back.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "replica download differs"
    );
    assert!(out.contains("failover"), "{out}");
    // stat --check names the dead depot's mappings unreadable: exit 11.
    let o = lors(&g, "alice", &["stat", "--check", "/vo1/ec"]);
    assert_eq!(code(&o), 11, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("UNREADABLE"),
        "{}",
        text(&o)
    );
}

/// Kills depot `i` while `child` (an upload or download) runs, once
/// `progressed` says the transfer is under way; fails if the transfer
/// ends first (the kill would miss it).
fn kill_depot_in_flight(
    g: &mut Grid,
    i: usize,
    child: &mut std::process::Child,
    mut progressed: impl FnMut(&Grid) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !progressed(g) {
        if let Some(status) = child.try_wait().expect("poll the transfer") {
            panic!("the transfer ended ({status}) before it was under way");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer made no progress within 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().expect("poll the transfer").is_none(),
        "the transfer ended before the kill"
    );
    g.kill_depot(i);
}

/// A depot data file holding exactly `len` bytes (an allocation's data).
fn allocation_files(g: &Grid, len: u64) -> Vec<PathBuf> {
    g.depots
        .iter()
        .flat_map(|d| files_under(&d.data_dir))
        .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() == len))
        .collect()
}

#[test]
fn a_flipped_byte_is_detected_skipped_and_repaired_from_a_replica() {
    let g = grid(4);
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes(3 << 20, 11);
    let src = write(&dir, "f", &data);
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            src.to_str().unwrap(),
            "/vo1/f",
            "--copies",
            "2",
            "--block-size",
            "1MiB",
        ],
    ));
    let victims = allocation_files(&g, 1 << 20);
    assert_eq!(victims.len(), 6, "3 blocks × 2 replicas: {victims:?}");
    let victim = &victims[0];
    let mut content = std::fs::read(victim).unwrap();
    content[12345] ^= 0x40;
    std::fs::write(victim, &content).unwrap();

    // The download reads each block once, from either replica: it returns
    // the right bytes whichever it meets first.
    let back = dir.join("f.out");
    let o = lors(&g, "alice", &["download", "/vo1/f", back.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&back).unwrap() == data, "download differs");
    let o = lors(&g, "alice", &["stat", "--check", "/vo1/f"]);
    assert_eq!(code(&o), 11, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("CORRUPT"),
        "{}",
        text(&o)
    );

    let out = ok(lors(&g, "alice", &["repair", "/vo1/f"]));
    assert!(out.contains("1 bad, 1 recreated"), "{out}");
    // The bad mapping in words, not Rust debug text ("Corrupt").
    assert!(
        out.contains("CORRUPT (the bytes do not match their checksum)") && !out.contains("Corrupt"),
        "{out}"
    );
    ok(lors(&g, "alice", &["stat", "--check", "/vo1/f"]));
    let st = stat_json(&g, "alice", "/vo1/f");
    assert_eq!(st["mappings"].as_array().unwrap().len(), 6, "{st}");
    let o = lors(&g, "alice", &["download", "/vo1/f", back.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("corrupt"),
        "{}",
        text(&o)
    );
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn a_depot_killed_during_upload_leaves_a_complete_file_or_nothing() {
    let mut g = grid(4);
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes(64 << 20, 5);
    let src = write(&dir, "f", &data);
    let mut c = lors_cmd(&g, "alice");
    c.args([
        "upload",
        src.to_str().unwrap(),
        "/vo1/during",
        "--copies",
        "2",
        "--block-size",
        "1MiB",
        "--threads",
        "2",
    ]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn upload");
    // Once depot 0 holds some of the data and before the upload ends.
    let stored = |g: &Grid, i: usize| -> u64 {
        files_under(&g.depots[i].data_dir.join("data"))
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    };
    kill_depot_in_flight(&mut g, 0, &mut child, |g| stored(g, 0) > 0);
    let o = child.wait_with_output().expect("upload ends");
    let stat = lors(&g, "alice", &["stat", "/vo1/during"]);
    if o.status.success() {
        // The kill hit the upload: blocks after it that were to go to
        // depot 0 (a quarter of the copies, placed in turn) went elsewhere.
        let killed = g.depots[0].tls_addr.clone().unwrap();
        let st = stat_json(&g, "alice", "/vo1/during");
        let mappings = st["mappings"].as_array().unwrap();
        let on_killed = mappings.iter().filter(|m| m["depot"] == killed).count();
        assert!(
            on_killed * 4 < mappings.len(),
            "{on_killed} of {} copies on the killed depot: the kill missed the upload",
            mappings.len()
        );
        // Completed elsewhere: readable in full.
        let back = dir.join("out");
        ok(lors(
            &g,
            "alice",
            &["download", "/vo1/during", back.to_str().unwrap()],
        ));
        assert!(std::fs::read(&back).unwrap() == data, "download differs");
    } else {
        // Failed cleanly: nothing registered.
        assert_eq!(
            code(&stat),
            7,
            "failed upload registered something: {}",
            text(&stat)
        );
    }
}

#[test]
fn sharing_revocation_escrow_and_maintenance_keep_access_right() {
    let g = grid(3);
    for u in ["alice", "bob", "carol"] {
        keys_init(&g, u);
    }
    // alice, a VO admin, sets the VO's escrow key.
    let escrow = g.user("alice").dir.join("escrow.pem");
    ok(lors(
        &g,
        "alice",
        &["keys", "set-escrow", "--out", escrow.to_str().unwrap()],
    ));
    let dir = g.user("carol").dir.clone();
    let data = bytes(300_000, 3);
    let src = write(&dir, "f", &data);
    ok(lors(
        &g,
        "carol",
        &[
            "upload",
            src.to_str().unwrap(),
            "/vo1/carol.dat",
            "--copies",
            "2",
            "--block-size",
            "64KiB",
        ],
    ));
    let bob_out = g.user("bob").dir.join("out");
    let bob_get = |g: &Grid| {
        lors(
            g,
            "bob",
            &["download", "/vo1/carol.dat", bob_out.to_str().unwrap()],
        )
    };

    // Not shared: refused (exit 3).
    let o = bob_get(&g);
    assert_eq!(code(&o), 3, "{}", text(&o));

    // Shared: bob reads it.
    let bob = format!("user:{}@vo1", vo_id(&g, "bob"));
    ok(lors(&g, "carol", &["share", "/vo1/carol.dat", &bob]));
    ok(bob_get(&g));
    assert!(std::fs::read(&bob_out).unwrap() == data);

    // Maintenance makes new versions with the same key: bob keeps reading.
    let before = stat_json(&g, "carol", "/vo1/carol.dat");
    ok(lors(
        &g,
        "carol",
        &["refresh", "/vo1/carol.dat", "--duration", "2d"],
    ));
    let after = stat_json(&g, "carol", "/vo1/carol.dat");
    let exp = |v: &serde_json::Value| v["mappings"][0]["expires"].as_i64().unwrap();
    assert!(
        exp(&after) < exp(&before),
        "refresh to 2d shortens the 7d default: {before} {after}"
    );
    assert!(exp(&after) > ibp_auth::unix_now() + 2 * 86400 - 120);
    ok(lors(
        &g,
        "carol",
        &["augment", "/vo1/carol.dat", "--copies", "3"],
    ));
    assert_eq!(
        stat_json(&g, "carol", "/vo1/carol.dat")["mappings"]
            .as_array()
            .unwrap()
            .len(),
        3 * 5
    );
    let first_depot = after["mappings"][0]["depot"].as_str().unwrap().to_owned();
    ok(lors(
        &g,
        "carol",
        &["trim", "/vo1/carol.dat", "--depot", &first_depot],
    ));
    let trimmed = stat_json(&g, "carol", "/vo1/carol.dat");
    assert_eq!(
        trimmed["mappings"].as_array().unwrap().len(),
        2 * 5,
        "{trimmed}"
    );
    assert!(trimmed["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["depot"] != first_depot.as_str()));
    // Trimming what would lose data is refused, and changes nothing.
    let second = trimmed["mappings"][0]["depot"].as_str().unwrap().to_owned();
    let third = trimmed["mappings"][1]["depot"].as_str().unwrap().to_owned();
    let o = lors(
        &g,
        "carol",
        &[
            "trim",
            "/vo1/carol.dat",
            "--depot",
            &second,
            "--depot",
            &third,
        ],
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    ok(bob_get(&g));
    assert!(
        std::fs::read(&bob_out).unwrap() == data,
        "bob reads after maintenance"
    );

    // The escrow key recovers the file for the VO admin, who first grants
    // themselves read (an admin right; the manager logs escrow releases).
    let alice = format!("user:{}@vo1", vo_id(&g, "alice"));
    ok(lors(
        &g,
        "alice",
        &[
            "acl",
            "set",
            "/vo1/carol.dat",
            "--access",
            &format!("{alice}=r"),
            &format!("{bob}=r"),
        ],
    ));
    let alice_out = g.user("alice").dir.join("recovered");
    ok(lors(
        &g,
        "alice",
        &[
            "download",
            "/vo1/carol.dat",
            alice_out.to_str().unwrap(),
            "--escrow-key",
            escrow.to_str().unwrap(),
        ],
    ));
    assert!(
        std::fs::read(&alice_out).unwrap() == data,
        "escrow recovery"
    );

    // Unshared: refused again.
    ok(lors(&g, "carol", &["unshare", "/vo1/carol.dat", &bob]));
    let o = bob_get(&g);
    assert_eq!(code(&o), 3, "{}", text(&o));

    // A member removed from the VO is refused everything.
    ok(lors(&g, "carol", &["share", "/vo1/carol.dat", &bob]));
    ok(bob_get(&g));
    let bob_id = vo_id(&g, "bob");
    let said = ok(lors(&g, "alice", &["members", "remove", &bob_id]));
    assert!(
        said.contains(&format!(
            "removed {bob_id} in VO vo1 at the metadata manager"
        )) && said.contains("removed at the L-Bone"),
        "{said}"
    );
    let o = bob_get(&g);
    assert_eq!(code(&o), 3, "{}", text(&o));
    // The same command removed him at the L-Bone: no more depot grants.
    let o = lors(&g, "bob", &["depots"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("removed member"),
        "{}",
        text(&o)
    );
    // Not by bob's own hand, at either service.
    let o = lors(&g, "bob", &["members", "restore", &bob_id]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let o = lors(&g, "bob", &["depots"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
}

#[test]
fn legacy_round_trip_with_an_exnode_file_and_no_credentials() {
    let g = grid(2);
    let dir = g.user("alice").dir.clone();
    let data = bytes(5 << 20, 17);
    let src = write(&dir, "f", &data);
    let xnd = dir.join("f.xnd");
    let no_creds = |args: &[&str]| {
        let mut c = lors_cmd(&g, "alice");
        c.env("X509_USER_PROXY", dir.join("no-proxy"))
            .env_remove("LORS_TRUST_DIR")
            .env_remove("LORS_METADATA_URL")
            .env_remove("LORS_LBONE_URL")
            .env("LORS_KEY_FILE", dir.join("no-key"))
            .args(args);
        run(c)
    };
    let out = ok(no_creds(&[
        "upload",
        src.to_str().unwrap(),
        "--xnd",
        xnd.to_str().unwrap(),
        "--security",
        "legacy",
        "--copies",
        "2",
        "--block-size",
        "1MiB",
        "--depot",
        &g.depots[0].legacy_addr,
        "--depot",
        &g.depots[1].legacy_addr,
    ]));
    assert!(out.contains("not encrypted"), "{out}");
    // The exNode is the LoRS 0.82 layout: mappings with read, write and
    // manage capabilities on the legacy ports, no encryption.
    let xml = std::fs::read_to_string(&xnd).unwrap();
    let x = exnode::parse_and_validate(xml.as_bytes()).unwrap();
    assert!(x.encryption.is_none());
    assert_eq!(x.mappings.len(), 10);
    for m in &x.mappings {
        assert!(m.write.is_some() && m.manage.is_some() && m.functions.is_empty());
        assert!(m.read.as_deref().unwrap().starts_with("ibp://127.0.0.1:"));
    }
    assert!(xml.contains("<exnode:metadata name=\"Version\" type=\"string\">3.0</exnode:metadata>"));
    let back = dir.join("f.out");
    ok(no_creds(&[
        "download",
        "--xnd",
        xnd.to_str().unwrap(),
        back.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&back).unwrap() == data);
    // lors-download is the same command.
    let alias = PathBuf::from(env!("CARGO_BIN_EXE_lors-download"));
    assert!(alias.exists());
    // Secure-only options without credentials are refused clearly.
    let o = no_creds(&["upload", src.to_str().unwrap(), "/vo1/x"]);
    assert_ne!(code(&o), 0);
}

// ------------------------------------------- talking to depots directly

/// What `user`'s own client holds: the trust store, the proxy and the
/// L-Bone's grants (by the address each names), for requests sent to the
/// depots by hand, as an attacker or a test would.
struct Direct {
    trust: ibp_auth::TrustStore,
    cred: ibp_auth::ProxyCredential,
    grants: std::collections::HashMap<String, String>,
    rt: tokio::runtime::Runtime,
}

impl Direct {
    fn new(g: &Grid, user: &str) -> Direct {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let trust = ibp_auth::TrustStore::load(&g.trust_dir).unwrap();
        let cred = ibp_auth::ProxyCredential::load(&g.proxy(user)).unwrap();
        let offer = rt
            .block_on(lors::depots::query_offer(
                &g.lbone_url,
                &trust,
                &cred,
                &lors::depots::DepotQuery::default(),
            ))
            .unwrap();
        let grants = offer
            .depots
            .into_iter()
            .map(|d| (d.address, d.grant))
            .collect();
        Direct {
            trust,
            cred,
            grants,
            rt,
        }
    }

    /// The exNode of `path` as the metadata manager gives it to this user
    /// (a reader gets the read capabilities only).
    fn exnode(&self, g: &Grid, path: &str) -> exnode::Exnode {
        let mdm =
            lors::metadata::MetadataClient::connect(&g.mdm_url, &self.trust, &self.cred).unwrap();
        self.rt.block_on(mdm.get(path, None)).unwrap().exnode
    }

    /// A TLS connection to the depot at `addr`, after AUTH with the grant.
    fn session(&self, addr: &str) -> ibp_depot_client::SecureClient {
        self.rt.block_on(async {
            let cfg = ibp_depot_client::SecureClient::config(&self.trust, &self.cred).unwrap();
            let mut c = ibp_depot_client::SecureClient::connect_with(addr, "127.0.0.1", &cfg)
                .await
                .unwrap();
            c.auth(&self.grants[addr]).await.unwrap();
            c
        })
    }

    /// `MANAGE INCR|DECR` of the read count with capability `cap`, on a
    /// session of its own (an error reply closes the connection).
    fn manage(
        &self,
        cap: &str,
        op: ibp_proto::ManageOp,
    ) -> Result<(), ibp_depot_client::ClientError> {
        let cap: ibp_proto::Capability = cap.parse().unwrap();
        let mut c = self.session(&cap.address());
        let line = ibp_proto::SecureRequest::Manage(ibp_proto::Manage {
            cap: cap.cap.clone(),
            op,
            cap_type: 1,
            timeout: 60,
        })
        .encode();
        self.rt
            .block_on(c.raw(&line, ibp_proto::Expect::Ok))
            .map(drop)
    }

    /// PROBE with `cap`: the allocation's read count, `None` if the depot
    /// says there is no such capability (freed).
    fn read_refs(&self, cap: &str) -> Option<u32> {
        let cap: ibp_proto::Capability = cap.parse().unwrap();
        let mut c = self.session(&cap.address());
        match self.rt.block_on(c.probe(&cap)) {
            Ok(p) => Some(p.read_refs),
            Err(e) if e.ibp() == Some(ibp_proto::IbpError::CapNotFound) => None,
            Err(e) => panic!("PROBE failed: {e}"),
        }
    }
}

/// Uploads `n` bytes (seed `seed`) to `path` as `user`, one copy, in 64 KiB
/// blocks spread over the depots; the data.
fn upload_small(g: &Grid, user: &str, path: &str, n: usize, seed: u64, copies: &str) -> Vec<u8> {
    let dir = g.user(user).dir.clone();
    let data = bytes(n, seed);
    let src = write(&dir, &format!("src-{seed}"), &data);
    ok(lors(
        g,
        user,
        &[
            "upload",
            src.to_str().unwrap(),
            path,
            "--copies",
            copies,
            "--block-size",
            "64KiB",
        ],
    ));
    data
}

#[test]
fn rm_and_trim_report_allocations_they_could_not_free_pinned_or_on_a_killed_depot() {
    let mut g = grid(2);
    keys_init(&g, "alice");
    let alice = Direct::new(&g, "alice");

    // An allocation pinned by an INCR (what any holder of its MANAGE
    // capability can do) survives the DECR of `lors rm`: reported as not
    // freed, exit 9, never "released".
    // Five blocks over two depots: several allocations per depot, released
    // one after the other on one session.
    upload_small(&g, "alice", "/vo1/pinned.dat", 300_000, 31, "1");
    let x = alice.exnode(&g, "/vo1/pinned.dat");
    assert_eq!(x.mappings.len(), 5);
    let pinned = x.mappings[0].manage.clone().unwrap();
    let others: Vec<String> = x.mappings[1..]
        .iter()
        .map(|m| m.manage.clone().unwrap())
        .collect();
    alice.manage(&pinned, ibp_proto::ManageOp::Incr).unwrap();
    assert_eq!(alice.read_refs(&pinned), Some(2));
    let o = lors(&g, "alice", &["rm", "/vo1/pinned.dat"]);
    assert_eq!(code(&o), 9, "{}", text(&o));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(out.contains("freed 4 of 5 allocation(s)"), "{}", text(&o));
    assert!(
        !out.contains("released") && !err.contains("released"),
        "{}",
        text(&o)
    );
    let shown = pinned
        .trim_start_matches("ibp://")
        .split('#')
        .next()
        .unwrap();
    assert!(
        err.contains(&format!(
            "allocation {shown} not freed: still allocated after DECR: 1 read reference(s) left"
        )),
        "{}",
        text(&o)
    );
    assert!(
        !err.contains('#'),
        "no capability key is shown: {}",
        text(&o)
    );
    // What it said is true: the pinned one is there, the others are gone.
    assert_eq!(alice.read_refs(&pinned), Some(1));
    for cap in &others {
        assert_eq!(alice.read_refs(cap), None);
    }
    // --json says the same.
    upload_small(&g, "alice", "/vo1/pinned2.dat", 1000, 32, "1");
    let x2 = alice.exnode(&g, "/vo1/pinned2.dat");
    let cap2 = x2.mappings[0].manage.clone().unwrap();
    alice.manage(&cap2, ibp_proto::ManageOp::Incr).unwrap();
    let o = lors(&g, "alice", &["rm", "--json", "/vo1/pinned2.dat"]);
    assert_eq!(code(&o), 9, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["all_freed"], false, "{v}");
    assert_eq!(v["releases"][0]["freed"], false, "{v}");
    assert!(
        v["releases"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("still allocated after DECR"),
        "{v}"
    );

    // trim (maintenance) reports a pinned replica it dropped: exit 11.
    upload_small(&g, "alice", "/vo1/trim.dat", 1000, 33, "2");
    let x3 = alice.exnode(&g, "/vo1/trim.dat");
    assert_eq!(x3.mappings.len(), 2);
    let (drop_depot, drop_cap) = (
        x3.mappings[0].depot.clone(),
        x3.mappings[0].manage.clone().unwrap(),
    );
    alice.manage(&drop_cap, ibp_proto::ManageOp::Incr).unwrap();
    let o = lors(
        &g,
        "alice",
        &["trim", "/vo1/trim.dat", "--depot", &drop_depot],
    );
    assert_eq!(code(&o), 11, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "not freed: {drop_depot} (range at 0): still allocated after DECR: 1 read reference(s) left"
        )),
        "{}",
        text(&o)
    );
    assert_eq!(alice.read_refs(&drop_cap), Some(1));

    // A depot killed (SIGKILL) while rm runs: its allocations are not
    // freed (no answer), named with the depot; the other depot's are.
    upload_small(&g, "alice", "/vo1/killed.dat", 300_000, 34, "1");
    let x4 = alice.exnode(&g, "/vo1/killed.dat");
    assert_eq!(x4.mappings.len(), 5);
    let killed = g.depots[1].tls_addr.clone().unwrap();
    let on_killed = x4.mappings.iter().filter(|m| m.depot == killed).count();
    assert!((1..5).contains(&on_killed), "blocks on both depots");
    g.kill_depot(1);
    let o = lors(&g, "alice", &["rm", "/vo1/killed.dat"]);
    assert_eq!(code(&o), 9, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains(&format!("freed {} of 5 allocation(s)", 5 - on_killed)),
        "{}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&killed) && err.contains("not freed") && !err.contains('#'),
        "{}",
        text(&o)
    );
}

/// The attack of issue 14 (1): bob, who may only read alice's file, takes
/// the READ capabilities of the exNode the metadata manager gives him and
/// sends MANAGE DECR (and INCR, to pin) with them on the depots' secure
/// ports. Refused: only the MANAGE capability, in a session of the owning
/// VO ID, changes reference counts; alice's download is identical after.
#[test]
fn reader_cannot_decr_away_an_allocation_with_read_capabilities() {
    let g = grid(2);
    keys_init(&g, "alice");
    let data = upload_small(&g, "alice", "/vo1/shared.dat", 200_000, 41, "2");
    // bob is known to the metadata manager (a VO member who used it); he
    // gets read access, no wrapped key: enough to get the exNode.
    ok(lors(&g, "bob", &["whoami"]));
    let bob_id = format!("user:{}@vo1", vo_id(&g, "bob"));
    ok(lors(
        &g,
        "alice",
        &[
            "acl",
            "set",
            "/vo1/shared.dat",
            "--access",
            &format!("{bob_id}=r"),
        ],
    ));
    let alice = Direct::new(&g, "alice");
    let bob = Direct::new(&g, "bob");
    let theirs = bob.exnode(&g, "/vo1/shared.dat");
    let mine = alice.exnode(&g, "/vo1/shared.dat");
    assert!(theirs
        .mappings
        .iter()
        .all(|m| m.manage.is_none() && m.read.is_some()));
    for (m, own) in theirs.mappings.iter().zip(&mine.mappings) {
        let read = m.read.as_deref().unwrap();
        for op in [
            ibp_proto::ManageOp::Decr,
            ibp_proto::ManageOp::Incr,
            ibp_proto::ManageOp::Decr,
        ] {
            let e = bob
                .manage(read, op)
                .expect_err("a READ capability changed a count");
            assert!(
                e.ibp().is_some(),
                "an IBP refusal, not a broken connection: {e}"
            );
        }
        // The count is what alice's upload left.
        assert_eq!(alice.read_refs(own.manage.as_deref().unwrap()), Some(1));
    }
    let out = g.user("alice").dir.join("shared.out");
    ok(lors(
        &g,
        "alice",
        &["download", "/vo1/shared.dat", out.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "alice's file is intact"
    );
}

#[test]
fn swapped_mapping_offsets_in_an_exnode_fail_download_with_an_integrity_error() {
    let g = grid(2);
    let dir = g.user("alice").dir.clone();
    let block = 1usize << 20;
    let data = bytes(3 * block, 23);
    let src = write(&dir, "f", &data);
    let xnd = dir.join("f.xnd");
    // Cleartext (the swap would return the file's own bytes in another
    // order), and encrypted once the user has a key (other plaintext, as
    // each block's IV follows its offset): both refused.
    let upload = |xnd: &std::path::Path| {
        ok(lors(
            &g,
            "alice",
            &[
                "upload",
                src.to_str().unwrap(),
                "--xnd",
                xnd.to_str().unwrap(),
                "--security",
                "legacy",
                "--copies",
                "1",
                "--block-size",
                "1MiB",
                "--depot",
                &g.depots[0].legacy_addr,
                "--depot",
                &g.depots[1].legacy_addr,
            ],
        ))
    };
    upload(&xnd);
    keys_init(&g, "alice");
    let sxnd = dir.join("s.xnd");
    upload(&sxnd);
    let said = String::from_utf8_lossy(&std::fs::read(&sxnd).unwrap()).into_owned();
    assert!(
        said.contains("aes-128-ctr"),
        "the second upload is encrypted"
    );
    for (name, file) in [("clear", &xnd), ("encrypted", &sxnd)] {
        let x = exnode::parse_and_validate(&std::fs::read(file).unwrap()).unwrap();
        assert_eq!(x.mappings.len(), 3, "{name}");
        assert!(
            x.mappings
                .iter()
                .all(|m| m.checksum.is_some_and(|c| c.algorithm() == "blake3-placed")),
            "{name}: new uploads bind checksums to their place"
        );
        // Swap the offsets of the first two blocks' mappings.
        let mut swapped = x.clone();
        let at = |o: u64| swapped.mappings.iter().position(|m| m.logical_offset == o);
        let (a, b) = (at(0).unwrap(), at(block as u64).unwrap());
        swapped.mappings[a].logical_offset = block as u64;
        swapped.mappings[b].logical_offset = 0;
        swapped.validate().expect("still a consistent exNode");
        let bad = dir.join(format!("{name}-swapped.xnd"));
        std::fs::write(&bad, exnode::to_xml(&swapped)).unwrap();
        if name == "encrypted" {
            std::fs::copy(
                dir.join("s.xnd.key"),
                dir.join(format!("{name}-swapped.xnd.key")),
            )
            .unwrap();
        }
        let out = dir.join(format!("{name}.out"));
        let o = lors(
            &g,
            "alice",
            &[
                "download",
                "--xnd",
                bad.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), 10, "{name}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("integrity check failed")
                && (err.contains("bytes 0..1048576") || err.contains("bytes 1048576..2097152")),
            "{name}: {}",
            text(&o)
        );
        assert!(!out.exists(), "{name}: no output file is left");
        // The exNode as written still downloads, identical.
        ok(lors(
            &g,
            "alice",
            &[
                "download",
                "--xnd",
                file.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        ));
        assert!(std::fs::read(&out).unwrap() == data, "{name}");
    }
    // An exNode with the older unbound checksums (BLAKE3 of the stored
    // bytes alone) is still read; its checksums check the bytes only.
    let mut old = exnode::parse_and_validate(&std::fs::read(&xnd).unwrap()).unwrap();
    for m in &mut old.mappings {
        let o = m.logical_offset as usize;
        let stored = &data[o..o + m.logical_length as usize];
        m.checksum = Some(exnode::Checksum::Blake3(*blake3::hash(stored).as_bytes()));
    }
    let oldf = dir.join("old.xnd");
    std::fs::write(&oldf, exnode::to_xml(&old)).unwrap();
    let out = dir.join("old.out");
    ok(lors(
        &g,
        "alice",
        &[
            "download",
            "--xnd",
            oldf.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ));
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn a_lors_0_82_style_exnode_with_aes_and_checksum_functions_downloads() {
    use lors::lors_e2e::{encode, FunctionSpec};
    let g = grid(1);
    let dir = g.user("alice").dir.clone();
    let data = bytes(3 * 1048576 + 12345, 23);
    let key = [7u8; 16];
    let spec = [
        FunctionSpec::AesEncrypt { key, iv: None },
        FunctionSpec::Checksum,
    ];
    let (stored, functions) = encode(&spec, 1 << 20, &data).expect("encode");
    // Store it as LoRS would: ALLOCATE + STORE on the legacy port.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let caps = rt.block_on(async {
        let mut c = ibp_depot_client::IbpClient::connect(&g.depots[0].legacy_addr)
            .await
            .unwrap();
        let caps = c
            .allocate(
                ibp_proto::Rid(0),
                ibp_proto::Reliability::Hard,
                3600,
                stored.len() as u64,
            )
            .await
            .unwrap();
        c.store(&caps.write, &stored).await.unwrap();
        caps
    });
    let x = exnode::Exnode {
        size: data.len() as u64,
        filename: Some("f".into()),
        mappings: vec![exnode::Mapping {
            logical_offset: 0,
            logical_length: data.len() as u64,
            alloc_offset: 0,
            alloc_length: stored.len() as u64,
            e2e_blocksize: 1 << 20,
            read: Some(caps.read.to_string()),
            write: Some(caps.write.to_string()),
            manage: Some(caps.manage.to_string()),
            depot: g.depots[0].legacy_addr.clone(),
            security: None,
            expires: None,
            checksum: None,
            share: None,
            functions,
            metadata: Vec::new(),
        }],
        ..Default::default()
    };
    let xnd = dir.join("lors.xnd");
    std::fs::write(&xnd, exnode::to_xml(&x)).unwrap();
    let back = dir.join("lors.out");
    ok(lors(
        &g,
        "alice",
        &[
            "download",
            "--xnd",
            xnd.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    ));
    assert!(std::fs::read(&back).unwrap() == data);
    // A corrupted block under the LoRS checksum is refused (exit 10).
    rt.block_on(async {
        let mut c = ibp_depot_client::IbpClient::connect(&g.depots[0].legacy_addr)
            .await
            .unwrap();
        let mut bad = stored[..64].to_vec();
        bad[40] ^= 1;
        c.write_at(&caps.write, 0, &bad).await.unwrap();
    });
    let o = lors(
        &g,
        "alice",
        &[
            "download",
            "--xnd",
            xnd.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 10, "{}", text(&o));
}

#[test]
fn the_crypto_level_round_trips_with_data_on_the_data_port() {
    let g = Grid::start(GridOptions {
        depots: 2,
        data_port: true,
        ..Default::default()
    })
    .expect("grid starts");
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes((3 << 20) + 5, 31);
    let src = write(&dir, "f", &data);
    let out = ok(lors(
        &g,
        "alice",
        &[
            "upload",
            src.to_str().unwrap(),
            "/vo1/crypto",
            "--security",
            "crypto",
            "--copies",
            "2",
            "--block-size",
            "1MiB",
        ],
    ));
    assert!(out.contains("crypto security"), "{out}");
    let st = stat_json(&g, "alice", "/vo1/crypto");
    assert!(st["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["security"] == "crypto"));
    let back = dir.join("f.out");
    ok(lors(
        &g,
        "alice",
        &["download", "/vo1/crypto", back.to_str().unwrap()],
    ));
    assert!(std::fs::read(&back).unwrap() == data);
    ok(lors(
        &g,
        "alice",
        &["refresh", "/vo1/crypto", "--duration", "1d"],
    ));
}

#[test]
fn an_interrupted_download_resumes_without_fetching_again() {
    let mut g = grid(2);
    let dir = g.user("alice").dir.clone();
    let data = bytes(16 << 20, 41);
    let src = write(&dir, "f", &data);
    let xnd = dir.join("f.xnd");
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            src.to_str().unwrap(),
            "--xnd",
            xnd.to_str().unwrap(),
            "--security",
            "legacy",
            "--no-encrypt",
            "--block-size",
            "1MiB",
            "--depot",
            &g.depots[0].legacy_addr.clone(),
            "--depot",
            &g.depots[1].legacy_addr.clone(),
        ],
    ));
    // One copy: the blocks on the killed depot cannot be read.
    g.kill_depot(1);
    let back = dir.join("f.out");
    // One range at a time: block 0 (on depot 0) is written before block 1
    // (on the dead depot) fails the download.
    let o = lors(
        &g,
        "alice",
        &[
            "download",
            "--threads",
            "1",
            "--xnd",
            xnd.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(!back.exists(), "no partial file under the destination");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--resume"),
        "{}",
        text(&o)
    );
    assert!(dir.join(".f.out.lors-part.journal").exists());
    g.restart_depot(1).expect("depot restarts");
    let out = ok(lors(
        &g,
        "alice",
        &[
            "download",
            "--resume",
            "--xnd",
            xnd.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("already there (resumed)"), "{out}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "resumed download differs"
    );
    assert!(!dir.join(".f.out.lors-part.journal").exists());
    assert!(!dir.join(".f.out.lors-part").exists());
}

#[test]
fn a_failed_upload_with_resume_continues_where_it_stopped() {
    let mut g = grid(2);
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes(40 << 20, 43);
    let src = write(&dir, "f", &data);
    let args = [
        "upload",
        src.to_str().unwrap(),
        "/vo1/resumed",
        "--copies",
        "2",
        "--block-size",
        "1MiB",
        "--threads",
        "1",
        "--resume",
    ];
    let mut c = lors_cmd(&g, "alice");
    c.args(args);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("spawn upload");
    // Wait until the journal lists a couple of stored blocks (the header is
    // its first line), then kill: with two copies on two depots and one
    // gone, no further block can be placed.
    let journal_lines = |g: &Grid| -> usize {
        let mut files = files_under(&g.user("alice").dir.join(".local/state/lors/uploads"));
        files.extend(files_under(&g.dir.join(".local/state/lors/uploads")));
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).map_or(0, |t| t.lines().count()))
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while journal_lines(&g) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    g.kill_depot(1);
    let o = child.wait_with_output().expect("upload ends");
    assert_ne!(code(&o), 0, "the upload cannot complete: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--resume"),
        "{}",
        text(&o)
    );
    let stat = lors(&g, "alice", &["stat", "/vo1/resumed"]);
    assert_eq!(code(&stat), 7, "nothing registered: {}", text(&stat));
    let journals = files_under(&g.user("alice").dir.join(".local/state/lors/uploads"));
    let journals: Vec<_> = if journals.is_empty() {
        files_under(&g.dir.join(".local/state/lors/uploads"))
    } else {
        journals
    };
    assert_eq!(journals.len(), 1, "one journal");
    let stored_before = std::fs::read_to_string(&journals[0])
        .unwrap()
        .lines()
        .count()
        - 1;
    assert!(stored_before > 0, "some blocks were stored before the kill");

    g.restart_depot(1).expect("depot restarts");
    // The L-Bone offers it again only once it has polled it.
    g.wait_lbone_sees_all(Duration::from_secs(60))
        .expect("the L-Bone sees the depot again");
    ok(lors(&g, "alice", &args));
    assert!(!journals[0].exists(), "the journal is gone once registered");
    let st = stat_json(&g, "alice", "/vo1/resumed");
    assert_eq!(st["mappings"].as_array().unwrap().len(), 2 * 40, "{st}");
    let back = dir.join("out");
    ok(lors(
        &g,
        "alice",
        &["download", "/vo1/resumed", back.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "resumed upload differs"
    );
}

/// Hostile or broken exNode files are refused before any depot is
/// contacted: giant mappings (memory), garbage, a missing key file.
#[test]
fn hostile_and_broken_exnode_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let run_lors = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lors"));
        c.env_clear()
            .env("HOME", dir.path())
            .env("LORS_CONFIG", dir.path().join("none.toml"))
            .env("X509_USER_PROXY", dir.path().join("no-proxy"))
            .args(args);
        run(c)
    };
    let huge = exnode::Exnode {
        size: 2 << 30,
        mappings: vec![exnode::Mapping {
            logical_offset: 0,
            logical_length: 2 << 30,
            alloc_offset: 0,
            alloc_length: 2 << 30,
            e2e_blocksize: 0,
            read: Some("ibp://127.0.0.1:9/0#abc/0/READ".into()),
            write: None,
            manage: None,
            depot: "127.0.0.1:9".into(),
            security: None,
            expires: None,
            checksum: None,
            share: None,
            functions: Vec::new(),
            metadata: Vec::new(),
        }],
        ..Default::default()
    };
    let f = dir.path().join("huge.xnd");
    std::fs::write(&f, exnode::to_xml(&huge)).unwrap();
    let out = dir.path().join("out");
    let o = run_lors(&[
        "download",
        "--xnd",
        f.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("larger than"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());

    let g = dir.path().join("garbage.xnd");
    std::fs::write(&g, "<exnode><unclosed>").unwrap();
    let o = run_lors(&[
        "download",
        "--xnd",
        g.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a usable exNode"),
        "{}",
        text(&o)
    );

    let o = run_lors(&[
        "download",
        "--xnd",
        dir.path().join("missing.xnd").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    // Encrypted without its key file: a data error naming the key file.
    let enc = exnode::Exnode {
        file: Some(uuid::Uuid::new_v4()),
        block_size: Some(1 << 20),
        encryption: Some(exnode::Encryption {
            cipher: exnode::Cipher::Aes128Ctr,
            key_id: "k-1".into(),
            iv: exnode::IvDerivation::UuidBlock,
        }),
        size: 10,
        mappings: vec![exnode::Mapping {
            logical_length: 10,
            alloc_length: 10,
            ..huge.mappings[0].clone()
        }],
        ..Default::default()
    };
    let e = dir.path().join("enc.xnd");
    std::fs::write(&e, exnode::to_xml(&enc)).unwrap();
    let kp = lors::crypto::KeyPair::generate().unwrap();
    let key = dir.path().join("key.pem");
    lors::crypto::write_private_key(&key, &kp).unwrap();
    let o = run_lors(&[
        "download",
        "--xnd",
        e.to_str().unwrap(),
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("enc.xnd.key"),
        "{}",
        text(&o)
    );
}
