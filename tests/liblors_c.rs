//! liblors from C (and C++) against a real local grid.
//!
//! `scripts/install-liblors --debug` lays out a prefix (lib/liblors.so,
//! lib/liblors.a, include/lors.h, lib/pkgconfig/lors.pc) from this
//! target directory; the programs of lors/examples/ are compiled with the
//! system `cc` (and `c++`, if present) against that prefix through
//! `pkg-config`, shared (with an rpath) and static, and run as alice:
//! - `lors_example.c`: upload, ranged read, streaming read, download,
//!   checksums, then the namespace calls; the test checks the checksums
//!   it prints against the data and reads the file back with `lors`;
//! - `lors_bad_input.c`: NULL pointers, zero lengths, offsets past the
//!   end, closed and invented handles, concurrent use of one reader, a
//!   missing file, another user's file, a proxy that expires under the
//!   client and is then renewed, each with its code and message;
//! - the exported symbols of liblors.so are exactly the functions of
//!   lors.h (`nm -D`).
//!
//! One test function: the prefix and programs are removed when it ends.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use ibp_auth::ProxyCredential;
use ibp_grid::grid::{target_dir, Grid, GridOptions};

/// Bound on building and installing liblors, and on one compilation.
const BUILD_LIMIT: Duration = Duration::from_secs(1800);
const CC_LIMIT: Duration = Duration::from_secs(120);
/// Bound on one run of a C program against the grid.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// An installed prefix and the programs compiled against it (removed
/// when dropped).
struct Installed {
    _dir: tempfile::TempDir,
    prefix: PathBuf,
    example: PathBuf,
    example_static: PathBuf,
    bad_input: PathBuf,
    /// None when there is no C++ compiler.
    example_cpp: Option<PathBuf>,
}

/// This package's directory: the workspace root.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn install_and_compile() -> Installed {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let prefix = dir.path().join("prefix");
    let mut c = Command::new(workspace_root().join("scripts/install-liblors"));
    // What cargo set for this test must not reach the build (it would
    // rebuild with other fingerprints); the target directory is ours.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "RUST_RECURSION_COUNT" {
            c.env_remove(&key);
        }
    }
    c.env("CARGO_TARGET_DIR", target_dir())
        .arg("--debug")
        .arg(&prefix);
    let o = run_limited(c, BUILD_LIMIT);
    assert!(o.status.success(), "install-liblors: {}", text(&o));
    for f in [
        "lib/liblors.so",
        "lib/liblors.so.0",
        "lib/liblors.a",
        "include/lors.h",
        "lib/pkgconfig/lors.pc",
    ] {
        assert!(prefix.join(f).exists(), "install-liblors made no {f}");
    }

    let cflags = pkg_config(&prefix, &["--cflags"]);
    let libs = pkg_config(&prefix, &["--libs"]);
    let libdir = pkg_config(&prefix, &["--variable=libdir"]);
    let static_libs = pkg_config(&prefix, &["--variable=static_libs"]);
    assert_eq!(libdir, vec![s(&prefix.join("lib")).to_owned()]);
    let rpath = format!("-Wl,-rpath,{}", libdir[0]);
    let examples = workspace_root().join("lors/examples");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");

    let c11 = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"];
    let example = bin.join("lors_example");
    compile(
        "cc",
        &c11,
        &examples.join("lors_example.c"),
        &example,
        &[cflags.clone(), libs.clone(), vec![rpath.clone()]].concat(),
    );
    let bad_input = bin.join("lors_bad_input");
    compile(
        "cc",
        &c11,
        &examples.join("lors_bad_input.c"),
        &bad_input,
        &[cflags.clone(), libs.clone(), vec![rpath.clone()]].concat(),
    );
    // Static: the archive itself, and what it needs from the system.
    let example_static = bin.join("lors_example_static");
    let archive = format!("{}/liblors.a", libdir[0]);
    compile(
        "cc",
        &c11,
        &examples.join("lors_example.c"),
        &example_static,
        &[cflags.clone(), vec![archive], static_libs].concat(),
    );
    let example_cpp = which("c++").map(|cxx| {
        let out = bin.join("lors_example_cpp");
        compile(
            &cxx,
            &["-std=c++17", "-Wall", "-Wextra", "-Werror"],
            &examples.join("lors_example.cpp"),
            &out,
            &[cflags, libs, vec![rpath]].concat(),
        );
        out
    });
    Installed {
        _dir: dir,
        prefix,
        example,
        example_static,
        bad_input,
        example_cpp,
    }
}

/// `pkg-config ARGS lors` against the prefix, split into words.
fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let mut c = Command::new("pkg-config");
    c.env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .env_remove("PKG_CONFIG_LIBDIR")
        .args(args)
        .arg("lors");
    let o = run_limited(c, CC_LIMIT);
    assert!(o.status.success(), "pkg-config {args:?}: {}", text(&o));
    stdout(&o).split_whitespace().map(str::to_owned).collect()
}

fn compile(cc: &str, flags: &[&str], src: &Path, out: &Path, link: &[String]) {
    let mut c = Command::new(cc);
    c.args(flags).arg("-o").arg(out).arg(src).args(link);
    let o = run_limited(c, CC_LIMIT);
    assert!(o.status.success(), "{cc} {}: {}", src.display(), text(&o));
}

/// The program `name` on PATH, if any.
fn which(name: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// `exe ARGS` as `user`: the grid's environment for `lors`, nothing of
/// ours (LORS_*, X509_*), in the user's directory.
fn run_as(g: &Grid, user: &str, exe: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(exe);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("LORS_") || k.starts_with("X509_") {
            c.env_remove(&key);
        }
    }
    c.envs(g.env(user))
        .env("RUST_LOG", "warn")
        .current_dir(&g.user(user).dir)
        .args(args);
    let t = std::time::Instant::now();
    let o = run_limited(c, RUN_LIMIT);
    eprintln!(
        "{}: {:.1} s\n{}",
        exe.display(),
        t.elapsed().as_secs_f64(),
        stdout(&o)
    );
    o
}

/// FNV-1a, 64 bits: the checksum lors_example prints.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Function names declared in a C header (comments removed; a name
/// followed by `(`, not a function-pointer typedef).
fn header_functions(header: &str) -> BTreeSet<String> {
    let mut code = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("lors_") {
        let before = code[..i].chars().next_back();
        let pointer_typedef = code[..i].trim_end().ends_with("(*");
        if pointer_typedef || before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = code[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if code[i + name.len()..].trim_start().starts_with('(') {
            names.insert(name);
        }
    }
    names
}

/// The symbols liblors.so exports are exactly the functions of lors.h.
fn check_exported_symbols(inst: &Installed) {
    let header = std::fs::read_to_string(inst.prefix.join("include/lors.h")).expect("lors.h");
    let declared = header_functions(&header);
    assert!(
        declared.len() >= 25 && declared.contains("lors_read_at"),
        "{declared:?}"
    );
    let mut c = Command::new("nm");
    c.args(["-D", "--defined-only"])
        .arg(inst.prefix.join("lib/liblors.so"));
    let o = run_limited(c, CC_LIMIT);
    assert!(o.status.success(), "nm: {}", text(&o));
    let exported: BTreeSet<String> = stdout(&o)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().rev();
            let name = w.next()?;
            let kind = w.next()?;
            (kind == "T" && name.starts_with("lors_")).then(|| name.to_owned())
        })
        .collect();
    assert_eq!(
        declared, exported,
        "lors.h and liblors.so disagree (left: the header, right: nm -D)"
    );
}

/// One test, so that the installed prefix (a few hundred MB with the
/// static programs) is removed when it ends.
#[test]
fn c_programs_against_a_real_grid() {
    let _timer = Timer::start("c_programs_against_a_real_grid");
    let t = std::time::Instant::now();
    let inst = &install_and_compile();
    eprintln!(
        "installed and compiled in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    check_exported_symbols(inst);
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    keys_init(&g, "bob");
    upload(
        &g,
        "bob",
        "private.dat",
        &bytes(5000, 99),
        "/vo1/bob-private.dat",
        &[],
    );
    let alice = g.user("alice").dir.clone();

    // The example, shared: 3 MiB and a bit, so several blocks of 1 MiB.
    let data = bytes((3 << 20) + 12_345, 7);
    let local = write(&alice, "example-in.dat", &data);
    let out = alice.join("example-out.dat");
    let o = run_as(
        &g,
        "alice",
        &inst.example,
        &[s(&local), "/vo1/capi", s(&out)],
    );
    let said = stdout(&o);
    assert!(o.status.success(), "lors_example: {}", text(&o));
    let sum = format!("{:016x}", fnv1a(&data));
    let off = data.len() / 3;
    for line in [
        format!("liblors {}", env!("CARGO_PKG_VERSION")),
        format!("local {}: {} bytes, fnv1a {sum}", s(&local), data.len()),
        format!("slice at {off}: 100000 bytes match"),
        "read at the end: 0 bytes".to_owned(),
        format!("stream: {} bytes, fnv1a {sum}", data.len()),
        format!("download {}: {} bytes, fnv1a {sum}", s(&out), data.len()),
        "written /vo1/capi/written.dat version 1: match".to_owned(),
        "after lors_rm: LORS_ERR_NOT_FOUND".to_owned(),
        format!("checksums match: fnv1a {sum}"),
    ] {
        assert!(
            said.lines().any(|l| l == line),
            "lors_example did not print {line:?}: {said}"
        );
    }
    assert!(
        said.contains("/vo1/capi/example.dat(3158073)")
            && said.contains("/vo1/capi/moved.dat(3158073)"),
        "the listing: {said}"
    );
    assert_file_is(&out, &data, "lors_example's download");
    // At the metadata manager, and readable by the `lors` command.
    let st = stat_json(&g, "alice", "/vo1/capi/example.dat");
    assert_eq!(st["size"].as_u64(), Some(data.len() as u64), "{st}");
    download_is(&g, "alice", "/vo1/capi/example.dat", &data, "lors download");

    // The same program linked statically.
    let out_static = alice.join("example-out-static.dat");
    let o = run_as(
        &g,
        "alice",
        &inst.example_static,
        &[s(&local), "/vo1/capi-static", s(&out_static)],
    );
    assert!(o.status.success(), "static lors_example: {}", text(&o));
    assert!(stdout(&o).contains(&format!("checksums match: fnv1a {sum}")));
    assert_file_is(&out_static, &data, "the static lors_example's download");

    // C++ over the same header.
    if let Some(cpp) = &inst.example_cpp {
        let o = run_as(&g, "alice", cpp, &["/vo1/capi/example.dat"]);
        assert!(o.status.success(), "lors_example_cpp: {}", text(&o));
        let head: String = data[..16].iter().map(|b| format!(" {b:02x}")).collect();
        assert_eq!(
            stdout(&o).trim(),
            format!(
                "/vo1/capi/example.dat: {} bytes, first 16:{head}",
                data.len()
            ),
        );
    }

    // Bad input, with a proxy that expires under the client.
    let proxy = g.proxy("alice");
    let cred = ProxyCredential::load(&proxy).expect("alice's proxy");
    let fresh = alice.join("fresh-proxy.pem");
    cred.save(&fresh).expect("save the fresh proxy");
    let expired = alice.join("expired-proxy.pem");
    expired_proxy(&g, "alice", &expired);
    let o = run_as(
        &g,
        "alice",
        &inst.bad_input,
        &[
            "/vo1/capi-bad",
            "/vo1/bob-private.dat",
            s(&proxy),
            s(&expired),
            s(&fresh),
        ],
    );
    let said = stdout(&o);
    assert!(o.status.success(), "lors_bad_input: {}", text(&o));
    assert!(!said.contains("FAIL"), "{said}");
    for line in [
        "ok stat with client NULL: LORS_ERR_USAGE (2): lors_stat: the lors_client is NULL",
        "ok read_at past the end: LORS_OK (0)",
        "ok close again: LORS_ERR_USAGE (2): lors_close: not an open lors_reader",
        "ok open a missing file: LORS_ERR_NOT_FOUND (7): lors_open: not found",
        "ok open another user's file: LORS_ERR_REFUSED (3)",
        "ok stat with an expired proxy: LORS_ERR_NO_PROXY (1)",
        "ok stat with the fresh proxy: LORS_OK (0)",
        "ok 4 threads x 40 read_at on one reader: every byte right",
        "ok download_buffer into a buffer 1 byte too small: LORS_ERR_TOO_SMALL (100)",
    ] {
        assert!(
            said.lines().any(|l| l.starts_with(line)),
            "lors_bad_input did not print {line:?}: {said}"
        );
    }
    assert!(said.contains(", 0 failures"), "{said}");
    // The fresh proxy is back in place, and the grid still serves alice.
    ok(lors(&g, "alice", &["stat", "/vo1/capi/example.dat"]));
}
