//! The fuzz targets' properties (`fuzz/src/lib.rs`, one function per
//! target) on stable, in CI: every target over its seed corpus
//! (`fuzz/seeds/<target>/`) and over bounded mutations of it, and bounded
//! proptests of random request lines for the secure port (v2/v3) and the
//! crypto level's data connections. libFuzzer itself needs nightly
//! (`fuzz/README.md`).

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::PathBuf;

use proptest::prelude::*;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Every target holds on every seed, on each seed cut short at every
/// length, and on deterministic single-byte mutations of it (a bounded
/// stand-in for libFuzzer's first mutations).
#[test]
fn every_fuzz_target_holds_on_its_seed_corpus() {
    for (target, check) in checks::TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        let mut runs = 0usize;
        for (name, data) in &seeds {
            let run = |d: &[u8]| {
                if let Err(p) = std::panic::catch_unwind(|| check(d)) {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    panic!("{target} on {d:?} (from seed {name}): {msg}");
                }
            };
            run(data);
            for n in 0..data.len().min(4096) {
                run(&data[..n]);
                runs += 1;
            }
            for (i, b) in [b' ', b'\n', b'0', b'-', b'#', 0xff, b'9', b'\0']
                .iter()
                .enumerate()
            {
                for pos in (i..data.len().min(512)).step_by(7) {
                    let mut m = data.clone();
                    m[pos] = *b;
                    run(&m);
                    m.insert(pos, *b);
                    run(&m);
                    runs += 2;
                }
            }
        }
        assert!(runs > 0);
        eprintln!("{target}: {} seeds, {runs} inputs", seeds.len());
    }
}

/// A token of a secure-port or data-connection line: well-formed fields
/// most of the time, so that the parsers get past the first checks.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("2".to_owned()),
        Just("3".to_owned()),
        prop::sample::select(vec![
            "1", "2", "4", "5", "8", "9", "13", "20", "21", "22", "0", "-1", "99",
        ])
        .prop_map(str::to_owned),
        (0u64..1 << 40).prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("3#IBP-abcDEF123".to_owned()),
        Just("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_owned()),
        Just("AAECAwQ_-w.c2lnbmF0dXJl".to_owned()),
        Just("ibp://depot2.example.org:6715/0#IBP-xyz/5/WRITE".to_owned()),
        Just("ibp".to_owned()),
        "[A-Za-z0-9_#:/.-]{1,40}",
        "[ -~]{1,12}",
        "\\PC{1,8}",
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(token(), 0..11),
        prop::sample::select(vec![" ", "  ", "\t", " \r"]),
        prop::sample::select(vec!["\n", " \n", "", "\r\n"]),
    )
        .prop_map(|(t, sep, end)| format!("{}{end}", t.join(sep)).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `parse_secure_request` on random lines of plausible tokens.
    #[test]
    fn secure_request_parser_on_random_lines(l in line()) {
        checks::secure_request(&l);
    }

    /// The crypto level's lines on random lines and raw bytes.
    #[test]
    fn sealed_lines_on_random_lines(l in line(), raw in prop::collection::vec(any::<u8>(), 0..300)) {
        checks::sealed(&l);
        checks::sealed(&raw);
    }

    /// The legacy parsers on the same lines (v0/v1 tokens overlap).
    #[test]
    fn legacy_parsers_on_random_lines(l in line()) {
        checks::request(&l);
        checks::reply(&l);
    }
}
