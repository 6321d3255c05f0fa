//! `lors` output on a real grid (issue 19, "Output for people, and for
//! scripts"): `--quiet` prints nothing on success for every data and
//! namespace command, while errors still reach stderr; an expired proxy is
//! refused before any request.

mod common;

use common::*;
use ibp_grid::grid::GridOptions;

/// Asserts `o` succeeded and printed nothing at all.
#[track_caller]
fn silent(o: std::process::Output, what: &str) {
    assert_eq!(code(&o), 0, "{what}: {}", text(&o));
    assert!(
        o.stdout.is_empty(),
        "{what} printed on stdout: {}",
        text(&o)
    );
    assert!(
        o.stderr.is_empty(),
        "{what} printed on stderr: {}",
        text(&o)
    );
}

#[test]
fn quiet_prints_nothing_on_success_and_errors_still_reach_stderr() {
    let _timer = Timer::start("quiet_prints_nothing_on_success_and_errors_still_reach_stderr");
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    let data = bytes(300_000, 19);
    let src = write(&g.user("alice").dir, "q.bin", &data);
    let out = g.user("alice").dir.join("q.out");

    silent(
        lors(&g, "alice", &["mkdir", "-q", "-p", "/vo1/alice/q"]),
        "mkdir -q",
    );
    silent(
        lors(
            &g,
            "alice",
            &[
                "upload",
                "--quiet",
                s(&src),
                "/vo1/alice/q/f",
                "--block-size",
                "64KiB",
            ],
        ),
        "upload --quiet",
    );
    silent(
        lors(&g, "alice", &["download", "-q", "/vo1/alice/q/f", s(&out)]),
        "download -q",
    );
    assert_file_is(&out, &data, "download -q");
    silent(
        lors(
            &g,
            "alice",
            &["augment", "-q", "/vo1/alice/q/f", "--copies", "2"],
        ),
        "augment -q",
    );
    silent(
        lors(
            &g,
            "alice",
            &["refresh", "-q", "/vo1/alice/q/f", "--duration", "2d"],
        ),
        "refresh -q",
    );
    silent(
        lors(&g, "alice", &["repair", "-q", "/vo1/alice/q/f"]),
        "repair -q",
    );
    // Trim the replicas on one depot: the file keeps its other copy.
    let st = stat_json(&g, "alice", "/vo1/alice/q/f");
    let maps = mappings(&st);
    let depot = maps[maps.len() - 1]["depot"]
        .as_str()
        .expect("a depot")
        .to_owned();
    silent(
        lors(
            &g,
            "alice",
            &["trim", "-q", "/vo1/alice/q/f", "--depot", &depot],
        ),
        "trim -q",
    );
    assert!(
        mappings(&stat_json(&g, "alice", "/vo1/alice/q/f")).len() < maps.len(),
        "trim -q dropped nothing"
    );
    silent(
        lors(
            &g,
            "alice",
            &["mv", "-q", "/vo1/alice/q/f", "/vo1/alice/q/g"],
        ),
        "mv -q",
    );
    download_is(&g, "alice", "/vo1/alice/q/g", &data, "after mv -q");
    silent(lors(&g, "alice", &["rm", "-q", "/vo1/alice/q/g"]), "rm -q");

    // Without --quiet the same commands say what they did.
    let o = lors(&g, "alice", &["upload", s(&src), "/vo1/alice/q/h"]);
    assert!(ok(o).contains("uploaded"));
    let o = lors(&g, "alice", &["rm", "/vo1/alice/q/h"]);
    assert!(!ok(o).is_empty(), "rm without -q prints its removal");

    // An error with --quiet still reaches stderr, with its exit code.
    let o = lors(
        &g,
        "alice",
        &["download", "-q", "/vo1/alice/q/none", s(&out)],
    );
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(stderr(&o).contains("/vo1/alice/q/none"), "{}", text(&o));
    let o = lors(&g, "alice", &["rm", "-q", "/vo1/alice/q/none"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(!stderr(&o).is_empty(), "{}", text(&o));

    // --json still prints its JSON with --quiet (scripts ask for it).
    let o = lors(
        &g,
        "alice",
        &["upload", "--json", "-q", s(&src), "/vo1/alice/q/j"],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(o)).expect("JSON");
    assert_eq!(v["size"], 300_000, "{v}");
}

/// An expired proxy of a grid user (minted below their real user
/// certificate with a lifetime of one second, then waited out) is refused
/// locally with exit 1 and a message naming the expiry and `lors login`;
/// the metadata manager never sees the request (its log has no line for
/// it).
#[test]
fn an_expired_proxy_is_refused_locally() {
    let _timer = Timer::start("an_expired_proxy_is_refused_locally");
    let g = start(GridOptions::default());
    let alice = g.user("alice").dir.clone();
    let expired = alice.join("expired-proxy.pem");
    let ends = expired_proxy(&g, "alice", &expired);
    let when = lors::validity::format_local(ends);
    for args in [
        vec!["ls", "/vo1"],
        vec!["stat", "/vo1/alice"],
        vec!["download", "/vo1/alice/none", "/dev/null"],
        vec!["depots"],
    ] {
        let mut c = lors_cmd(&g, "alice", &args);
        c.env("X509_USER_PROXY", &expired);
        let o = run_limited(c, LORS_LIMIT);
        assert_eq!(code(&o), 1, "{args:?}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("expired at {when}")),
            "{args:?}: {err}"
        );
        assert!(err.contains("lors login"), "{args:?}: {err}");
    }
    // The real proxy still works.
    ok(lors(&g, "alice", &["ls", "/vo1"]));
}

/// A depot's IBP error reaches the user in words, with its name in
/// parentheses, not as a bare number: a legacy upload of blocks larger
/// than the depot's whole resource is refused with
/// IBP_E_WOULD_EXCEED_LIMIT.
#[test]
fn a_depot_refusal_is_told_in_words_with_its_code() {
    let _timer = Timer::start("a_depot_refusal_is_told_in_words_with_its_code");
    let g = start(GridOptions {
        depots: 1,
        depot_hard_size: 1 << 20,
        ..GridOptions::default()
    });
    let dir = g.user("alice").dir.clone();
    let src = write(&dir, "big.bin", &bytes(3 << 20, 5));
    let xnd = dir.join("big.xnd");
    let depot = g.depots[0].legacy_addr.clone();
    let o = lors(
        &g,
        "alice",
        &[
            "upload",
            s(&src),
            "--xnd",
            s(&xnd),
            "--security",
            "legacy",
            "--no-encrypt",
            "--depot",
            &depot,
            "--block-size",
            "2MiB",
        ],
    );
    assert_ne!(code(&o), 0, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "the depot refuses: the allocation would exceed its limit for you \
             (IBP_E_WOULD_EXCEED_LIMIT)"
        ),
        "{}",
        text(&o)
    );
    assert!(!err.contains("-19"), "a bare code: {err}");
    assert!(!xnd.exists(), "no exNode for a failed upload");
}

/// The download progress bar on a terminal (script(1) gives `lors` one)
/// learns the file's size from the exNode before data moves: it shows the
/// total and an ETA, not only a spinner.
#[test]
fn the_download_progress_bar_knows_its_total_and_gives_an_eta() {
    let _timer = Timer::start("the_download_progress_bar_knows_its_total_and_gives_an_eta");
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice/p"]));
    let data = bytes(24 << 20, 3);
    upload(
        &g,
        "alice",
        "big.bin",
        &data,
        "/vo1/alice/p/big",
        &["--quiet", "--block-size", "1MiB"],
    );
    let out = g.user("alice").dir.join("big.out");
    let cmdline = format!("{} download /vo1/alice/p/big {}", s(&g.bins.lors), s(&out));
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmdline, "/dev/null"])
        .env_clear()
        .envs(g.env("alice"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .current_dir(&g.user("alice").dir)
        .stdin(std::process::Stdio::null());
    let o = run_limited(c, LORS_LIMIT);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_file_is(&out, &data, "download on a terminal");
    let screen = stdout(&o);
    assert!(
        screen.contains("/24.00 MiB") && screen.contains("eta "),
        "the bar shows the total and an ETA: {screen:?}"
    );
}

/// `-v` shows each failover as a warning; without it only the summary
/// counts them (issue 19: "`-v` shows warnings (failovers, retries) and
/// `-vv` debug").
#[test]
fn failover_warnings_show_with_v_and_the_summary_counts_them_without() {
    let _timer = Timer::start("failover_warnings_show_with_v_and_the_summary_counts_them_without");
    let mut g = start(GridOptions::default());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice/v"]));
    let data = bytes(1 << 20, 11);
    // Two replicas of every block, on depots 0 and 1 only: consecutive
    // blocks start from different replicas, so with depot 0 gone at least
    // one block fails over.
    let d0 = g.depots[0].tls_addr.clone().expect("TLS port");
    let d1 = g.depots[1].tls_addr.clone().expect("TLS port");
    upload(
        &g,
        "alice",
        "v.bin",
        &data,
        "/vo1/alice/v/f",
        &[
            "--copies",
            "2",
            "--depot",
            &d0,
            "--depot",
            &d1,
            "--block-size",
            "128KiB",
            "--quiet",
        ],
    );
    g.kill_depot(0);
    let out = g.user("alice").dir.join("v.out");
    let run = |extra: &[&str]| {
        let mut args = vec!["download", "/vo1/alice/v/f", s(&out)];
        args.extend_from_slice(extra);
        let mut c = lors_cmd(&g, "alice", &args);
        c.env_remove("RUST_LOG");
        let o = run_limited(c, LORS_LIMIT);
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert_file_is(&out, &data, "download with a depot down");
        o
    };
    let o = run(&[]);
    assert!(stdout(&o).contains("failovers"), "{}", text(&o));
    assert!(
        !stderr(&o).contains("trying another replica"),
        "no warnings without -v: {}",
        text(&o)
    );
    let o = run(&["-v"]);
    assert!(
        stderr(&o).contains("trying another replica"),
        "-v shows the failover: {}",
        text(&o)
    );
    assert!(!stderr(&o).contains("DEBUG"), "{}", text(&o));
    let o = run(&["-vv"]);
    assert!(
        stderr(&o).contains("DEBUG"),
        "-vv shows debug: {}",
        text(&o)
    );
}
