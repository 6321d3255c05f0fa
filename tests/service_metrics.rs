//! Prometheus metrics of the HTTPS daemons on a real grid (issue 20,
//! "Prometheus metrics on every daemon"): requests by route and status,
//! refusals by reason, latencies, connections, and the L-Bone's depots by
//! liveness state, which follow a depot killed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Daemon, GridOptions};

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
    assert!(head.contains("text/plain"), "{head}");
    body.to_owned()
}

/// The value of the sample `name{labels}` (exact line prefix), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_https_daemons_count_requests_refusals_and_depots() {
    let _timer = Timer::start("the_https_daemons_count_requests_refusals_and_depots");
    let mut g = start(GridOptions::default());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["ls", "/vo1"]));
    let o = lors(&g, "alice", &["stat", "/vo1/no-such-file"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    upload(&g, "alice", "f", &bytes(10_000, 1), "/vo1/f", &[]);
    // bob may not administer alice's file.
    let o = lors(&g, "bob", &["acl", "get", "/vo1/f"]);
    assert_eq!(code(&o), 3, "{}", text(&o));

    let mdm = get(&g.metrics_url(Daemon::MetadataManager).expect("mdm metrics"));
    for (series, at_least) in [
        (
            "mdm_http_requests_total{route=\"/v1/list\",method=\"POST\",status=\"200\"}",
            1.0,
        ),
        (
            "mdm_http_requests_total{route=\"/v1/put\",method=\"POST\",status=\"200\"}",
            1.0,
        ),
        (
            "mdm_http_requests_total{route=\"/v1/acl/get\",method=\"POST\",status=\"403\"}",
            1.0,
        ),
        ("mdm_http_refusals_total{reason=\"forbidden\"}", 1.0),
        ("mdm_http_refusals_total{reason=\"not_found\"}", 1.0),
        (
            "mdm_http_request_duration_seconds_count{route=\"/v1/put\"}",
            1.0,
        ),
        // Database time, by store operation.
        ("mdm_db_duration_seconds_count{op=\"put_version\"}", 1.0),
        ("mdm_db_duration_seconds_count{op=\"list\"}", 1.0),
    ] {
        let v = sample(&mdm, series).unwrap_or_else(|| panic!("no {series} in\n{mdm}"));
        assert!(v >= at_least, "{series} = {v}\n{mdm}");
    }
    assert_eq!(
        sample(&mdm, "mdm_http_server_errors_total"),
        Some(0.0),
        "{mdm}"
    );
    assert!(sample(&mdm, "mdm_connections_open").is_some(), "{mdm}");

    // The online CA: a wrong password is a refusal.
    let mut c = g.lors("alice");
    c.args([
        "login",
        "--method",
        "local",
        "--user",
        "alice",
        "--password-stdin",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("lors login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"not the password\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_ne!(o.status.code(), Some(0));
    let ca = get(&g.metrics_url(Daemon::OnlineCa).expect("ca metrics"));
    assert!(
        sample(&ca, "ca_http_refusals_total{reason=\"unauthenticated\"}").unwrap_or(0.0) >= 1.0,
        "{ca}"
    );

    // The L-Bone: queries counted, depots by state, a killed depot goes down.
    let url = g.metrics_url(Daemon::Lbone).expect("lbone metrics");
    let lb = get(&url);
    assert!(
        sample(
            &lb,
            "lbone_http_requests_total{route=\"/v1/query\",method=\"POST\",status=\"200\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{lb}"
    );
    assert_eq!(
        sample(&lb, "lbone_depots{vo=\"vo1\",state=\"up\"}"),
        Some(3.0),
        "{lb}"
    );
    // Database time: the API's queries and the poller's records.
    for op in ["depots", "record_success"] {
        let series = format!("lbone_db_duration_seconds_count{{op=\"{op}\"}}");
        assert!(
            sample(&lb, &series).unwrap_or(0.0) >= 1.0,
            "{series} in\n{lb}"
        );
    }
    g.kill_depot(0);
    wait_until(
        Duration::from_secs(30),
        "the L-Bone counts the depot down",
        || {
            let lb = get(&url);
            sample(&lb, "lbone_depots{vo=\"vo1\",state=\"down\"}") == Some(1.0)
                && sample(&lb, "lbone_depots{vo=\"vo1\",state=\"up\"}") == Some(2.0)
        },
    );
}
