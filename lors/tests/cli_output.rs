//! Output of `lors` for people and scripts, run as the real binary:
//! completion scripts and manual pages generated from the command line's
//! definition, and the messages and exit codes without a usable proxy.

use std::path::Path;
use std::process::{Command, Stdio};

/// The result of running the `lors` binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `lors` with `X509_USER_PROXY=proxy`, `HOME` in `home` (no config
/// file) and none of the `LORS_*` variables of the caller.
fn lors(home: &Path, proxy: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lors"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LORS_") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("X509_USER_PROXY", proxy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    lors(dir.path(), &dir.path().join("no-proxy"), args)
}

/// Subcommands every completion script must offer.
const SUBCOMMANDS: [&str; 6] = [
    "upload",
    "download",
    "ls",
    "proxy-info",
    "repair",
    "members",
];

#[test]
fn bash_completion_defines_its_function_and_names_the_subcommands() {
    let r = run(&["completions", "bash"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("_lors()"), "no completion function");
    assert!(
        r.stdout.contains("complete -F _lors"),
        "function not registered"
    );
    for sub in SUBCOMMANDS {
        assert!(r.stdout.contains(sub), "bash script lacks {sub}");
    }
    // Options of a subcommand are completed too.
    assert!(r.stdout.contains("--block-size"));
    if Path::new("/bin/bash").exists() {
        // The script parses: bash -n reads it without running it.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lors.bash");
        std::fs::write(&f, &r.stdout).unwrap();
        let st = Command::new("/bin/bash")
            .arg("-n")
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success(), "bash -n refuses the script");
    }
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    let z = run(&["completions", "zsh"]);
    assert_eq!(z.code, 0, "{z:?}");
    assert!(z.stdout.starts_with("#compdef lors"), "{}", &z.stdout[..40]);
    let f = run(&["completions", "fish"]);
    assert_eq!(f.code, 0, "{f:?}");
    assert!(f.stdout.contains("complete -c lors"));
    for sub in SUBCOMMANDS {
        assert!(z.stdout.contains(sub), "zsh script lacks {sub}");
        assert!(
            f.stdout.contains(&format!("-a \"{sub}\"")),
            "fish script lacks {sub}"
        );
    }
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let r = run(&["completions", "tcsh"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("tcsh"), "{r:?}");
}

#[test]
fn man_prints_lors_1_and_writes_a_page_per_subcommand() {
    let r = run(&["man"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with(".ie"), "not roff: {}", &r.stdout[..40]);
    assert!(r.stdout.contains(".TH lors 1"), "no title");
    assert!(r.stdout.contains("upload"));
    assert!(r.stdout.contains("Exit codes"), "the after-help is lost");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let r = run(&["man", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(out.join("lors.1").is_file());
    for page in [
        "lors-upload.1",
        "lors-download.1",
        "lors-keys-init.1",
        "lors-acl-set.1",
    ] {
        assert!(out.join(page).is_file(), "no {page}");
    }
    let upload = std::fs::read_to_string(out.join("lors-upload.1")).unwrap();
    assert!(upload.contains(".TH lors-upload 1"));
    // roff escapes the hyphens of options.
    assert!(upload.contains(r"\-\-block\-size"), "no --block-size");
    assert!(upload.contains(r"\-\-copies"));

    // Rendered by man(1) when it is installed: the options read as typed.
    let man = ["/usr/bin/man", "/bin/man"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    match man {
        Some(man) => {
            let r = Command::new(man)
                .arg("-l")
                .arg(out.join("lors-upload.1"))
                .env("MANPAGER", "cat")
                .env("PAGER", "cat")
                .env("MANWIDTH", "100")
                .env("LC_ALL", "C")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&r.stdout);
            let err = String::from_utf8_lossy(&r.stderr);
            assert!(r.status.success(), "man -l failed: {err}");
            assert!(!err.contains("warning"), "{err}");
            assert!(text.contains("--block-size"), "{text}");
            assert!(text.contains("lors-upload"), "{text}");
        }
        None => eprintln!("man(1) not installed: roff text checked only"),
    }
}

/// Commands that need a proxy, with no configuration at all: each says
/// there is no proxy and how to get one (exit 1), not "which metadata
/// manager?".
#[test]
fn without_a_proxy_commands_say_so_and_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = dir.path().join("x509up_none");
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let cases: [&[&str]; 9] = [
        &["ls", "/vo1"],
        &["stat", "/vo1/f"],
        &["stat", "--mappings", "/vo1/f"],
        &["download", "/vo1/f", out],
        &["refresh", "/vo1/f"],
        &["repair", "/vo1/f"],
        &["mkdir", "/vo1/d"],
        &["whoami"],
        &["depots"],
    ];
    for args in cases {
        let r = lors(dir.path(), &proxy, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr
                .contains(&format!("no proxy at {}", proxy.display())),
            "{args:?}: {r:?}"
        );
        assert!(r.stderr.contains("lors login"), "{args:?}: {r:?}");
        assert!(r.stderr.contains("lors proxy-init"), "{args:?}: {r:?}");
        assert!(
            !r.stderr.contains("which metadata manager"),
            "{args:?}: {r:?}"
        );
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    // --proxy names the file looked for.
    let other = dir.path().join("elsewhere.pem");
    let r = lors(
        dir.path(),
        &proxy,
        &[
            "download",
            "--proxy",
            other.to_str().unwrap(),
            "/vo1/f",
            out,
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("no proxy at {}", other.display())),
        "{r:?}"
    );
}

/// A listener standing in for the metadata manager, to see whether a
/// command connected to it.
struct Listener {
    inner: std::net::TcpListener,
    url: String,
}

impl Listener {
    fn new() -> Listener {
        let inner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        inner.set_nonblocking(true).unwrap();
        let url = format!("https://127.0.0.1:{}", inner.local_addr().unwrap().port());
        Listener { inner, url }
    }

    /// Whether a connection is waiting (the kernel completes the TCP
    /// handshake without an accept, so a finished command's attempt shows).
    fn was_contacted(&self) -> bool {
        match self.inner.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// An expired proxy is refused locally, before any request: exit 1, the
/// message naming the file, when it expired and how to renew it. The same
/// commands with a valid proxy do contact the service (so the listener
/// would have seen a request).
#[test]
fn an_expired_proxy_is_refused_before_any_request() {
    use ibp_testkit::pki::Pki;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["vo1"]);
    let trust = dir.path().join("trust");
    pki.write_trust(&trust, &["vo1"]);
    let expired = dir.path().join("x509up_expired");
    let now = ibp_auth::unix_now();
    let ends = now - 120;
    pki.user_cert_between("alice", now - 7200, ends)
        .save(&expired)
        .unwrap();
    let valid = dir.path().join("x509up_valid");
    pki.member("alice", "vo1").proxy().save(&valid).unwrap();
    let expiry = lors::validity::format_local(ends);
    let out = dir.path().join("out");

    let mdm = Listener::new();
    let trust_s = trust.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let cases: [Vec<&str>; 4] = [
        vec!["ls", "--mdm", &mdm.url, "--trust", trust_s, "/vo1"],
        vec!["mkdir", "--mdm", &mdm.url, "--trust", trust_s, "/vo1/d"],
        vec!["stat", "--mdm", &mdm.url, "--trust", trust_s, "/vo1/f"],
        vec![
            "download",
            "--mdm",
            &mdm.url,
            "--trust",
            trust_s,
            "--timeout",
            "2",
            "/vo1/f",
            out_s,
        ],
    ];
    for args in &cases {
        let r = lors(dir.path(), &expired, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!(
                "the proxy {} expired at {expiry}",
                expired.display()
            )),
            "{args:?}: {r:?}"
        );
        assert!(r.stderr.contains("lors login"), "{args:?}: {r:?}");
        assert!(!mdm.was_contacted(), "{args:?} sent a request");
    }
    // The same command with a valid proxy reaches the listener (which
    // hangs up: a service error, not a proxy one).
    let done = std::sync::atomic::AtomicBool::new(false);
    let contacted = std::thread::scope(|s| {
        // Hangs up on the first connection, so the client fails fast;
        // polls until one comes or the command has ended.
        let waiter = s.spawn(|| loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            if mdm.was_contacted() {
                return true;
            }
            if finished {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        });
        let r = lors(dir.path(), &valid, &cases[0]);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_ne!(r.code, 1, "{r:?}");
        assert!(!r.stderr.contains("proxy"), "{r:?}");
        waiter.join().unwrap()
    });
    assert!(contacted, "a valid proxy's ls never connected");
}
