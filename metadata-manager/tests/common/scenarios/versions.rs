//! Versions and retention over the API: the put's answer lists what an
//! old version dropped by the retention leaves to release, `versions`
//! lists what is kept, `retention` reads and sets a directory's setting
//! (write right), listings carry the current version's expiry.

use exnode::Exnode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{mapping, Db, Grid, Settings, DEPOT};

/// One extent of 1000 bytes in allocation `tag`, expiring at `t`.
fn one(file: Uuid, tag: &str, t: i64) -> Exnode {
    let mut m = mapping(0, 1000, 1000, tag);
    m.expires = Some(t);
    Exnode {
        file: Some(file),
        size: 1000,
        mappings: vec![m],
        ..Exnode::default()
    }
}

fn manage(tag: &str) -> String {
    format!("ibp://{DEPOT}/0#m{tag}/123/MANAGE")
}

pub async fn versions_and_retention(db: Db) {
    let g = Grid::start(
        db,
        Settings {
            keep_versions: 2,
            ..Settings::default()
        },
    );
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    let bob_u = g.pki.user("bob", "vo1", "bob", &[]);
    g.introduce(&[&alice_u, &bob_u]).await;
    let (a, bob) = (g.client(&alice_u), g.client(&bob_u));
    a.mkdir("/vo1/d").await.ok();
    let f = "/vo1/d/f";
    let id = Uuid::new_v4();
    // v1, then a refresh (same allocation), then new content: v1 drops
    // out of the retention (2) and frees nothing, v2 still names "one".
    let r = a.put_ex(f, 0, &one(id, "one", 100)).await.ok();
    assert!(r.get("pruned").is_none(), "{r}");
    a.put_ex(f, 1, &one(id, "one", 200)).await.ok();
    let r = a.put_ex(f, 2, &one(id, "two", 300)).await.ok();
    assert_eq!(r["pruned"], json!([{ "version": 1, "manage": [] }]));
    // A refresh of v3: v2 goes, and "one" with it.
    let r = a.put_ex(f, 3, &one(id, "two", 400)).await.ok();
    assert_eq!(
        r["pruned"],
        json!([{ "version": 2, "manage": [manage("one")] }])
    );

    let v = a.post("/v1/versions", json!({ "path": f })).await.ok();
    assert_eq!(v["current_version"], 4);
    assert_eq!(
        v["retention"],
        json!({ "path": f, "keep": 2, "source": "default" })
    );
    let rows: Vec<(u64, bool, u64, u64, i64)> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["created_by"], "user:alice@vo1");
            (
                r["version"].as_u64().unwrap(),
                r["current"].as_bool().unwrap(),
                r["stored"].as_u64().unwrap(),
                r["exclusive"].as_u64().unwrap(),
                r["expires"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(4, true, 1000, 0, 400), (3, false, 1000, 0, 300)]);
    // stat counts "two" once.
    let st = a.stat(f).await.ok();
    assert_eq!(
        (st["versions"].clone(), st["stored"].clone()),
        (json!(2), json!(1000))
    );
    assert_eq!(
        (st["expires"].clone(), st["readable_until"].clone()),
        (json!(400), json!(400))
    );
    // The listing carries the current version's expiry.
    let l = a.list("/vo1/d").await.ok();
    assert_eq!(l["entries"][0]["expires"], 400);
    assert_eq!(l["entries"][0]["readable_until"], 400);
    // A directory has none.
    let l = a.list("/vo1").await.ok();
    assert!(l["entries"][0].get("expires").is_none(), "{l}");

    // Retention: read with the read right, set with the write right.
    bob.post("/v1/versions", json!({ "path": f }))
        .await
        .refused(403, "read right on /vo1/d/f");
    bob.post("/v1/retention", json!({ "path": "/vo1/d", "keep": 1 }))
        .await
        .refused(403, "write right on /vo1/d");
    let r = a
        .post("/v1/retention", json!({ "path": "/vo1/d", "keep": 5 }))
        .await
        .ok();
    assert_eq!(
        r,
        json!({ "path": "/vo1/d", "keep": 5, "source": "directory /vo1/d", "own": 5 })
    );
    a.mkdir("/vo1/d/sub").await.ok();
    let r: Value = a
        .post("/v1/retention", json!({ "path": "/vo1/d/sub" }))
        .await
        .ok();
    assert_eq!(r["keep"], 5, "inherited: {r}");
    assert!(r.get("own").is_none(), "{r}");
    let v = a.post("/v1/versions", json!({ "path": f })).await.ok();
    assert_eq!(v["retention"]["keep"], 5);
    a.post("/v1/retention", json!({ "path": "/vo1", "keep": 5 }))
        .await
        .refused(400, "keep_versions_per_vo");
    a.post("/v1/retention", json!({ "path": f, "keep": 5 }))
        .await
        .refused(400, "is a file");
    a.post("/v1/retention", json!({ "path": "/vo1/d", "keep": 0 }))
        .await
        .refused(400, "between 1");
    a.post(
        "/v1/retention",
        json!({ "path": "/vo1/d", "keep": 3, "inherit": true }),
    )
    .await
    .refused(400, "not both");
    let r = a
        .post(
            "/v1/retention",
            json!({ "path": "/vo1/d", "inherit": true }),
        )
        .await
        .ok();
    assert_eq!(
        r,
        json!({ "path": "/vo1/d", "keep": 2, "source": "default" })
    );
    a.post("/v1/versions", json!({ "path": "/vo1/d" }))
        .await
        .refused(400, "is a directory");
}

/// Group commit keeps every answered put: sixteen writers on their own
/// connections create files at once (on SQLite the puts commit in groups,
/// one transaction each), every fifth put a refused one (a path that
/// exists: 409, rolled back alone inside its group); the manager is
/// killed with SIGKILL while puts are in flight. A manager started again
/// on the database serves every put that was answered 200, with its
/// UUID and size, and none that was refused.
pub async fn acknowledged_puts_survive_sigkill(db: Db) {
    use std::sync::{Arc, Mutex};
    let mut g = Grid::start(db, Settings::default());
    let alice_u = g.pki.user("alice", "vo1", "alice", &[]);
    g.introduce(&[&alice_u]).await;
    let a = g.client(&alice_u);
    a.mkdir("/vo1/d").await.ok();
    let taken = a.create("/vo1/d/taken", 7).await;
    let acked: Arc<Mutex<Vec<(String, Uuid, u64)>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    const KILL_AFTER: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let c = g.client(&alice_u);
        let (acked, refused, enough) = (acked.clone(), refused.clone(), enough.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..10_000u64 {
                let (path, id, size) = if n % 5 == 4 {
                    ("/vo1/d/taken".to_owned(), Uuid::new_v4(), 1)
                } else {
                    (
                        format!("/vo1/d/w{w}-{n}"),
                        Uuid::new_v4(),
                        100 + w * 1000 + n,
                    )
                };
                let doc = exnode::to_xml(&crate::common::exnode_of(id, size, 1));
                let body =
                    json!({ "path": path, "base_version": 0, "exnode": doc, "wrapped_keys": [] });
                let r = c
                    .try_call(
                        ibp_https::Method::POST,
                        "/v1/put",
                        Some(serde_json::to_vec(&body).unwrap()),
                    )
                    .await;
                match r {
                    Ok(r) if r.status == 200 => {
                        assert_eq!(r.body["version"], 1, "{path}");
                        let mut l = acked.lock().unwrap();
                        l.push((path, id, size));
                        if l.len() >= KILL_AFTER {
                            enough.notify_one();
                        }
                    }
                    Ok(r) if path == "/vo1/d/taken" => {
                        r.refused(409, "/vo1/d/taken exists");
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // The manager is gone (or going): this writer stops.
                    Ok(_) | Err(_) => return,
                }
            }
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(120), enough.notified())
        .await
        .expect("150 puts answered within 2 minutes");
    let pid = g.server.pid().expect("the manager runs");
    // SAFETY: kill(2) on the pid of the manager this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    for t in tasks {
        t.await.expect("a writer task");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= KILL_AFTER, "{} answered", acked.len());
    assert!(
        refused.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "refused puts were mixed in"
    );
    let _ = g.server.stop();
    let again = g.spawn_server(1);
    let b = g.client_of(&again, &alice_u);
    for (path, id, size) in &acked {
        let r = b.get_file(path).await.ok();
        assert_eq!(r["id"], id.to_string(), "{path}");
        assert_eq!(r["size"], *size, "{path}");
        assert_eq!(r["version"], 1, "{path}");
    }
    let r = b.get_file("/vo1/d/taken").await.ok();
    assert_eq!(
        (r["id"].as_str(), r["size"].as_u64()),
        (Some(taken.to_string().as_str()), Some(7)),
        "the refused puts changed nothing"
    );
    let listed = b.list("/vo1/d").await.ok();
    let n = listed["entries"].as_array().map_or(0, Vec::len);
    assert!(
        n > acked.len(),
        "{n} entries listed, {} answered",
        acked.len()
    );
    eprintln!(
        "{} puts answered before SIGKILL, all there after the restart ({n} entries)",
        acked.len()
    );
}
