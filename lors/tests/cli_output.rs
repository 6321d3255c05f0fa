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
