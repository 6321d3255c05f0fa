//! The L-Bone's operator status page (`GET /status`, HTML, no client
//! certificate) as a browser shows it: headless Chromium (Debian's
//! `chromium`, installed by `scripts/test` as root) renders the page of a
//! real grid; every depot is listed up, a depot SIGKILLed is shown down and
//! the others stay up; a screenshot is taken.
//!
//! Without Chromium on PATH the test fails, saying how to get it: it never
//! skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ibp_grid::grid::GridOptions;

/// Bound on one Chromium run.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// `chromium` or `chromium-browser` on PATH.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "neither chromium nor chromium-browser is on PATH: the status page test needs \
         Debian's chromium package; run ./scripts/test as root (it installs it), or \
         apt-get install chromium"
    );
}

/// Headless Chromium with the flags that keep it quiet and offline,
/// a profile of its own under `profile`, and the grid CA's certificate
/// accepted (the page is signed by the grid's own CA).
fn chromium_cmd(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--ignore-certificate-errors",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .env("HOME", profile);
    c
}

/// The DOM of `url` after scripts ran.
fn dump_dom(profile: &Path, url: &str) -> String {
    let mut c = chromium_cmd(profile);
    c.args(["--dump-dom", url]);
    let o = run_limited(c, CHROMIUM_LIMIT);
    assert!(
        o.status.success(),
        "chromium --dump-dom {url}: {}",
        text(&o)
    );
    let dom = stdout(&o);
    assert!(
        dom.contains("L-Bone depot status"),
        "not the status page: {}",
        text(&o)
    );
    dom
}

/// The liveness of depot `name`'s row (`up`, `late`, `down`, `unknown`):
/// the State cell's class, which is also its text.
fn state_of(dom: &str, name: &str) -> Option<String> {
    let row = dom
        .split("<tr>")
        .find(|r| r.starts_with(&format!("<td>{name}</td>")))?;
    let rest = &row[row.find("class=\"")? + "class=\"".len()..];
    let class = &rest[..rest.find('"')?];
    let shown = rest[rest.find('>')? + 1..].starts_with(class);
    Some(if shown {
        class.to_owned()
    } else {
        format!("{class} (cell text differs: {row})")
    })
}

#[test]
fn the_status_page_shows_every_depot_up_and_a_killed_one_down_in_a_browser() {
    let _timer =
        Timer::start("the_status_page_shows_every_depot_up_and_a_killed_one_down_in_a_browser");
    // Fail at once (before starting a grid) when there is no browser.
    chromium();
    let mut g = start(GridOptions {
        depots: 3,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    });
    let profile = tempfile::tempdir().expect("a profile directory");
    let url = format!("{}/status", g.lbone_url);
    let names: Vec<String> = g.depots.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, ["depot-0", "depot-1", "depot-2"]);

    let dom = dump_dom(profile.path(), &url);
    assert!(dom.contains("<h2>VO vo1</h2>"), "{dom}");
    assert!(dom.contains("3 of 3 depots available"), "{dom}");
    for (d, name) in g.depots.iter().zip(&names) {
        assert_eq!(state_of(&dom, name).as_deref(), Some("up"), "{name}: {dom}");
        let port = d.legacy_addr.rsplit(':').next().expect("a port");
        assert!(dom.contains(port), "{name}'s port {port} shown: {dom}");
    }

    // A screenshot of it.
    let png = profile.path().join("status.png");
    let mut c = chromium_cmd(profile.path());
    c.arg("--window-size=1280,600")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url);
    let o = run_limited(c, CHROMIUM_LIMIT);
    assert!(o.status.success(), "chromium --screenshot: {}", text(&o));
    let shot =
        std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}: {}", png.display(), text(&o)));
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
    assert!(
        shot.len() > 10_000,
        "a screenshot of a page with a table is more than {} bytes",
        shot.len()
    );

    // depot-1 killed: shown down, the others up.
    g.kill_depot(1);
    g.wait_lbone_sees_down(1, Duration::from_secs(20))
        .expect("the L-Bone sees depot-1 down");
    let dom = dump_dom(profile.path(), &url);
    assert_eq!(state_of(&dom, "depot-1").as_deref(), Some("down"), "{dom}");
    for name in ["depot-0", "depot-2"] {
        assert_eq!(state_of(&dom, name).as_deref(), Some("up"), "{name}: {dom}");
    }
    assert!(dom.contains("2 of 3 depots available"), "{dom}");
}
