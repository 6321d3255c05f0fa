//! The Prometheus `/metrics` endpoint counts requests and bytes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// `GET /metrics` over a raw HTTP/1.1 connection; returns (head, body).
fn get_metrics(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the metrics response");
    let text = String::from_utf8(raw).expect("metrics are text");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {text:?}"));
    (head.to_owned(), body.to_owned())
}

/// The value of the sample line `name` (with labels), if present.
fn sample(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls the endpoint until every expected sample has its value (the
/// counters are bumped right after the reply is written).
fn expect_samples(addr: SocketAddr, want: &[(&str, u64)]) -> String {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        let (head, body) = get_metrics(addr);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        last = body;
        want.iter().all(|(n, v)| sample(&last, n) == Some(*v))
    });
    if !ok {
        let got: Vec<_> = want.iter().map(|(n, _)| (n, sample(&last, n))).collect();
        panic!("expected {want:?}, got {got:?}; body:\n{last}");
    }
    last
}

#[test]
fn metrics_count_requests_and_bytes() {
    // A small spare budget: the default would make the spare figures
    // depend on TMPDIR's free space.
    let d = DepotBuilder::new()
        .metrics()
        .args(["--spare-bytes", "1MiB"])
        .spawn();
    let m = d.metrics.expect("metrics address");
    assert!(m.ip().is_loopback() && m.port() != 0 && m.port() != d.port());

    // Fresh depot: everything zero.
    let body = expect_samples(
        m,
        &[
            ("ibp_requests_total{command=\"ALLOCATE\",status=\"ok\"}", 0),
            ("ibp_bytes_in_total", 0),
            ("ibp_allocations{rid=\"0\"}", 0),
            ("ibp_spare_files{rid=\"0\"}", 0),
            ("ibp_spare_bytes{rid=\"0\"}", 0),
        ],
    );
    assert!(
        body.contains("# TYPE ibp_requests_total counter\n"),
        "{body}"
    );

    let mut c = d.connect();
    let a = c.allocate(2, 600, 10_000);
    let b = c.allocate(2, 600, 10_000);
    let x = c.allocate(1, 600, 100);
    c.store(&a.write, &pattern(1, 0, 3000));
    c.store(&a.write, &pattern(1, 3000, 1234));
    c.store(&b.write, b"0123456789");
    assert_eq!(c.load(&a.read, 0, 100).len(), 100);
    assert_eq!(c.load(&b.read, 5, 100).len(), 5);
    assert_eq!(c.request(&decr_line(&x.manage, 1)), "1 \n");
    // Two refused ALLOCATEs, one refused STORE, one line that does not parse.
    expect_error(&d, "1 1 0 2 1 999999 10 300\n", " -28 \n");
    expect_error(&d, "1 1 0 2 2 600 10 300\n", " -22 \n");
    expect_error(&d, &store_line(&b.write, 1_000_000), " -19 \n");
    expect_error(&d, "0 99\n", " -25 \n");

    expect_samples(
        m,
        &[
            ("ibp_requests_total{command=\"ALLOCATE\",status=\"ok\"}", 3),
            (
                "ibp_requests_total{command=\"ALLOCATE\",status=\"error\"}",
                2,
            ),
            ("ibp_requests_total{command=\"STORE\",status=\"ok\"}", 3),
            ("ibp_requests_total{command=\"STORE\",status=\"error\"}", 1),
            ("ibp_requests_total{command=\"LOAD\",status=\"ok\"}", 2),
            ("ibp_requests_total{command=\"MANAGE\",status=\"ok\"}", 1),
            (
                "ibp_requests_total{command=\"UNPARSED\",status=\"error\"}",
                1,
            ),
            ("ibp_requests_total{command=\"COPY\",status=\"ok\"}", 0),
            ("ibp_bytes_in_total", 3000 + 1234 + 10),
            ("ibp_bytes_out_total", 105),
            ("ibp_allocations{rid=\"0\"}", 2),
            ("ibp_connections_open", 1),
            ("ibp_connections_refused_total", 0),
            (
                "ibp_capacity_bytes{rid=\"0\",class=\"hard\",state=\"used\"}",
                20_000,
            ),
        ],
    );

    // STATUS STATS returns the same text, ending in END.
    c.send(b"1 4 4 0 300\n");
    let header = c.read_line();
    let len: usize = header
        .strip_prefix("1 ")
        .and_then(|s| s.strip_suffix(" \n"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{header:?}"));
    let stats = String::from_utf8(c.read_exact(len)).unwrap();
    assert!(stats.ends_with("END\n"), "{stats}");
    assert_eq!(sample(&stats, "ibp_bytes_in_total"), Some(4244));
    assert_eq!(
        sample(
            &stats,
            "ibp_requests_total{command=\"ALLOCATE\",status=\"ok\"}"
        ),
        Some(3)
    );

    // A freed allocation's file is kept as a spare, with its bytes; the
    // next allocation's STORE takes it.
    assert_eq!(c.request(&decr_line(&b.manage, 1)), "1 \n");
    expect_samples(
        m,
        &[
            ("ibp_spare_files{rid=\"0\"}", 1),
            ("ibp_spare_bytes{rid=\"0\"}", 10),
            ("ibp_allocations{rid=\"0\"}", 1),
        ],
    );
    let y = c.allocate(2, 600, 100);
    c.store(&y.write, b"y");
    expect_samples(
        m,
        &[
            ("ibp_spare_files{rid=\"0\"}", 0),
            ("ibp_spare_bytes{rid=\"0\"}", 0),
        ],
    );

    // Unknown paths are 404.
    let mut s = TcpStream::connect_timeout(&m, IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

#[test]
fn metrics_count_refused_connections() {
    let d = DepotBuilder::new()
        .metrics()
        .args(["--max-connections", "1"])
        .spawn();
    let m = d.metrics.unwrap();
    let mut c1 = d.connect();
    let _a = c1.allocate(2, 60, 1);
    for _ in 0..3 {
        d.connect().expect_closed();
    }
    expect_samples(
        m,
        &[
            ("ibp_connections_refused_total", 3),
            ("ibp_connections_open", 1),
        ],
    );
}
