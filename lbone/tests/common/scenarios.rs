//! The L-Bone suite, run once per database (tests/sqlite.rs,
//! tests/postgres.rs). Each scenario starts its own L-Bone, depots and
//! database.

use std::time::{Duration, Instant};

use ibp_auth::tokens::DepotGrant;
use ibp_auth::{unix_now, AuthError};
use lors::depots::{DepotQuery, Location, Near, Reliability};

use super::{wait_for, Db, Depot, Grid, HangingDepot, SecureDepot, Settings};

const BRNO: &str = "49.1951,16.6068";
const PRAGUE: &str = "50.0755,14.4378";
const KNOXVILLE: &str = "35.9606,-83.9207";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn all() -> DepotQuery {
    DepotQuery::default()
}

/// Three depots registered; one SIGKILLed goes unavailable within two poll
/// intervals (plus scheduling slack) and is not offered; restarted on the
/// same port, it is offered again.
pub fn liveness_kill_and_restart(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let mut depots: Vec<Depot> = ["a", "b", "c"]
        .iter()
        .map(|n| Depot::start(g.path(), n, "256MiB"))
        .collect();
    for (d, name) in depots.iter().zip(["a", "b", "c"]) {
        g.register(&admin, name, d.port, BRNO, &[]);
    }
    g.wait_available("vo1", &["a", "b", "c"]);
    assert_eq!(g.offered(&member, &all()).len(), 3);
    let status = g.depot_status("vo1", "b");
    assert_eq!(status["status"]["state"], "up");
    assert_eq!(status["status"]["hard"]["capacity"], 256u64 << 20);
    assert_eq!(status["status"]["max_duration"], 86_400);

    depots[1].kill();
    let killed = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "the killed depot to go down",
        || (!g.is_available("vo1", "b")).then_some(()),
    );
    let down_after = killed.elapsed();
    // missed_polls_down = 2 at a 1 s interval: down at the second poll
    // after the kill, i.e. within two intervals (slack for a loaded machine).
    assert!(
        down_after <= Duration::from_millis(2_750),
        "down only after {down_after:?}; log:\n{}",
        g.log_text()
    );
    let s = g.depot_status("vo1", "b");
    assert_eq!(s["status"]["state"], "down");
    assert!(s["status"]["misses"].as_u64().unwrap() >= 2, "{s}");
    assert!(
        s["status"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connect"),
        "{s}"
    );
    let offered = g.offered(&member, &all());
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(!offered.contains(&"b".to_string()));

    let port = depots[1].port;
    depots[1].restart();
    assert_eq!(depots[1].port, port);
    let restarted = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "the restarted depot to come back",
        || g.is_available("vo1", "b").then_some(()),
    );
    assert!(
        restarted.elapsed() <= Duration::from_millis(1_750),
        "back only after {:?}",
        restarted.elapsed()
    );
    assert_eq!(g.offered(&member, &all()).len(), 3);
}

/// Only the VO's admin group may register, change or remove; everything an
/// admin does is visible in the listing.
pub fn registration_rights(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins", "users"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let other_admin = g.pki.user("admin2", "vo2", &["admins"]);
    let expired = g.pki.user_with("gone", "vo1", &["admins"], -7200, -3600);
    let d = Depot::start(g.path(), "a", "256MiB");
    let port = d.port.to_string();
    let register = |u: &super::User, name: &str| {
        g.admin(
            u,
            &[
                "register",
                "--vo",
                "vo1",
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--location",
                BRNO,
            ],
        )
    };
    let out = register(&member, "x");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    assert!(stderr(&out).contains("admins"), "{}", stderr(&out));
    let out = register(&other_admin, "x");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    assert!(stderr(&out).contains("vo2"), "{}", stderr(&out));
    let out = register(&expired, "x");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    let out = g.admin(&member, &["list", "--vo", "vo1"]);
    assert!(!out.status.success() && stderr(&out).contains("HTTP 403"));
    // No client certificate at all: 401.
    let (status, _) = g.get_anonymous("/v1/vos/vo1/depots");
    assert_eq!(status, 401);

    let out = register(&admin, "brno-1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("registered depot brno-1"));
    // The same name, or the same address under another name: 409.
    let out = register(&admin, "brno-1");
    assert!(stderr(&out).contains("HTTP 409"), "{}", stderr(&out));
    let out = register(&admin, "brno-2");
    assert!(stderr(&out).contains("HTTP 409"), "{}", stderr(&out));
    // Bad input is refused before it reaches the database.
    let out = g.admin(
        &admin,
        &[
            "register",
            "--vo",
            "vo1",
            "--name",
            "<b>",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--location",
            BRNO,
        ],
    );
    assert!(stderr(&out).contains("HTTP 400"), "{}", stderr(&out));

    let list = g.admin_ok(&admin, &["list", "--vo", "vo1"]);
    let depots = list["depots"].as_array().unwrap();
    assert_eq!(depots.len(), 1);
    assert_eq!(depots[0]["name"], "brno-1");
    assert_eq!(depots[0]["registered_by"], "vo1:admin1");
    assert_eq!(depots[0]["address"], format!("127.0.0.1:{port}"));

    let updated = g.admin_ok(
        &admin,
        &[
            "update",
            "--vo",
            "vo1",
            "--name",
            "brno-1",
            "--tls-port",
            "16715",
            "--place",
            "Brno, CZ",
            "--max-size",
            "1GiB",
            "--max-duration",
            "7d",
        ],
    );
    assert_eq!(updated["tls_port"], 16715);
    assert_eq!(updated["address"], "127.0.0.1:16715");
    assert_eq!(updated["place"], "Brno, CZ");
    assert_eq!(updated["policy"]["max_size"], 1u64 << 30);
    assert_eq!(updated["policy"]["max_duration"], 7 * 86_400);
    let shown = g.admin_ok(&admin, &["show", "--vo", "vo1", "--name", "brno-1"]);
    assert_eq!(shown["tls_port"], 16715);
    let cleared = g.admin_ok(
        &admin,
        &[
            "update",
            "--vo",
            "vo1",
            "--name",
            "brno-1",
            "--no-tls-port",
            "--no-max-size",
        ],
    );
    assert_eq!(cleared["tls_port"], serde_json::Value::Null);
    assert_eq!(cleared["policy"]["max_size"], serde_json::Value::Null);
    assert_eq!(cleared["place"], "Brno, CZ");
    let out = g.admin(&member, &["remove", "--vo", "vo1", "--name", "brno-1"]);
    assert!(stderr(&out).contains("HTTP 403"));
    let out = g.admin(&admin, &["remove", "--vo", "vo1", "--name", "nope"]);
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
    let out = g.admin(&admin, &["remove", "--vo", "vo1", "--name", "brno-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed depot brno-1"));
    let list = g.admin_ok(&admin, &["list", "--vo", "vo1"]);
    assert!(list["depots"].as_array().unwrap().is_empty());
}

/// VOs see only their own registrations; one depot may serve two VOs with
/// different policies; a member whose attributes expired gets nothing.
pub fn vo_isolation_and_revocation(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin1 = g.pki.user("admin1", "vo1", &["admins"]);
    let admin2 = g.pki.user("admin2", "vo2", &["admins"]);
    let member1 = g.pki.user("member1", "vo1", &["users"]);
    let member2 = g.pki.user("member2", "vo2", &["users"]);
    let gone = g.pki.user_with("gone", "vo1", &["users"], -7200, -3600);
    let shared = Depot::start(g.path(), "shared", "256MiB");
    let only1 = Depot::start(g.path(), "only1", "256MiB");
    g.register(&admin1, "shared", shared.port, BRNO, &[]);
    g.register(&admin1, "only1", only1.port, BRNO, &[]);
    g.register(
        &admin2,
        "their-shared",
        shared.port,
        PRAGUE,
        &["--max-size", "1MiB"],
    );
    g.wait_available("vo1", &["shared", "only1"]);
    g.wait_available("vo2", &["their-shared"]);

    let mut seen1 = g.offered(&member1, &all());
    seen1.sort();
    assert_eq!(seen1, ["only1", "shared"]);
    assert_eq!(g.offered(&member2, &all()), ["their-shared"]);
    // vo2's policy on the shared depot is its own.
    let big = DepotQuery {
        size: 2 << 20,
        ..all()
    };
    assert!(g.offered(&member2, &big).is_empty());
    assert_eq!(g.offered(&member1, &big).len(), 2);
    // Asking for another VO than the attributes say.
    let wrong = DepotQuery {
        vo: Some("vo1".into()),
        ..all()
    };
    match g.query(&member2, &wrong) {
        Err(lors::Error::Refused(m)) => assert!(m.contains("403"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // vo2's admin cannot see vo1's registrations.
    let out = g.admin(&admin2, &["list", "--vo", "vo1"]);
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    // Revocation: attributes no longer valid → no depots, no grants.
    match g.query(&gone, &all()) {
        Err(lors::Error::Refused(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Grants name the depot (TLS port when registered), bind the caller's
/// proxy key, last the configured lifetime, and fail for another holder or
/// after expiry; asking again renews them.
pub fn grants(db: Db) {
    let g = Grid::start_on_clock(
        db,
        Settings {
            grant_lifetime: "5m",
            ..Settings::default()
        },
    );
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let other = g.pki.user("member2", "vo1", &["users"]);
    let plain = Depot::start(g.path(), "plain", "256MiB");
    // Polled over TLS: a real secure port (legacy port on too).
    let secure = secure_depot(&g, "secure", true);
    let tls_port = secure.tls_port.unwrap();
    g.register(&admin, "plain", plain.port, BRNO, &[]);
    register_tls(&g, &admin, "secure", &secure);
    g.wait_available("vo1", &["plain", "secure"]);
    let trust = g.pki.client_trust_store();
    let holder = member.credential.key_hash().unwrap();
    let offer = g.query_ok(&member, &all());
    assert_eq!(offer.vo, "vo1");
    assert_eq!(offer.vo_id, "vo1:member1");
    assert_eq!(offer.depots.len(), 2);
    let now = unix_now();
    for d in &offer.depots {
        let expected = match d.name.as_str() {
            "plain" => format!("127.0.0.1:{}", plain.port),
            "secure" => format!("127.0.0.1:{tls_port}"),
            n => panic!("unexpected depot {n}"),
        };
        assert_eq!(d.address, expected);
        let grant = DepotGrant::verify(&d.grant, &trust, &expected, &holder, now)
            .unwrap_or_else(|e| panic!("grant for {}: {e}", d.name));
        assert_eq!(grant.vo, "vo1");
        assert_eq!(grant.vo_id, "vo1:member1");
        assert_eq!(grant.not_after - grant.issued, 300);
        assert_eq!(grant.not_after, d.grant_not_after);
        // Another holder's key.
        let other_key = other.credential.key_hash().unwrap();
        assert_eq!(
            DepotGrant::verify(&d.grant, &trust, &expected, &other_key, now),
            Err(AuthError::WrongTokenHolder)
        );
        // Another depot.
        assert!(matches!(
            DepotGrant::verify(&d.grant, &trust, "127.0.0.1:1", &holder, now),
            Err(AuthError::WrongTarget { .. })
        ));
        // After expiry (beyond the clock-skew allowance).
        let later = grant.not_after + trust.max_skew + 1;
        assert!(matches!(
            DepotGrant::verify(&d.grant, &trust, &expected, &holder, later),
            Err(AuthError::Expired { .. })
        ));
    }
    // The secure depot's grant does not open its legacy port.
    let secure_offer = offer.depots.iter().find(|d| d.name == "secure").unwrap();
    assert!(DepotGrant::verify(
        &secure_offer.grant,
        &trust,
        &format!("127.0.0.1:{}", secure.port),
        &holder,
        now
    )
    .is_err());
    // Renewal: ask again (two seconds later on the L-Bone's clock), get
    // fresh grants.
    g.advance_clock(2);
    let again = g.query_ok(&member, &all());
    assert!(again.issued > offer.issued);
    assert!(again.depots[0].grant_not_after > offer.depots[0].grant_not_after);
}

/// Nearest first by coordinates or by a registered place name; without a
/// location, most free space first.
pub fn location_ordering(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let brno = Depot::start(g.path(), "brno", "100MiB");
    let prague = Depot::start(g.path(), "prague", "300MiB");
    let knox = Depot::start(g.path(), "knoxville", "200MiB");
    g.register(&admin, "brno", brno.port, BRNO, &["--place", "Brno, CZ"]);
    g.register(
        &admin,
        "prague",
        prague.port,
        PRAGUE,
        &["--place", "Praha, CZ"],
    );
    g.register(
        &admin,
        "knoxville",
        knox.port,
        KNOXVILLE,
        &["--place", "Knoxville, TN"],
    );
    g.wait_available("vo1", &["brno", "prague", "knoxville"]);

    let near = |n: Near| DepotQuery {
        near: Some(n),
        ..all()
    };
    let from_brno = g.query_ok(
        &member,
        &near(Near::Location(Location {
            lat: 49.2,
            lon: 16.6,
        })),
    );
    let names: Vec<_> = from_brno.depots.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["brno", "prague", "knoxville"]);
    let km: Vec<f64> = from_brno
        .depots
        .iter()
        .map(|d| d.distance_km.unwrap())
        .collect();
    assert!(
        km[0] < 2.0 && (150.0..250.0).contains(&km[1]) && km[2] > 7000.0,
        "{km:?}"
    );
    assert_eq!(
        g.offered(&member, &near(Near::Place("knoxville, tn".into()))),
        ["knoxville", "prague", "brno"]
    );
    assert_eq!(
        g.offered(&member, &near(Near::Place("Praha, CZ".into())))[0],
        "prague"
    );
    // No location: most free space first.
    assert_eq!(g.offered(&member, &all()), ["prague", "knoxville", "brno"]);
    // count 1 near Knoxville: the nearest only.
    let one = DepotQuery {
        count: Some(1),
        ..near(Near::Place("Knoxville, TN".into()))
    };
    assert_eq!(g.offered(&member, &one), ["knoxville"]);
    match g.query(&member, &near(Near::Place("Atlantis".into()))) {
        Err(lors::Error::BadRequest(m)) => assert!(m.contains("unknown place"), "{m}"),
        other => panic!("expected 400, got {other:?}"),
    }
}

/// A depot that accepts the STATUS connection and never answers delays no
/// one: the other depots' last-seen keeps advancing at the poll interval.
pub fn hanging_depot_does_not_stall_polling(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            poll_timeout: "5s",
            ..Settings::default()
        },
    );
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let hang = HangingDepot::start();
    let a = Depot::start(g.path(), "a", "256MiB");
    let b = Depot::start(g.path(), "b", "256MiB");
    g.register(&admin, "hung", hang.port, BRNO, &[]);
    g.register(&admin, "a", a.port, BRNO, &[]);
    g.register(&admin, "b", b.port, BRNO, &[]);
    g.wait_available("vo1", &["a", "b"]);
    wait_for(
        Duration::from_secs(5),
        "the hung depot to be polled",
        || (hang.accepted.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(()),
    );

    // Sample last-seen for 4.5 s: it must advance about once a second even
    // though the hung depot's polls each take the full 5 s timeout.
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(), Vec::new()];
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4_500) {
        for (i, name) in ["a", "b"].iter().enumerate() {
            let t = g.depot_status("vo1", name)["status"]["last_seen_ms"]
                .as_i64()
                .unwrap();
            if seen[i].last() != Some(&t) {
                seen[i].push(t);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, times) in seen.iter().enumerate() {
        assert!(times.len() >= 4, "depot {i}: last-seen values {times:?}");
        let max_gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            max_gap <= 1_600,
            "depot {i}: a gap of {max_gap} ms between polls: {times:?}"
        );
    }
    let hung = g.depot_status("vo1", "hung");
    assert_eq!(hung["status"]["available"], false, "{hung}");
    let mut offered = g.offered(&member, &all());
    offered.sort();
    assert_eq!(offered, ["a", "b"]);
    // After its timeout the hung depot records a missed poll, with the reason.
    wait_for(Duration::from_secs(10), "the hung poll to time out", || {
        let s = g.depot_status("vo1", "hung");
        s["status"]["last_error"]
            .as_str()
            .filter(|e| e.contains("no answer"))
            .map(|_| ())
    });
}

/// Asking for more depots than exist returns those that exist, and says so.
pub fn more_than_exist(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let a = Depot::start(g.path(), "a", "256MiB");
    let b = Depot::start(g.path(), "b", "256MiB");
    g.register(&admin, "a", a.port, BRNO, &[]);
    g.register(&admin, "b", b.port, PRAGUE, &[]);
    g.wait_available("vo1", &["a", "b"]);
    let q = DepotQuery {
        count: Some(5),
        size: 10 << 20,
        duration: 3600,
        reliability: Reliability::Soft,
        ..all()
    };
    let offer = g.query_ok(&member, &q);
    assert_eq!(offer.requested, Some(5));
    assert_eq!(offer.returned, 2);
    assert_eq!(offer.matching, 2);
    assert_eq!(offer.depots.len(), 2);
    let note = offer.note.expect("a note");
    assert!(note.contains("only 2 of the 5"), "{note}");
    // Within the policy and the depots' limits only.
    let too_long = DepotQuery {
        duration: 2 * 86_400,
        ..q.clone()
    };
    let none = g.query_ok(&member, &too_long);
    assert_eq!((none.returned, none.matching), (0, 0));
    let too_big = DepotQuery {
        size: 300 << 20,
        ..q
    };
    assert_eq!(g.query_ok(&member, &too_big).returned, 0);
}

/// The operators' page lists every depot per VO, escapes what admins
/// typed, and agrees with /status.json.
pub fn status_page(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin1 = g.pki.user("admin1", "vo1", &["admins"]);
    let admin2 = g.pki.user("admin2", "vo2", &["admins"]);
    let a = Depot::start(g.path(), "a", "256MiB");
    let b = Depot::start(g.path(), "b", "256MiB");
    g.register(
        &admin1,
        "alpha",
        a.port,
        BRNO,
        &["--place", "<script>alert('x')</script> & \"co\""],
    );
    g.register(&admin2, "beta", b.port, PRAGUE, &[]);
    // A registered address where nothing listens: down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    g.register(&admin2, "gamma", closed, KNOXVILLE, &[]);
    g.wait_available("vo1", &["alpha"]);
    g.wait_available("vo2", &["beta"]);
    wait_for(Duration::from_secs(10), "gamma to be down", || {
        (g.depot_status("vo2", "gamma")["status"]["state"] == "down").then_some(())
    });

    let (status, body) = g.get_anonymous("/status");
    assert_eq!(status, 200);
    let html = String::from_utf8(body).unwrap();
    let json = g.status_json();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script>"), "unescaped input in:\n{html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;"));
    let vos: Vec<&str> = json["vos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vo"].as_str().unwrap())
        .collect();
    assert_eq!(vos, ["vo1", "vo2"]);
    for vo in json["vos"].as_array().unwrap() {
        assert!(html.contains(&format!("<h2>VO {}</h2>", vo["vo"].as_str().unwrap())));
        for d in vo["depots"].as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            let state = d["status"]["state"].as_str().unwrap();
            let addr = format!("127.0.0.1:{}", d["port"]);
            let row = html
                .lines()
                .find(|l| l.starts_with(&format!("<tr><td>{name}</td>")))
                .unwrap_or_else(|| panic!("no row for {name} in:\n{html}"));
            assert!(row.contains(&addr), "{row}");
            assert!(row.contains(&format!("class=\"{state}\"")), "{row}");
            // Public page: no admin identities.
            assert!(d.get("registered_by").is_none(), "{d}");
        }
    }
    let names: Vec<&str> = json["vos"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["depots"].as_array().unwrap())
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(g.depot_status("vo2", "gamma")["status"]["available"], false);
    assert_eq!(json["missed_polls_down"], 2);
    assert_eq!(json["poll_interval_ms"], 1000);
}

/// `lors depots` (the CLI) against the real L-Bone.
pub fn lors_cli(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let gone = g.pki.user_with("gone", "vo1", &["users"], -7200, -3600);
    let a = Depot::start(g.path(), "a", "256MiB");
    let b = Depot::start(g.path(), "b", "256MiB");
    g.register(&admin, "brno", a.port, BRNO, &["--place", "Brno, CZ"]);
    g.register(&admin, "knoxville", b.port, KNOXVILLE, &[]);
    g.wait_available("vo1", &["brno", "knoxville"]);
    let lors = super::sibling_binary("lors");
    let run = |user: &super::User, extra: &[&str]| {
        let mut cmd = std::process::Command::new(&lors);
        cmd.arg("depots")
            .args(["--lbone", &g.url])
            .arg("--trust")
            .arg(&g.pki.client_trust)
            .args(extra)
            .env("X509_USER_PROXY", &user.proxy_path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        super::run_bounded(cmd, super::CLI_TIMEOUT).unwrap()
    };
    let out = run(
        &member,
        &[
            "--json",
            "--count",
            "3",
            "--near",
            "36,-84",
            "--size",
            "1MiB",
            "--duration",
            "1h",
            "--vo",
            "vo1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requested"], 3);
    assert_eq!(v["returned"], 2);
    assert_eq!(v["depots"][0]["name"], "knoxville");
    assert!(v["depots"][0]["grant"].as_str().unwrap().contains('.'));
    assert!(stderr(&out).contains("only 2 of the 3"), "{}", stderr(&out));
    let out = run(&member, &["--near", "Brno, CZ", "--reliability", "soft"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("VO vo1: 2 depot(s)"), "{text}");
    let first = text.lines().nth(1).unwrap_or("");
    assert!(first.starts_with("brno "), "{text}");
    // Expired attributes: refused, exit code 3.
    let out = run(&gone, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    let out = run(&member, &["--count", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// SIGTERM stops the L-Bone promptly and cleanly, even when its database
/// has gone away (the poller waiting for a connection must not hold it).
pub fn shutdown_is_prompt(db: Db) {
    let mut g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let d = Depot::start(g.path(), "a", "256MiB");
    g.register(&admin, "a", d.port, BRNO, &[]);
    g.wait_available("vo1", &["a"]);
    g.stop_database();
    std::thread::sleep(Duration::from_millis(1_500));
    let (status, took) = g.stop();
    let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", g.log_text()));
    assert!(status.success(), "exit {status:?}; log:\n{}", g.log_text());
    assert!(
        took < Duration::from_secs(7),
        "took {took:?}; log:\n{}",
        g.log_text()
    );
    assert!(g.log_text().contains("L-Bone stopped"));
}

/// A VO admin removes a member: the member's queries are refused (no more
/// grants) while the others carry on; only the VO's admins may remove,
/// list or restore, never themselves; restoring grants again.
pub fn removed_members(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin1 = g.pki.user("admin1", "vo1", &["admins"]);
    let admin2 = g.pki.user("admin2", "vo2", &["admins"]);
    let bob = g.pki.user("bob", "vo1", &["users"]);
    let carol = g.pki.user("carol", "vo1", &["users"]);
    let depot = Depot::start(g.path(), "d1", "256MiB");
    g.register(&admin1, "d1", depot.port, BRNO, &[]);
    g.wait_available("vo1", &["d1"]);
    assert_eq!(g.offered(&bob, &all()), ["d1"]);

    // Not an admin of vo1: refused, whether a member or another VO's admin.
    for who in [&carol, &admin2] {
        let out = g.admin(who, &["member", "remove", "--vo", "vo1", &bob.vo_id]);
        assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    }
    let out = g.admin(&carol, &["member", "list", "--vo", "vo1"]);
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    // Not oneself, not a malformed VO ID.
    let out = g.admin(&admin1, &["member", "remove", "--vo", "vo1", &admin1.vo_id]);
    assert!(stderr(&out).contains("yourself"), "{}", stderr(&out));
    let out = g.admin(&admin1, &["member", "remove", "--vo", "vo1", "bad id"]);
    assert!(stderr(&out).contains("HTTP 400"), "{}", stderr(&out));
    assert_eq!(g.offered(&bob, &all()), ["d1"], "nothing happened yet");

    let r = g.admin_ok(&admin1, &["member", "remove", "--vo", "vo1", &bob.vo_id]);
    assert_eq!(r["removed"], true);
    assert_eq!(r["already"], false);
    let r = g.admin_ok(&admin1, &["member", "remove", "--vo", "vo1", &bob.vo_id]);
    assert_eq!(r["already"], true);
    match g.query(&bob, &all()) {
        Err(lors::Error::Forbidden(m)) | Err(lors::Error::Refused(m)) => {
            assert!(m.contains("removed member"), "{m}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(g.offered(&carol, &all()), ["d1"]);
    let list = g.admin_ok(&admin1, &["member", "list", "--vo", "vo1"]);
    let removed = list["removed"].as_array().expect("a list");
    assert_eq!(removed.len(), 1, "{list}");
    assert_eq!(removed[0]["vo_id"], bob.vo_id.as_str());
    assert_eq!(removed[0]["removed_by"], admin1.vo_id.as_str());
    // vo2 knows nothing of it.
    let list = g.admin_ok(&admin2, &["member", "list", "--vo", "vo2"]);
    assert_eq!(list["removed"].as_array().map(Vec::len), Some(0));

    // Restored: grants again; restoring twice is "not found".
    g.admin_ok(&admin1, &["member", "restore", "--vo", "vo1", &bob.vo_id]);
    assert_eq!(g.offered(&bob, &all()), ["d1"]);
    let out = g.admin(&admin1, &["member", "restore", "--vo", "vo1", &bob.vo_id]);
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
}

/// A depot started with TLS on and its legacy port on or off.
fn secure_depot(g: &Grid, name: &str, legacy: bool) -> Depot {
    Depot::start_secure(
        g.path(),
        name,
        &SecureDepot {
            legacy,
            issuer: &g.pki.ca,
            trust_dir: &g.pki.server_trust,
            hard_size: 256 << 20,
        },
    )
}

/// Registers `d` by its (TLS) port, as docs/lbone.md says for a depot
/// without a legacy port.
fn register_tls(g: &Grid, admin: &super::User, name: &str, d: &Depot) {
    let tls = d.tls_port.expect("a secure depot").to_string();
    g.register(admin, name, d.port, BRNO, &["--tls-port", &tls]);
}

/// Waits until `vo`/`name` is reported down; its `last_error`.
fn wait_down_with_error(g: &Grid, vo: &str, name: &str) -> String {
    wait_for(Duration::from_secs(15), "the depot to be down", || {
        let s = g.depot_status(vo, name);
        (s["status"]["state"] == "down")
            .then(|| s["status"]["last_error"].as_str().unwrap_or("").to_owned())
    })
}

/// The operator switched the depot's legacy port off (`legacy = false`):
/// the L-Bone polls its TLS port (STATUS before AUTH, the L-Bone's own
/// certificate as client certificate), reports it up with its capacity
/// and offers it; members get grants for the TLS port. Before, such a
/// depot stayed down forever.
pub fn legacy_off_depot_is_polled_over_tls(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let d = secure_depot(&g, "tls-only", false);
    assert_eq!(Some(d.port), d.tls_port, "no legacy port");
    register_tls(&g, &admin, "tls-only", &d);
    g.wait_available("vo1", &["tls-only"]);
    let s = g.depot_status("vo1", "tls-only");
    assert_eq!(s["status"]["state"], "up", "{s}");
    assert_eq!(s["status"]["hard"]["capacity"], 256u64 << 20, "{s}");
    assert_eq!(s["status"]["hard"]["free"], 256u64 << 20, "{s}");
    assert_eq!(s["status"]["max_duration"], 86_400, "{s}");
    let offer = g.query_ok(&member, &all());
    assert_eq!(offer.depots.len(), 1);
    assert_eq!(
        offer.depots[0].address,
        format!("127.0.0.1:{}", d.tls_port.unwrap())
    );
    // Polled, not merely "up" once: it still answers every round.
    let first = g.depot_status("vo1", "tls-only")["status"]["last_seen_ms"]
        .as_i64()
        .unwrap();
    wait_for(Duration::from_secs(10), "another answered poll", || {
        let s = g.depot_status("vo1", "tls-only");
        (s["status"]["last_seen_ms"].as_i64().unwrap_or(0) > first).then_some(())
    });
    assert!(
        !d.log_text().contains("before AUTH"),
        "the depot refused a poll: {}",
        d.log_text()
    );
}

/// A depot (or whoever answers on its address) whose certificate is not
/// from a CA of the L-Bone's trust directory: the L-Bone refuses it in the
/// handshake, never falls back to the legacy port even when it is open,
/// and reports the depot down saying why; a correctly set-up depot polled
/// at the same time is up.
pub fn depot_with_untrusted_certificate_is_down(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let rogue_ca = ibp_auth::pki::Authority::new_ca(super::ORG, "Rogue CA", 30).unwrap();
    // Legacy port on as well: a fallback to it would find the depot up.
    let rogue = Depot::start_secure(
        g.path(),
        "rogue",
        &SecureDepot {
            legacy: true,
            issuer: &rogue_ca,
            trust_dir: &g.pki.server_trust,
            hard_size: 256 << 20,
        },
    );
    assert_ne!(Some(rogue.port), rogue.tls_port);
    let good = secure_depot(&g, "good", false);
    register_tls(&g, &admin, "rogue", &rogue);
    register_tls(&g, &admin, "good", &good);
    let err = wait_down_with_error(&g, "vo1", "rogue");
    assert!(
        err.contains("TLS") && err.contains("not issued by a CA of the L-Bone's trust directory"),
        "{err}"
    );
    g.wait_available("vo1", &["good"]);
    assert_eq!(g.offered(&member, &all()), ["good"]);
    assert!(
        g.log_text().contains("depot unavailable"),
        "{}",
        g.log_text()
    );
}

/// A depot whose trust directory does not hold the CA of the L-Bone's
/// certificate refuses the L-Bone's poll in the TLS handshake: it is down,
/// and `last_error` says that the depot refused the connection and what to
/// check.
pub fn depot_refusing_the_lbone_certificate_is_down(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let other_ca = ibp_auth::pki::Authority::new_ca(super::ORG, "Other CA", 30).unwrap();
    let trust = g.path().join("other-trust");
    super::write(
        &trust.join("ca/other.pem"),
        &super::pem_of("CERTIFICATE", &other_ca.cert_der),
    );
    let d = Depot::start_secure(
        g.path(),
        "distrustful",
        &SecureDepot {
            legacy: false,
            issuer: &g.pki.ca,
            trust_dir: &trust,
            hard_size: 256 << 20,
        },
    );
    register_tls(&g, &admin, "distrustful", &d);
    let err = wait_down_with_error(&g, "vo1", "distrustful");
    assert!(
        err.contains("the depot refused the connection (TLS alert") && err.contains("clientAuth"),
        "{err}"
    );
}

/// An admin of another VO registers the same depot address with a TLS
/// port where nothing (or something else) answers: that VO sees it down,
/// but the VO that registered it correctly still sees it up and is still
/// offered it (the poller's status is per registered TLS port).
pub fn other_vo_bad_tls_port_does_not_take_the_depot_down(db: Db) {
    let g = Grid::start(db, Settings::default());
    let admin1 = g.pki.user("admin1", "vo1", &["admins"]);
    let admin2 = g.pki.user("admin2", "vo2", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let d = secure_depot(&g, "shared", true);
    register_tls(&g, &admin1, "shared", &d);
    g.wait_available("vo1", &["shared"]);
    // vo2's admin gives a TLS port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    g.register(&admin2, "shared", d.port, BRNO, &["--tls-port", &closed]);
    let err = wait_down_with_error(&g, "vo2", "shared");
    assert!(err.contains("connect"), "{err}");
    // Several rounds later vo1's registration is still up.
    let before = g.depot_status("vo1", "shared")["status"]["last_seen_ms"]
        .as_i64()
        .unwrap();
    wait_for(Duration::from_secs(10), "vo1's depot polled again", || {
        let s = g.depot_status("vo1", "shared");
        (s["status"]["last_seen_ms"].as_i64().unwrap_or(0) > before).then_some(())
    });
    let s = g.depot_status("vo1", "shared");
    assert_eq!(s["status"]["state"], "up", "{s}");
    assert_eq!(g.offered(&member, &all()), ["shared"]);
}

/// Lines of an L-Bone log that record a poll of the depot on `port`
/// (answered or missed).
fn polls_in(log: &str, port: u16) -> usize {
    let addr = format!("depot=127.0.0.1:{port} ");
    log.lines()
        .filter(|l| l.contains(&addr))
        .filter(|l| l.contains("depot answered") || l.contains("depot missed a poll"))
        .count()
}

/// Two instances on one database (PostgreSQL): each depot is polled by
/// one instance only, so misses are not counted twice and depots are not
/// polled twice as often; when that instance dies (SIGKILL), the other
/// takes the polls over and the depots stay up.
pub fn two_instances_poll_each_depot_once(db: Db) {
    let mut g = Grid::start(
        db,
        Settings {
            poll_interval: "300ms",
            poll_timeout: "300ms",
            missed_polls_down: 3,
            ..Settings::default()
        },
    );
    let mut other = g.start_instance("lbone2");
    let admin = g.pki.user("admin1", "vo1", &["admins"]);
    let member = g.pki.user("member1", "vo1", &["users"]);
    let hang = HangingDepot::start();
    let a = Depot::start(g.path(), "a", "256MiB");
    g.register(&admin, "hung", hang.port, BRNO, &[]);
    g.register(&admin, "a", a.port, BRNO, &[]);
    g.wait_available("vo1", &["a"]);

    // Both instances run a round every 300 ms; wait for a dozen polls of
    // each depot in all.
    let logs = |g: &Grid, other: &ibp_testkit::process::Daemon| (g.log_text(), other.log_text());
    wait_for(
        Duration::from_secs(30),
        "a dozen polls of each depot",
        || {
            let (l1, l2) = logs(&g, &other);
            [hang.port, a.port]
                .iter()
                .all(|&p| polls_in(&l1, p) + polls_in(&l2, p) >= 12)
                .then_some(())
        },
    );
    let (l1, l2) = logs(&g, &other);
    assert!(
        l2.contains("polled by another L-Bone instance"),
        "the second instance never deferred to the first:\n{l2}"
    );
    for port in [hang.port, a.port] {
        let (p1, p2) = (polls_in(&l1, port), polls_in(&l2, port));
        assert!(
            p1 == 0 || p2 == 0,
            "depot on port {port} polled by both instances ({p1} and {p2})"
        );
    }
    // The misses of the hung depot are those of one poller: no more than
    // the polls that instance logged.
    let s = g.depot_status("vo1", "hung");
    let misses = s["status"]["misses"].as_u64().unwrap_or(0) as usize;
    let logged = polls_in(&g.log_text(), hang.port) + polls_in(&other.log_text(), hang.port);
    assert!(
        misses <= logged,
        "{misses} misses recorded for {logged} polls: {s}"
    );

    // Kill the first instance; the second serves and polls everything.
    g.kill();
    g.url = format!("https://localhost:{}", other.addr().port());
    let l2 = other.log_text();
    let before = [polls_in(&l2, a.port), polls_in(&l2, hang.port)];
    wait_for(
        Duration::from_secs(15),
        "the surviving instance to poll both depots",
        || {
            let l2 = other.log_text();
            (polls_in(&l2, a.port) >= before[0] + 3 && polls_in(&l2, hang.port) >= before[1] + 3)
                .then_some(())
        },
    );
    assert!(g.is_available("vo1", "a"), "{}", g.depot_status("vo1", "a"));
    assert_eq!(g.offered(&member, &all()), ["a"]);
    other.stop();
}
