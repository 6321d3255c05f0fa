//! The store's versions, allocations and retention, on SQLite and on
//! PostgreSQL (a private cluster per test): usage counts each allocation
//! once, a version dropped (by retention or `rm --version`) releases
//! exactly the allocations no remaining version names, and a database of
//! an older release gets its allocations recorded when opened.

use std::collections::BTreeSet;

use exnode::{Exnode, Mapping};
use ibp_testkit::pg::PgCluster;
use metadata_manager::acl::Principal;
use metadata_manager::allocations::facts;
use metadata_manager::names::NsPath;
use metadata_manager::store::{
    Backend, Keep, KeepSource, Limits, NewVersion, Retention, Store, StoreError,
};
use uuid::Uuid;

/// A database for one test.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
}

impl Db {
    fn url(&self) -> String {
        match self {
            Db::Sqlite(d) => format!("sqlite://{}", d.path().join("metadata.db").display()),
            Db::Postgres(pg) => pg.url.clone(),
        }
    }
}

fn sqlite() -> Db {
    Db::Sqlite(tempfile::tempdir().expect("tempdir"))
}

fn postgres() -> Db {
    Db::Postgres(PgCluster::start())
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::postgres()).await;
                }
            )*
        }
    };
}

both!(
    usage_counts_each_allocation_once,
    retention_drops_old_versions_and_returns_exactly_their_exclusive_allocations,
    retention_of_directories_and_vos,
    deleting_a_version_keeps_what_the_others_use,
    an_old_database_is_backfilled,
    concurrent_puts_commit_together_and_fail_alone,
);

const DEPOT: &str = "127.0.0.1:6714";

fn alice() -> Principal {
    Principal::user("vo1", "alice")
}

/// A mapping of `[off, off + len)` in allocation `key`, expiring at `t`.
fn m(off: u64, len: u64, key: &str, t: i64) -> Mapping {
    let cap = |kind: &str, tk: u32| format!("ibp://{DEPOT}/0#{key}/{tk}/{kind}");
    Mapping {
        logical_offset: off,
        logical_length: len,
        alloc_length: len,
        read: Some(cap("READ", 1)),
        write: Some(cap("WRITE", 2)),
        manage: Some(cap("MANAGE", 3)),
        depot: DEPOT.into(),
        expires: Some(t),
        ..Mapping::default()
    }
}

fn manage(key: &str) -> String {
    format!("ibp://{DEPOT}/0#{key}/3/MANAGE")
}

/// A file of 1000 bytes whose one extent is held by `keys` (replicas),
/// each expiring at `t`.
fn ex(file: Uuid, keys: &[&str], t: i64) -> Exnode {
    Exnode {
        file: Some(file),
        size: 1000,
        mappings: keys.iter().map(|k| m(0, 1000, k, t)).collect(),
        ..Exnode::default()
    }
}

async fn open(db: &Db, retention: Retention) -> Store {
    let s = Store::open(&db.url(), 4, Limits::default())
        .await
        .expect("open")
        .with_retention(retention);
    s.ensure_root("vo1").await.expect("root");
    s.ensure_root("vo2").await.expect("root");
    s
}

/// Puts `x` at `path` on `base`; the new version and, per version dropped,
/// the MANAGE capabilities to release.
async fn put(s: &Store, path: &str, base: u64, x: &Exnode) -> (u64, Vec<(u64, BTreeSet<String>)>) {
    let p = NsPath::parse(path).expect("path");
    let file = x.file.expect("uuid").to_string();
    let xml = exnode::to_xml(x);
    let f = facts(x);
    let who = alice();
    let put = s
        .put_version(&NewVersion {
            path: &p,
            file: &file,
            base_version: base,
            size: x.size,
            stored: x.stored_bytes(),
            exnode: &xml,
            key_id: None,
            writer: &who,
            wrapped_keys: &[],
            facts: &f,
        })
        .await
        .expect("put");
    let pruned = put
        .pruned
        .into_iter()
        .map(|d| {
            assert_eq!(d.error, None);
            (d.version, d.manage.into_iter().collect())
        })
        .collect();
    (put.version, pruned)
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| manage(k)).collect()
}

async fn alice_usage(s: &Store) -> (u64, u64, u64) {
    let u = s.usage("vo1").await.expect("usage");
    let me = u
        .iter()
        .find(|u| u.owner == "user:alice@vo1")
        .expect("alice's row");
    (me.versions, me.logical, me.stored)
}

/// Refreshes (same allocations, later expiry) do not add to `stored`; an
/// augment adds its new allocation only.
async fn usage_counts_each_allocation_once(db: Db) {
    let s = open(&db, Retention::default()).await;
    let f = Uuid::new_v4();
    put(&s, "/vo1/f", 0, &ex(f, &["a", "b"], 100)).await;
    put(&s, "/vo1/f", 1, &ex(f, &["a", "b"], 200)).await;
    put(&s, "/vo1/f", 2, &ex(f, &["a", "b"], 300)).await;
    assert_eq!(alice_usage(&s).await, (3, 1000, 2000));
    // Augment: one more replica, a new allocation. Version 1 falls out
    // of the default retention (3) and frees nothing: its allocations are
    // the current version's.
    let (v, pruned) = put(&s, "/vo1/f", 3, &ex(f, &["a", "b", "c"], 300)).await;
    assert_eq!(v, 4);
    assert_eq!(pruned, vec![(1, set(&[]))]);
    assert_eq!(alice_usage(&s).await, (3, 1000, 3000));
    let id = f.to_string();
    assert_eq!(s.version_totals(&id).await.expect("totals"), (3, 3000));
    let listed = s.versions(&id).await.expect("versions");
    let rows: Vec<(u64, u64, u64, Option<i64>)> = listed
        .iter()
        .map(|v| (v.row.version, v.row.stored, v.exclusive, v.expires))
        .collect();
    assert_eq!(
        rows,
        [
            (4, 3000, 1000, Some(300)),
            (3, 2000, 0, Some(300)),
            (2, 2000, 0, Some(200)),
        ]
    );
    // The entry carries its current version's expiry.
    let e = s.entry("/vo1/f").await.expect("entry").expect("exists");
    assert_eq!((e.expires, e.readable_until), (Some(300), Some(300)));
    // Trim back to two replicas: the trim's client releases "c", which no
    // longer counts (nor is released again when version 4 is dropped).
    let (_, pruned) = put(&s, "/vo1/f", 4, &ex(f, &["a", "b"], 300)).await;
    assert_eq!(pruned, vec![(2, set(&[]))]);
    assert_eq!(alice_usage(&s).await, (3, 1000, 2000));
    let (_, pruned) = put(&s, "/vo1/f", 5, &ex(f, &["a", "b"], 400)).await;
    assert_eq!(pruned, vec![(3, set(&[]))]);
    let (_, pruned) = put(&s, "/vo1/f", 6, &ex(f, &["a", "b"], 500)).await;
    assert_eq!(pruned, vec![(4, set(&[]))], "c was the trim's to release");
}

/// A file replaced, then trimmed and refreshed, with 2 versions kept:
/// each put drops the oldest version and answers exactly the allocations
/// that only it named.
async fn retention_drops_old_versions_and_returns_exactly_their_exclusive_allocations(db: Db) {
    let s = open(
        &db,
        Retention {
            default: 2,
            ..Retention::default()
        },
    )
    .await;
    let f = Uuid::new_v4();
    let (_, p) = put(&s, "/vo1/g", 0, &ex(f, &["a1", "b1"], 100)).await;
    assert!(p.is_empty());
    // New content: new allocations.
    let (_, p) = put(&s, "/vo1/g", 1, &ex(f, &["a2", "b2"], 100)).await;
    assert!(p.is_empty(), "two versions are kept: {p:?}");
    // Still new content, a third time: version 1 goes, and with it a1
    // and b1, which only it named.
    let (_, p) = put(&s, "/vo1/g", 2, &ex(f, &["a3", "b3"], 100)).await;
    assert_eq!(p, vec![(1, set(&["a1", "b1"]))]);
    // A refresh of version 3: version 2 goes, and a2 and b2.
    let (_, p) = put(&s, "/vo1/g", 3, &ex(f, &["a3", "b3"], 200)).await;
    assert_eq!(p, vec![(2, set(&["a2", "b2"]))]);
    assert_eq!(alice_usage(&s).await, (2, 1000, 2000));
    // Trim to one replica (its client releases b3): version 3 goes and
    // frees nothing.
    let (_, p) = put(&s, "/vo1/g", 4, &ex(f, &["a3"], 200)).await;
    assert_eq!(p, vec![(3, set(&[]))]);
    assert_eq!(alice_usage(&s).await, (2, 1000, 1000));
    let kept: Vec<u64> = s
        .versions(&f.to_string())
        .await
        .expect("versions")
        .iter()
        .map(|v| v.row.version)
        .collect();
    assert_eq!(kept, [5, 4]);
    // A new file (base 0) drops nothing.
    let (_, p) = put(&s, "/vo1/h", 0, &ex(Uuid::new_v4(), &["x"], 100)).await;
    assert!(p.is_empty());
}

/// The nearest directory with a setting decides, else the VO's, else the
/// default; clearing a setting inherits again.
async fn retention_of_directories_and_vos(db: Db) {
    let mut per_vo = std::collections::BTreeMap::new();
    per_vo.insert("vo2".to_owned(), 1);
    let s = open(&db, Retention { default: 3, per_vo }).await;
    let d = NsPath::parse("/vo1/d").expect("path");
    let sub = NsPath::parse("/vo1/d/sub").expect("path");
    s.mkdir(&d, &alice()).await.expect("mkdir");
    let sub_row = s.mkdir(&sub, &alice()).await.expect("mkdir");
    let d_row = s.entry("/vo1/d").await.expect("entry").expect("exists");
    let default = Keep {
        keep: 3,
        source: KeepSource::Default,
        own: None,
    };
    assert_eq!(s.keep_for(&sub).await.expect("keep"), default);
    s.set_keep(&d_row, Some(5)).await.expect("set");
    assert_eq!(
        s.keep_for(&sub).await.expect("keep"),
        Keep {
            keep: 5,
            source: KeepSource::Directory("/vo1/d".into()),
            own: None
        }
    );
    s.set_keep(&sub_row, Some(1)).await.expect("set");
    assert_eq!(
        s.keep_for(&sub).await.expect("keep"),
        Keep {
            keep: 1,
            source: KeepSource::Directory("/vo1/d/sub".into()),
            own: Some(1)
        }
    );
    // keep 1 under sub: a second version drops the first at once.
    let f = Uuid::new_v4();
    put(&s, "/vo1/d/sub/f", 0, &ex(f, &["s1"], 100)).await;
    let (_, p) = put(&s, "/vo1/d/sub/f", 1, &ex(f, &["s2"], 100)).await;
    assert_eq!(p, vec![(1, set(&["s1"]))]);
    s.set_keep(&sub_row, None).await.expect("clear");
    assert_eq!(s.keep_for(&sub).await.expect("keep").keep, 5);
    s.set_keep(&d_row, None).await.expect("clear");
    assert_eq!(s.keep_for(&sub).await.expect("keep"), default);
    // Out of range, or on a file: refused.
    assert!(s.set_keep(&d_row, Some(0)).await.is_err());
    let file_row = s
        .entry("/vo1/d/sub/f")
        .await
        .expect("entry")
        .expect("exists");
    assert!(s.set_keep(&file_row, Some(2)).await.is_err());
    // VO vo2 keeps 1.
    let vo2 = NsPath::parse("/vo2").expect("path");
    assert_eq!(
        s.keep_for(&vo2).await.expect("keep"),
        Keep {
            keep: 1,
            source: KeepSource::Vo("vo2".into()),
            own: None
        }
    );
}

/// `rm --version` of an old version sharing allocations with the current
/// one answers only the allocations that version alone named; deleting
/// the file answers each allocation once.
async fn deleting_a_version_keeps_what_the_others_use(db: Db) {
    let s = open(
        &db,
        Retention {
            default: 10,
            ..Retention::default()
        },
    )
    .await;
    let f = Uuid::new_v4();
    put(&s, "/vo1/f", 0, &ex(f, &["a", "b"], 100)).await;
    // New content, then its refresh and an augment.
    put(&s, "/vo1/f", 1, &ex(f, &["c"], 100)).await;
    put(&s, "/vo1/f", 2, &ex(f, &["c"], 200)).await;
    put(&s, "/vo1/f", 3, &ex(f, &["c", "d"], 200)).await;
    // Trim d away again (the trim releases d itself).
    put(&s, "/vo1/f", 4, &ex(f, &["c"], 200)).await;
    let e = s.entry("/vo1/f").await.expect("entry").expect("exists");
    let gone = s.delete(&e, Some(1)).await.expect("delete v1");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].version, 1);
    let freed: BTreeSet<String> = gone[0].manage.iter().cloned().collect();
    assert_eq!(freed, set(&["a", "b"]));
    assert_eq!(gone[0].manage.len(), 2);
    for v in [2, 3, 4] {
        let gone = s.delete(&e, Some(v)).await.expect("delete");
        assert_eq!(
            gone[0].manage,
            Vec::<String>::new(),
            "version {v}: c is current"
        );
    }
    assert!(s.delete(&e, Some(5)).await.is_err(), "the current version");
    assert_eq!(alice_usage(&s).await, (1, 1000, 1000));
    let gone = s.delete(&e, None).await.expect("delete the file");
    let all: Vec<&String> = gone.iter().flat_map(|d| &d.manage).collect();
    assert_eq!(all, [&manage("c")]);
}

/// A database of the release before allocations were recorded (schema
/// migrations 1 and 2, exNodes in `versions`): opening it records every
/// version's allocations, so usage counts them once; a version whose
/// exNode does not parse is marked, and deleting a version next to it
/// releases nothing.
async fn an_old_database_is_backfilled(db: Db) {
    let url = db.url();
    let old = Store::open_old_schema(&url, 2).await.expect("old schema");
    let f = Uuid::new_v4();
    let h = Uuid::new_v4();
    let owner = alice().to_string();
    for (id, path, kind, current) in [
        ("root", "/vo1", "dir", 0i64),
        (&f.to_string()[..], "/vo1/f", "file", 3),
        (&h.to_string()[..], "/vo1/h", "file", 2),
    ] {
        sqlx::query(
            "INSERT INTO entries (id, vo, path, parent, kind, owner, current_version, size,
                                  created_at, updated_at)
             VALUES ($1, 'vo1', $2, $3, $4, $5, $6, 1000, 1, 1)",
        )
        .bind(id)
        .bind(path)
        .bind(if path == "/vo1" { "" } else { "/vo1" })
        .bind(kind)
        .bind(if path == "/vo1" { "" } else { &owner[..] })
        .bind(current)
        .execute(&old)
        .await
        .expect("entry");
    }
    let versions = [
        (f, 1i64, exnode::to_xml(&ex(f, &["a", "b"], 100))),
        (f, 2, exnode::to_xml(&ex(f, &["a", "b"], 200))),
        (f, 3, exnode::to_xml(&ex(f, &["a", "b"], 300))),
        (h, 1, exnode::to_xml(&ex(h, &["x"], 100))),
        (h, 2, "<exnode broken".to_owned()),
    ];
    for (file, v, xml) in &versions {
        sqlx::query(
            "INSERT INTO versions (file, version, size, stored, exnode, key_id, created_by, created_at)
             VALUES ($1, $2, 1000, 2000, $3, NULL, $4, 1)",
        )
        .bind(file.to_string())
        .bind(*v)
        .bind(xml)
        .bind(&owner)
        .execute(&old)
        .await
        .expect("version");
    }
    old.close().await;

    let s = open(&db, Retention::default()).await;
    // f: a and b once; h: x (version 2 unknown).
    assert_eq!(alice_usage(&s).await, (5, 2000, 2000 + 1000));
    let listed = s.versions(&f.to_string()).await.expect("versions");
    let expiry: Vec<Option<i64>> = listed.iter().map(|v| v.expires).collect();
    assert_eq!(expiry, [Some(300), Some(200), Some(100)]);
    let he = s.entry("/vo1/h").await.expect("entry").expect("exists");
    assert!(he.unreadable, "h's current exNode does not parse");
    let gone = s.delete(&he, Some(1)).await.expect("delete h v1");
    assert!(gone[0].manage.is_empty(), "{gone:?}");
    assert!(
        gone[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("version 2 could not be read")),
        "{gone:?}"
    );
    // Opening again finds nothing left to record.
    drop(s);
    let s = open(&db, Retention::default()).await;
    assert_eq!(alice_usage(&s).await, (4, 2000, 2000));
}

/// 64 puts at once: the 48 creating new files all succeed (on SQLite
/// committed in groups, fewer commits than puts), the 16 creating a path
/// that exists are refused each with its own conflict and change nothing;
/// every new file is there with its UUID.
async fn concurrent_puts_commit_together_and_fail_alone(db: Db) {
    let s = open(&db, Retention::default()).await;
    let taken = Uuid::new_v4();
    put(&s, "/vo1/taken", 0, &ex(taken, &["t"], 1)).await;
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 4 == 3 {
                "/vo1/taken".to_owned()
            } else {
                format!("/vo1/f{i}")
            };
            let file = Uuid::new_v4();
            let x = ex(file, &[&format!("k{i}")], 1);
            let p = NsPath::parse(&path).expect("path");
            let (id, xml, f, who) = (file.to_string(), exnode::to_xml(&x), facts(&x), alice());
            let r = s
                .put_version(&NewVersion {
                    path: &p,
                    file: &id,
                    base_version: 0,
                    size: x.size,
                    stored: x.stored_bytes(),
                    exnode: &xml,
                    key_id: None,
                    writer: &who,
                    wrapped_keys: &[],
                    facts: &f,
                })
                .await;
            (path, id, r)
        }));
    }
    let (mut made, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (path, id, r) = t.await.expect("a put task");
        match r {
            Ok(put) => {
                assert_eq!(put.version, 1, "{path}");
                made.push((path, id));
            }
            Err(StoreError::Conflict(m)) => {
                assert_eq!(path, "/vo1/taken");
                assert!(m.contains("/vo1/taken exists"), "{m}");
                refused += 1;
            }
            Err(e) => panic!("{path}: {e}"),
        }
    }
    assert_eq!((made.len(), refused), (48, 16));
    for (path, id) in &made {
        let e = s.entry(path).await.expect("entry").expect("the file");
        assert_eq!(&e.id, id, "{path}");
        assert_eq!(e.current_version, 1, "{path}");
    }
    let e = s.entry("/vo1/taken").await.expect("entry").expect("taken");
    assert_eq!(e.id, taken.to_string(), "the refused puts changed nothing");
    let (versions, logical, _) = alice_usage(&s).await;
    assert_eq!((versions, logical), (49, 49 * 1000));
    let (groups, puts) = s.put_groups();
    if s.backend() == Backend::Sqlite {
        assert_eq!(puts, 49, "every put committed counted once");
        assert!(groups < puts, "{puts} puts in {groups} commits");
    } else {
        assert_eq!((groups, puts), (0, 0), "PostgreSQL commits each put alone");
    }
}
