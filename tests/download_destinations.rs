//! Where `lors download` (and liblors and the Python package, which share
//! `lors::files::download_to_path`) writes: a regular file through its
//! part file, renamed when complete; a FIFO or device in place, never
//! replaced (renaming a part file over `/dev/null` turned it, for root,
//! into a regular file, and every later test that wrote to /dev/null
//! failed); a directory refused before anything is fetched; a symbolic
//! link followed, the link kept.

mod common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;

use common::*;
use ibp_grid::grid::GridOptions;

#[test]
fn downloads_into_a_fifo_a_directory_and_a_symbolic_link() {
    let _timer = Timer::start("downloads_into_a_fifo_a_directory_and_a_symbolic_link");
    let g = start(GridOptions {
        depots: 1,
        users: vec!["alice".into()],
        ..Default::default()
    });
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes(3 << 20, 11);
    upload(&g, "alice", "src", &data, "/vo1/f", &[]);

    // A FIFO: written in place, still a FIFO afterwards.
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).expect("path");
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(&fifo)
                .and_then(|mut f| f.read_to_end(&mut got))
                .map(|_| got)
        })
    };
    let out = run_limited(
        lors_cmd(&g, "alice", &["download", "/vo1/f", s(&fifo)]),
        LORS_LIMIT,
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let kind = std::fs::symlink_metadata(&fifo)
        .expect("the FIFO")
        .file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
    let got = reader.join().expect("reader").expect("read the FIFO");
    assert!(
        got == data,
        "the FIFO carried {} bytes, not the file",
        got.len()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lors-part"))
        .collect();
    assert!(leftovers.is_empty(), "part files left: {leftovers:?}");

    // A directory: refused at once, nothing fetched or left in it.
    let target = dir.join("into");
    std::fs::create_dir(&target).expect("mkdir");
    let out = run_limited(
        lors_cmd(&g, "alice", &["download", "/vo1/f", s(&target)]),
        LORS_LIMIT,
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("is a directory"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&target).expect("list").count(), 0);
    assert!(
        !dir.join(".into.lors-part").exists(),
        "a part file beside the directory"
    );

    // A symbolic link to a file: the target gets the bytes, the link stays.
    let real = dir.join("real");
    std::fs::write(&real, b"old").expect("write");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    ok(lors(&g, "alice", &["download", "/vo1/f", s(&link)]));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert_file_is(&real, &data, "the link's target");
}
