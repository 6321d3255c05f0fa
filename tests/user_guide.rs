//! The user guide's examples run as written on the local grid it names
//! (issue 19: "the guide's examples run on the 3-depot grid it
//! describes"): every command line of every `sh` block of docs/user.md, in
//! order, as alice of `ibp-grid`'s grid, in a shell with alice's
//! environment. The only changes are the site's names for the grid's
//! (URLs, depot addresses, a place), listed in [`SITE`]; lines that cannot
//! run here are listed with the reason in [`NOT_RUN`], and each entry must
//! still match a line of the guide, so neither list can go stale silently.

mod common;

use std::path::Path;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

/// Lines the test does not run, by a fragment of the line, with why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "# prompts for the password",
        "needs a terminal and the site's RADIUS server",
    ),
    ("--method local --user alice", "prompts on a terminal"),
    ("--token-file", "needs the site's OpenID Connect provider"),
    (
        "\"$PW\" | lors login",
        "RADIUS login: the grid's CA has local users only",
    ),
    (
        "lors proxy-destroy",
        "would log alice out for the rest of the guide",
    ),
    (
        " * * 1  lors",
        "crontab lines (tests/maintenance.rs runs them)",
    ),
    (
        "lors login                       # as in section 1",
        "prompts on a terminal",
    ),
    ("@vo2", "the grid has one VO"),
];

/// Expected exit codes other than 0, by a fragment of the line.
const EXIT: &[(&str, i32)] = &[
    // Without the fingerprint nothing is written: exit 2, by design.
    ("# prints the fingerprint offered", 2),
];

/// The site names the guide uses, and the grid's.
fn site(g: &Grid, fingerprint: &str) -> Vec<(String, String)> {
    let legacy = |i: usize| g.depots[i].legacy_addr.clone();
    let tls = |i: usize| g.depots[i].tls_addr.clone().expect("a TLS port");
    vec![
        ("https://ca.example.org:8443".into(), g.ca_url.clone()),
        ("https://mdm.example.org:6780".into(), g.mdm_url.clone()),
        ("https://lbone.example.org:6767".into(), g.lbone_url.clone()),
        ("depot1:6714".into(), legacy(0)),
        ("depot2:6714".into(), legacy(1)),
        ("depot3.example.org:6715".into(), tls(2)),
        ("\"Brno, CZ\"".into(), "site-0".into()),
        // The guide pipes HDF5 into h5dump; here the bytes are compared.
        ("h5dump -".into(), "cmp - big.h5".into()),
        ("SHA256:AB:CD:...".into(), format!("SHA256:{fingerprint}")),
    ]
}

/// Command lines of the `sh` blocks of `text` (continuations joined).
fn command_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim_end();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let cmd = std::mem::take(&mut pending);
        if !cmd.trim().is_empty() && !cmd.trim_start().starts_with('#') {
            out.push(cmd);
        }
    }
    out
}

/// The files and directories the examples upload.
fn make_inputs(dir: &Path) {
    for (name, size, seed) in [
        ("results.tar", 300_000, 1),
        ("big.h5", 2_000_000, 2),
        ("log.txt", 50_000, 3),
        ("huge.dat", 1_500_000, 4),
        ("f", 400_000, 5),
    ] {
        write(dir, name, &bytes(size, seed));
    }
    let d = dir.join("mydir");
    std::fs::create_dir_all(&d).expect("mydir");
    write(&d, "a", &bytes(10_000, 6));
}

#[test]
fn the_user_guide_runs_on_the_local_grid() {
    let _timer = Timer::start("the_user_guide_runs_on_the_local_grid");
    let guide_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/user.md");
    let guide = std::fs::read_to_string(&guide_path).expect("docs/user.md");
    let lines = command_lines(&guide);
    assert!(
        lines.len() >= 30,
        "{} command lines: {lines:#?}",
        lines.len()
    );
    for (frag, why) in NOT_RUN.iter().chain(&[]) {
        assert!(
            lines.iter().any(|l| l.contains(frag)),
            "NOT_RUN names {frag:?} ({why}), which no longer appears in docs/user.md"
        );
    }
    for (frag, _) in EXIT {
        assert!(
            lines.iter().any(|l| l.contains(frag)),
            "EXIT names {frag:?}, which no longer appears in docs/user.md"
        );
    }

    let g = start(GridOptions::default());
    // bob is someone to share with: known to the metadata manager, with a
    // key pair.
    keys_init(&g, "bob");
    let ca = certs_fingerprint(&g.trust_dir.join("ca/ca.pem"));
    let site = site(&g, &ca);
    let home = g.user("alice").dir.clone();
    make_inputs(&home);
    let bin_dir = g.bins.lors.parent().expect("the binaries' directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (mut ran, mut skipped) = (0, 0);
    for line in &lines {
        if let Some((_, why)) = NOT_RUN.iter().find(|(f, _)| line.contains(f)) {
            eprintln!("not run ({why}): {line}");
            skipped += 1;
            continue;
        }
        let mut cmd = line.clone();
        for (from, to) in &site {
            cmd = cmd.replace(from, to);
        }
        let want = EXIT
            .iter()
            .find(|(f, _)| line.contains(f))
            .map_or(0, |(_, c)| *c);
        let mut c = std::process::Command::new("bash");
        c.args(["-o", "pipefail", "-c", &cmd])
            .env_clear()
            .envs(g.env("alice"))
            .env("HOME", &home)
            .env("PATH", &path)
            .current_dir(&home)
            .stdin(std::process::Stdio::null());
        let o = run_limited(c, LORS_LIMIT);
        assert_eq!(
            code(&o),
            want,
            "docs/user.md: `{line}` (run as `{cmd}`): {}",
            text(&o)
        );
        ran += 1;
    }
    eprintln!("ran {ran} of {} command lines of docs/user.md", lines.len());
    assert_eq!(ran + skipped, lines.len());
    assert!(
        ran >= 4 * skipped,
        "most of the guide runs: {ran} ran, {skipped} not"
    );
}

fn certs_fingerprint(pem: &Path) -> String {
    let text = std::fs::read(pem).expect("ca.pem");
    let ders = ibp_auth::trust::pem_certificates(&text).expect("PEM");
    lors::trust_fetch::fingerprint(&ders[0])
}
