//! An upload whose pieces are larger than any depot has room for is
//! refused before any data moves, saying the largest piece the depots take
//! and the `--block-size` to pass (issue 19: "When every depot refuses the
//! requested duration ... or size, say what the depots allow and which
//! option to pass").

mod common;

use std::time::Duration;

use common::*;
use ibp_grid::grid::GridOptions;

#[test]
fn pieces_larger_than_the_depots_take_are_refused_with_the_block_size_to_pass() {
    let _timer =
        Timer::start("pieces_larger_than_the_depots_take_are_refused_with_the_block_size_to_pass");
    let g = start(GridOptions {
        depots: 3,
        depot_hard_size: 3 << 20,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    });
    keys_init(&g, "alice");
    let data = bytes(4 << 20, 21);
    let src = write(&g.user("alice").dir, "big.bin", &data);
    let before: u64 = (0..3).map(|i| depot_data_bytes(&g, i)).sum();
    let o = lors(
        &g,
        "alice",
        &["upload", s(&src), "/vo1/big", "--block-size", "8MiB"],
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the largest piece enough depots take is 3.0 MiB")
            && err.contains("pass --block-size 3MiB or less"),
        "{err}"
    );
    assert!(!err.contains("no depot left"), "{err}");
    let after: u64 = (0..3).map(|i| depot_data_bytes(&g, i)).sum();
    assert_eq!(before, after, "no data moved");
    // What it says to pass works.
    ok(lors(
        &g,
        "alice",
        &["upload", s(&src), "/vo1/big", "--block-size", "3MiB"],
    ));
    download_is(
        &g,
        "alice",
        "/vo1/big",
        &data,
        "uploaded with the block size suggested",
    );
}

/// More copies than depots: the error says every depot already holds a
/// piece, not "no depot was tried".
#[test]
fn more_copies_than_depots_says_why() {
    let _timer = Timer::start("more_copies_than_depots_says_why");
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    let data = bytes(300_000, 22);
    upload(&g, "alice", "c.bin", &data, "/vo1/c", &["--copies", "3"]);
    let o = lors(&g, "alice", &["augment", "/vo1/c", "--copies", "4"]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("each of the 3 depot(s) offered already holds a piece of this block"),
        "{err}"
    );
    assert!(!err.contains("no depot was tried"), "{err}");
    download_is(
        &g,
        "alice",
        "/vo1/c",
        &data,
        "unchanged after the refused augment",
    );
}
