//! The legacy port's own budget (issue 14): unauthenticated allocations
//! draw on `legacy_max_size` per resource, with per-address limits on bytes
//! and allocations; refusals are " -19 \n" (IBP_E_WOULD_EXCEED_LIMIT, what
//! a full IBP 1.4 depot answers). Real depot processes; two client
//! addresses on loopback (127.0.0.1 and 127.0.0.2).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// ALLOCATE of `size` bytes from `from`: the capabilities, or the error line.
fn allocate_from(d: &DepotProc, from: &str, duration: i64, size: u64) -> Result<Caps, String> {
    let mut c = Conn::connect_from(d.addr, ip(from));
    let reply = c.request(&format!("1 1 0 2 1 {duration} {size} 300\n"));
    if reply.starts_with("1 ") {
        Ok(parse_allocate_reply(&reply, "127.0.0.1", d.port(), 0))
    } else {
        c.expect_closed();
        Err(reply)
    }
}

fn budget_depot(data: &std::path::Path) -> DepotBuilder {
    DepotBuilder::new().data(data).args([
        "--hard-size",
        "100MiB",
        "--legacy-max-size",
        "3MiB",
        "--legacy-per-address-bytes",
        "2MiB",
        "--legacy-per-address-allocations",
        "3",
        "--reap-interval",
        "1s",
    ])
}

/// One address may hold `legacy_per_address_bytes` and
/// `legacy_per_address_allocations`; another address has its own, within
/// the total `legacy_max_size`; a restart keeps each address's share (the
/// journal records the allocating address).
#[test]
fn one_address_cannot_take_the_legacy_budget() {
    let data = tempfile::tempdir().unwrap();
    let builder = budget_depot(data.path());
    let mut d = builder.spawn();
    let a1 = allocate_from(&d, "127.0.0.1", 3600, 2 * MIB).unwrap();
    assert_eq!(
        allocate_from(&d, "127.0.0.1", 3600, 1).unwrap_err(),
        " -19 \n"
    );
    // 127.0.0.2 is another address: 1 MiB left of the 3 MiB budget.
    let b1 = allocate_from(&d, "127.0.0.2", 3600, MIB).unwrap();
    assert_eq!(
        allocate_from(&d, "127.0.0.2", 3600, 1).unwrap_err(),
        " -19 \n"
    );
    // Releasing 127.0.0.1's allocation (MANAGE capability) gives its 2 MiB
    // back: 127.0.0.2 takes one more MiB (its own 2 MiB) in two more
    // allocations.
    let mut c = d.connect();
    assert_eq!(c.request(&decr_line(&a1.manage, 1)), "1 \n");
    let b2 = allocate_from(&d, "127.0.0.2", 3600, MIB - 1).unwrap();
    let _b3 = allocate_from(&d, "127.0.0.2", 3600, 1).unwrap();
    // Shrinking gives bytes back, but 3 allocations is 127.0.0.2's count.
    let mut c = d.connect();
    assert_eq!(c.request(&chng_line(&b1.manage, MIB / 2, 0, 0)), "1 \n");
    assert_eq!(
        allocate_from(&d, "127.0.0.2", 3600, 1).unwrap_err(),
        " -19 \n"
    );
    // A CHNG that grows a legacy allocation draws on the same budget.
    let mut c = d.connect();
    assert_eq!(c.request(&chng_line(&b2.manage, 2 * MIB, 0, 0)), " -19 \n");
    // 127.0.0.1 has 1 MiB; then the total (3 MiB) is what stops it.
    let a2 = allocate_from(&d, "127.0.0.1", 3600, MIB).unwrap();
    assert_eq!(
        allocate_from(&d, "127.0.0.1", 3600, MIB / 2 + 1).unwrap_err(),
        " -19 \n"
    );

    // After a restart the shares are the same.
    d.kill_now();
    let d = builder.spawn();
    assert_eq!(
        allocate_from(&d, "127.0.0.2", 3600, 1).unwrap_err(),
        " -19 \n"
    );
    assert_eq!(
        allocate_from(&d, "127.0.0.1", 3600, MIB / 2 + 1).unwrap_err(),
        " -19 \n"
    );
    let _a3 = allocate_from(&d, "127.0.0.1", 3600, MIB / 2).unwrap();
    let mut c = d.connect();
    assert_eq!(c.load(&a2.read, 0, 0), b"");
}

/// Budget comes back when an allocation is released with the MANAGE
/// capability (LoRS's trim form) and when one expires.
#[test]
fn legacy_budget_returns_after_decr_with_the_manage_cap() {
    let data = tempfile::tempdir().unwrap();
    let d = budget_depot(data.path()).spawn();
    let a = allocate_from(&d, "127.0.0.1", 3600, 2 * MIB).unwrap();
    let b = allocate_from(&d, "127.0.0.2", 2, MIB).unwrap();
    assert_eq!(
        allocate_from(&d, "127.0.0.2", 3600, MIB).unwrap_err(),
        " -19 \n"
    );
    // A READ capability cannot release it (and gives nothing back).
    expect_error(&d, &decr_line(&a.read, 1), " -10 \n");
    assert_eq!(
        allocate_from(&d, "127.0.0.2", 3600, MIB).unwrap_err(),
        " -19 \n"
    );
    let mut c = d.connect();
    assert_eq!(
        c.request(&format!("0 9 {} 42 1 20\n", cr(&a.manage))),
        "1 \n"
    );
    let _ = allocate_from(&d, "127.0.0.2", 3600, MIB).unwrap();
    // b expires after 2 s; once reaped its MiB is back.
    let back = wait_until(Duration::from_secs(10), || {
        allocate_from(&d, "127.0.0.1", 3600, 2 * MIB).is_ok()
    });
    assert!(back, "the expired allocation's budget did not come back");
    let mut c = d.connect();
    assert_eq!(c.request(&probe_line(&b.manage)), " -4 \n");
}

/// The default budget: 10 % of hard_size for all legacy allocations, 2 %
/// per address. The attack line (all the depot for 30 days) is refused and
/// reserves nothing; the resource stays free.
#[test]
fn default_legacy_budget_is_a_share_of_hard_size() {
    let d = DepotBuilder::new()
        .args(["--hard-size", "100MiB", "--max-duration", "30d"])
        .spawn();
    let all = 100 * MIB;
    expect_error(&d, &format!("1 1 0 2 1 2592000 {all} 10\n"), " -19 \n");
    let per_address = all / 50; // 2 %
    expect_error(
        &d,
        &format!("1 1 0 2 1 2592000 {} 10\n", per_address + 1),
        " -19 \n",
    );
    let _ = allocate_from(&d, "127.0.0.1", 2_592_000, per_address).unwrap();
    // With four more addresses, the 10 % total is reached.
    for i in 2..=5 {
        allocate_from(&d, &format!("127.0.0.{i}"), 60, per_address).unwrap();
    }
    assert_eq!(
        allocate_from(&d, "127.0.0.6", 60, 1).unwrap_err(),
        " -19 \n"
    );
    let mut c = d.connect();
    c.send(b"1 4 0 1 ibp 10\n");
    let h = c.read_line();
    let n: usize = h.trim().strip_prefix("1 ").unwrap().parse().unwrap();
    let body = String::from_utf8(c.read_exact(n)).unwrap();
    assert!(
        body.contains(&format!(" UH:{} ", 5 * per_address)),
        "{body}"
    );
}
