//! 200 concurrent small uploads from one client through the `lors` library
//! (one session: one L-Bone query, kept depot and metadata-manager
//! connections) against a real grid; every one registered, a sample read
//! back byte for byte, and memory bounded in the client, the depots and the
//! metadata manager (their peak RSS, `VmHWM`).
//!
//! The only test of this file, so the test process's peak RSS is its own.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibp_grid::grid::GridOptions;
use lors::files::{self, Dest, Placement, Source, UploadSettings};
use lors::transfer::{Redundancy, Sink};

const FILES: usize = 200;
const SIZE: usize = 4096;
/// Peak RSS allowed for this test process (client side).
const CLIENT_HWM_MIB: u64 = 400;
/// Peak RSS allowed for each depot and for the metadata manager.
const SERVER_HWM_MIB: u64 = 300;

fn data(i: usize) -> Vec<u8> {
    bytes(SIZE, 1000 + i as u64)
}

#[test]
fn two_hundred_concurrent_small_uploads_from_one_client_with_bounded_memory() {
    let _timer =
        Timer::start("two_hundred_concurrent_small_uploads_from_one_client_with_bounded_memory");
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/many"]));
    let env: HashMap<String, String> = g.env("alice").into_iter().collect();
    let trust = lors::credentials::TrustSource::Dir(env["LORS_TRUST_DIR"].clone().into())
        .load()
        .expect("load the trust directory");
    let cred = ibp_auth::ProxyCredential::load(Path::new(&env["X509_USER_PROXY"]))
        .expect("load alice's proxy");
    let mdm = lors::MetadataClient::connect(&env["LORS_METADATA_URL"], &trust, &cred)
        .expect("a metadata-manager client");
    let key = lors::keys::load(Path::new(&env["LORS_KEY_FILE"])).expect("alice's key pair");
    let session = files::Grid {
        trust: Some(trust),
        credential: Some(cred),
        lbone: Some(env["LORS_LBONE_URL"].clone()),
        mdm: Some(mdm),
        key: Some(Arc::new(key)),
        ..Default::default()
    };
    let settings = UploadSettings {
        block_size: 1 << 20,
        redundancy: Redundancy::Copies(1),
        threads: 1,
        security: exnode::Security::Full,
        encrypt: true,
        placement: Placement {
            duration: 3600,
            ..Default::default()
        },
        filename: None,
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let t = Instant::now();
    rt.block_on(async {
        // All 200 at once: no semaphore.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..FILES {
            let (session, settings) = (session.clone(), settings.clone());
            set.spawn(async move {
                let data = data(i);
                let dest = Dest::Path(format!("/vo1/many/small-{i}"));
                let r = files::upload(
                    &session,
                    &data[..],
                    Some(SIZE as u64),
                    &dest,
                    &settings,
                    None,
                )
                .await;
                (i, r)
            });
        }
        let mut done = [false; FILES];
        let all = async {
            while let Some(r) = set.join_next().await {
                let (i, r) = r.expect("an upload task panicked");
                let summary = r.unwrap_or_else(|e| panic!("upload of small-{i}: {e:#}"));
                assert_eq!(summary.version, 1, "small-{i}");
                done[i] = true;
            }
        };
        tokio::time::timeout(Duration::from_secs(180), all)
            .await
            .expect("200 uploads within 180 s");
        assert!(done.iter().all(|d| *d), "every upload finished");
        eprintln!(
            "{FILES} concurrent uploads of {SIZE} bytes in {:.2} s",
            t.elapsed().as_secs_f64()
        );

        // Read 20 back through the same session.
        let dir = tempfile::tempdir().expect("a temporary directory");
        for i in (0..FILES).step_by(FILES / 20) {
            let out = dir.path().join(format!("small-{i}"));
            let f = std::fs::File::create(&out).expect("create the output");
            let src = Source::Path {
                path: format!("/vo1/many/small-{i}"),
                version: None,
            };
            tokio::time::timeout(
                Duration::from_secs(60),
                files::download(&session, &src, Sink::File(f), 2, None),
            )
            .await
            .expect("a download within 60 s")
            .unwrap_or_else(|e| panic!("download of small-{i}: {e:#}"));
            assert_file_is(&out, &data(i), &format!("small-{i}"));
        }
    });

    // All 200 are registered, each with its size.
    let out = ok(lors(&g, "alice", &["ls", "-l", "/vo1/many"]));
    for i in 0..FILES {
        let name = format!("small-{i}");
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().last() == Some(name.as_str())
                    && l.split_whitespace().any(|w| w == SIZE.to_string())),
            "{name} listed with {SIZE} bytes: {out}"
        );
    }
    assert_eq!(out.lines().filter(|l| l.contains("small-")).count(), FILES);

    // Peak memory of the client (this process), each depot and the
    // metadata manager.
    let me = proc_status_kib("self", "VmHWM");
    eprintln!("client VmHWM {} MiB", me / 1024);
    assert!(
        me < CLIENT_HWM_MIB << 10,
        "the client's peak RSS {} MiB exceeds {CLIENT_HWM_MIB} MiB",
        me / 1024
    );
    // pids(): online CA, L-Bone, metadata manager, then the depots.
    let pids = g.pids();
    assert_eq!(pids.len(), 3 + g.depots.len(), "{pids:?}");
    let mut servers = vec![("metadata manager".to_owned(), pids[2])];
    for d in &g.depots {
        servers.push((d.name.clone(), d.pid().expect("the depot runs")));
    }
    for (what, pid) in servers {
        let hwm = proc_status_kib(&pid.to_string(), "VmHWM");
        eprintln!("{what} (pid {pid}) VmHWM {} MiB", hwm / 1024);
        assert!(
            hwm < SERVER_HWM_MIB << 10,
            "{what}'s peak RSS {} MiB exceeds {SERVER_HWM_MIB} MiB",
            hwm / 1024
        );
    }
}
