//! Unit tests of the library's small parts: `HH:MM`, time formatting, URLs,
//! exit codes, secrets, timeouts.

use lors::credentials::{CaClient, Error, Secret};
use lors::exit;
use lors::https::{BaseUrl, HttpError};
use lors::validity::{format_duration, format_utc, parse_hhmm};

#[test]
fn hhmm_accepts_valid_durations() {
    for (s, secs) in [
        ("12:00", 43_200),
        ("0:05", 300),
        ("00:00", 0),
        ("1:30", 5_400),
        ("24:00", 86_400),
        ("168:00", 604_800),
        ("9999:59", 9_999 * 3_600 + 59 * 60),
    ] {
        assert_eq!(parse_hhmm(s), Ok(secs), "{s}");
    }
}

#[test]
fn hhmm_rejects_invalid_durations() {
    for s in [
        "", "12", ":30", "12:", "12:60", "12:5", "12:005", "-1:00", "+1:00", "1:-5", "a:bc",
        "1:00:00", " 1:00", "1:00 ", "10000:00", "99999:00", "1.5:00", "１:00",
    ] {
        assert!(parse_hhmm(s).is_err(), "{s:?} accepted");
    }
}

#[test]
fn formatting() {
    assert_eq!(format_duration(0), "0:00:00");
    assert_eq!(format_duration(-5), "0:00:00");
    assert_eq!(format_duration(43_199), "11:59:59");
    assert_eq!(format_duration(90_061), "25:01:01");
    assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
}

#[test]
fn urls() {
    let u = BaseUrl::parse("https://ca.example.org:8443").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.prefix.as_str()),
        ("ca.example.org", 8443, "")
    );
    assert_eq!(u.target("/v1/login"), "/v1/login");
    let u = BaseUrl::parse("HTTPS://127.0.0.1/ca/").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 443));
    assert_eq!(u.target("/v1/login"), "/ca/v1/login");
    let u = BaseUrl::parse("https://[::1]:9443").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 9443));
    assert_eq!(u.authority(), "[::1]:9443");
    assert_eq!(u.to_string(), "https://[::1]:9443");
    for bad in [
        "http://ca.example.org",
        "ca.example.org:8443",
        "https://",
        "https://:8443",
        "https://host:0",
        "https://host:99999",
        "https://host:-1",
        "https://host:+80",
        "https://user:pw@host",
        "https://host/?x=1",
        "https://host/#f",
        "https://[::1",
        "https://[nothost]:1",
        "https://ho st",
        "https://a:1:2",
    ] {
        assert!(BaseUrl::parse(bad).is_err(), "{bad:?} accepted");
    }
    // Plain http is refused as a usage error.
    let e: Error = BaseUrl::parse("http://x").unwrap_err().into();
    assert_eq!(e.exit_code(), exit::USAGE);
}

#[test]
fn exit_codes() {
    assert_eq!(
        [
            exit::OK,
            exit::NO_PROXY,
            exit::USAGE,
            exit::REFUSED,
            exit::UNAVAILABLE,
            exit::RATE_LIMITED,
            exit::LOCAL
        ],
        [0, 1, 2, 3, 4, 5, 6]
    );
    let s = String::new;
    let cases = [
        (Error::Usage(s()), 2),
        (Error::NoProxy("/tmp/x".into()), 1),
        (Error::InvalidProxy(s()), 1),
        (Error::BadRequest(s()), 2),
        (Error::Refused(s()), 3),
        (Error::Unavailable(s()), 4),
        (
            Error::RateLimited {
                retry_after: Some(3),
                message: s(),
            },
            5,
        ),
        (Error::Local(s()), 6),
    ];
    for (e, code) in cases {
        assert_eq!(e.exit_code(), code, "{e:?}");
    }
    let addr = || "h:1".to_owned();
    let http = [
        (
            HttpError::Connect {
                addr: addr(),
                why: s(),
            },
            4,
        ),
        (
            HttpError::Tls {
                addr: addr(),
                why: s(),
            },
            4,
        ),
        (
            HttpError::CertificateRefused {
                addr: addr(),
                why: s(),
            },
            3,
        ),
        (
            HttpError::Timeout {
                addr: addr(),
                what: "request",
                secs: 30,
            },
            4,
        ),
        (
            HttpError::Protocol {
                addr: addr(),
                why: s(),
            },
            4,
        ),
        (
            HttpError::TooLarge {
                addr: addr(),
                limit: 1,
            },
            4,
        ),
        (HttpError::Url { url: s(), why: s() }, 2),
    ];
    for (e, code) in http {
        let e: Error = e.into();
        assert_eq!(e.exit_code(), code, "{e:?}");
    }
    let rl = Error::RateLimited {
        retry_after: Some(7),
        message: "HTTP 429: slow down".into(),
    };
    assert_eq!(
        rl.to_string(),
        "rate limited by the CA (retry after 7 s): HTTP 429: slow down"
    );
}

#[test]
fn secrets_are_not_printed() {
    let s = Secret::new("hunter2".into());
    assert_eq!(format!("{s:?}"), "Secret(***)");
    assert_eq!(s.expose(), "hunter2");
}

/// A server that accepts connections and never answers: the client gives up.
#[tokio::test]
async fn silent_server_times_out() {
    let ca = ibp_auth::pki::Authority::new_ca("T", "T", 1).unwrap();
    let mut trust = ibp_auth::TrustStore::new();
    trust.add_ca(ca.cert_der.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut client = CaClient::new(&format!("https://{addr}"), &trust, None).unwrap();
    client.http_mut().connect_timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let e = client.trust().await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(e.exit_code(), exit::UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    hold.abort();
}
