//! include/lors.h is what cbindgen makes of the crate: regenerated here and
//! compared, so the committed header cannot drift from the Rust side.
//! `LORS_BLESS=1` rewrites it instead (after a deliberate change).

use std::path::PathBuf;

#[test]
fn header_matches_the_rust_side() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("liblors/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut made = Vec::new();
    bindings.write(&mut made);
    let made = String::from_utf8(made).expect("the header is UTF-8");
    let path = crate_dir.join("include/lors.h");
    if std::env::var_os("LORS_BLESS").is_some() {
        std::fs::write(&path, &made).expect("write include/lors.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != made {
        let first = committed
            .lines()
            .zip(made.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(made.lines().count()));
        panic!(
            "{} differs from the Rust side from line {} on; regenerate it with \
             `LORS_BLESS=1 cargo test -p liblors --test header` and commit it.\n\
             committed: {:?}\ngenerated: {:?}",
            path.display(),
            first + 1,
            committed.lines().nth(first),
            made.lines().nth(first)
        );
    }
}
