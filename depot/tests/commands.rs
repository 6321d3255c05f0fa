//! Every command of the legacy protocol and its error codes, against the
//! real depot binary over loopback.

mod common;

use common::*;

const MIB: u64 = 1 << 20;

/// Reads a `1 <len> \n` + body reply, checking that len is exact.
fn read_body(c: &mut Conn) -> String {
    let header = c.read_line();
    let len: usize = header
        .strip_prefix("1 ")
        .and_then(|s| s.strip_suffix(" \n"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a `1 <len> \\n` header: {header:?}"));
    String::from_utf8(c.read_exact(len)).expect("body is text")
}

/// A capability URI string with another port.
fn with_port(cap: &ibp_proto::Capability, port: u16) -> String {
    let mut c = cap.clone();
    c.port = port;
    c.to_string()
}

#[test]
fn copy_between_two_depots() {
    let src = DepotBuilder::new().spawn();
    let dst = DepotBuilder::new().spawn();
    // Larger than the depot's single-write LOAD limit (64 KiB), so the
    // sendfile path of COPY is used.
    let n = 200_000u64;
    let data = pattern(11, 0, n as usize);
    let mut s = src.connect();
    let a = s.allocate(2, 3600, n);
    s.store(&a.write, &data);

    let mut t = dst.connect();
    let whole = t.allocate(2, 3600, n);
    let part = t.allocate(2, 3600, 10_000);
    let tail = t.allocate(2, 3600, 1000);

    // Whole range: "1 <n>\n", and the target holds the same bytes.
    assert_eq!(
        s.request(&copy_line(&a.read, &whole.write.to_string(), 0, n)),
        format!("1 {n}\n")
    );
    let p = t.probe(&whole.manage);
    assert_eq!((p.size, p.max_size), (n, n));
    assert_eq!(t.load(&whole.read, 0, n), data);

    // A middle range.
    assert_eq!(
        s.request(&copy_line(&a.read, &part.write.to_string(), 1000, 5000)),
        "1 5000\n"
    );
    assert_eq!(t.load(&part.read, 0, 10_000), &data[1000..6000]);

    // A range past the end is clipped to the bytes that exist.
    assert_eq!(
        s.request(&copy_line(&a.read, &tail.write.to_string(), n - 10, 100)),
        "1 10\n"
    );
    assert_eq!(t.load(&tail.read, 0, 1000), &data[n as usize - 10..]);

    // COPY appends to what the target already holds.
    assert_eq!(
        s.request(&copy_line(&a.read, &tail.write.to_string(), 0, 5)),
        "1 5\n"
    );
    let mut expect = data[n as usize - 10..].to_vec();
    expect.extend_from_slice(&data[..5]);
    assert_eq!(t.load(&tail.read, 0, 1000), expect);

    // The source is untouched.
    assert_eq!(s.probe(&a.manage).size, n);
}

#[test]
fn copy_to_unreachable_target_is_connection_error() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);
    c.store(&a.write, b"some bytes");
    let b = c.allocate(2, 3600, 100);
    let target = with_port(&b.write, closed_port());
    expect_error(&d, &copy_line(&a.read, &target, 0, 10), " -13 \n");
    // Nothing reached the (real) target allocation.
    assert_eq!(d.connect().probe(&b.manage).size, 0);
}

#[test]
fn copy_with_bad_target_capability_is_refused() {
    let src = DepotBuilder::new().spawn();
    let dst = DepotBuilder::new().spawn();
    let mut s = src.connect();
    let a = s.allocate(2, 3600, 100);
    s.store(&a.write, b"0123456789");
    let b = dst.allocate(3600, 100);

    // The target's READ capability is not a WRITE capability: the target
    // depot answers -8 to the STORE and the source passes it on.
    expect_error(
        &src,
        &copy_line(&a.read, &b.read.to_string(), 0, 10),
        " -8 \n",
    );
    // A key the target does not know: -4 from the target.
    let mut unknown = b.write.clone();
    unknown.cap.key = format!("IBP-{}", "x".repeat(KEY_ALNUM));
    expect_error(
        &src,
        &copy_line(&a.read, &unknown.to_string(), 0, 10),
        " -4 \n",
    );
    // Not a capability URI at all: -11 (wrong capability format).
    expect_error(
        &src,
        &copy_line(&a.read, "ibp://127.0.0.1/no-port-no-key", 0, 10),
        " -11 \n",
    );
    expect_error(
        &src,
        &copy_line(&a.read, "http://example.org/x", 0, 10),
        " -11 \n",
    );
    // The source's WRITE capability is not a READ capability: -9.
    expect_error(
        &src,
        &format!(
            "0 5 {} {} {} 0 10 300 300 300 \n",
            a.write.cap.rid_key(),
            b.write,
            a.write.cap.typekey
        ),
        " -9 \n",
    );
    // The target received nothing.
    let p = dst.connect().probe(&b.manage);
    assert_eq!(p.size, 0);
}

#[test]
fn incr_then_decr_keeps_the_allocation() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);
    c.store(&a.write, b"kept");
    assert_eq!(c.request(&incr_line(&a.manage, 1)), "1 \n");
    assert_eq!(c.probe(&a.manage).read_refs, 2);
    assert_eq!(c.request(&incr_line(&a.manage, 2)), "1 \n");
    assert_eq!(c.probe(&a.manage).write_refs, 2);
    assert_eq!(c.request(&decr_line(&a.manage, 1)), "1 \n");
    let p = c.probe(&a.manage);
    assert_eq!((p.read_refs, p.write_refs, p.size), (1, 2, 4));
    assert_eq!(c.load(&a.read, 0, 4), b"kept");
    // The second DECR deletes it.
    assert_eq!(c.request(&decr_line(&a.manage, 1)), "1 \n");
    assert_eq!(c.request(&probe_line(&a.manage)), " -4 \n");
    c.expect_closed();
    expect_error(&d, &load_line(&a.read, 0, 4), " -4 \n");
}

#[test]
fn decr_of_write_count_blocks_stores() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);
    // As in IBP 1.4, only the MANAGE capability changes a count (-10 for
    // the WRITE capability, even on its own count) ...
    expect_error(&d, &decr_line(&a.write, 2), " -10 \n");
    assert_eq!(c.request(&decr_line(&a.manage, 2)), "1 \n");
    let p = c.probe(&a.manage);
    assert_eq!((p.read_refs, p.write_refs), (1, 0));
    // ... after which STORE and WRITE are refused with -8.
    expect_error(&d, &store_line(&a.write, 4), " -8 \n");
    expect_error(&d, &write_line(&a.write, 0, 4), " -8 \n");
    // A READ capability may not change the WRITE count, nor CHNG (-10).
    expect_error(&d, &incr_line(&a.read, 2), " -10 \n");
    expect_error(&d, &chng_line(&a.read, 200, 0, 0), " -10 \n");
    // The allocation still exists.
    assert_eq!(d.connect().probe(&a.read).read_refs, 1);
}

#[test]
fn write_at_offset_extends_and_is_bounded() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 1024);
    c.store(&a.write, b"0123456789abcdef");

    // WRITE past the end extends the size; the hole reads as zeros.
    assert_eq!(c.request(&write_line(&a.write, 100, 4)), "1 \n");
    c.send(b"WXYZ");
    assert_eq!(c.read_line(), "1 4\n");
    assert_eq!(c.probe(&a.manage).size, 104);
    let mut expect = b"0123456789abcdef".to_vec();
    expect.resize(100, 0);
    expect.extend_from_slice(b"WXYZ");
    assert_eq!(c.load(&a.read, 0, 1024), expect);

    // WRITE inside the data overwrites and keeps the size.
    assert_eq!(c.request(&write_line(&a.write, 2, 3)), "1 \n");
    c.send(b"---");
    assert_eq!(c.read_line(), "1 3\n");
    expect[2..5].copy_from_slice(b"---");
    assert_eq!(c.probe(&a.manage).size, 104);
    assert_eq!(c.load(&a.read, 0, 104), expect);

    // STORE appends after the highest byte.
    c.store(&a.write, b"tail");
    expect.extend_from_slice(b"tail");
    assert_eq!(c.load(&a.read, 0, 1024), expect);

    // Up to the maximum size exactly is fine ...
    assert_eq!(c.request(&write_line(&a.write, 1020, 4)), "1 \n");
    c.send(b"last");
    assert_eq!(c.read_line(), "1 4\n");
    assert_eq!(c.probe(&a.manage).size, 1024);
    // ... one byte beyond is -19, before any go-ahead, and the size stays.
    assert_eq!(c.request(&write_line(&a.write, 1021, 4)), " -19 \n");
    c.expect_closed();
    expect_error(&d, &store_line(&a.write, 1), " -19 \n");
    expect_error(&d, &write_line(&a.write, u64::MAX - 1, 4), " -19 \n");
    let mut c = d.connect();
    assert_eq!(c.probe(&a.manage).size, 1024);
    assert_eq!(&c.load(&a.read, 1020, 4), b"last");
}

#[test]
fn store_with_data_in_the_same_segment_and_pipelined_requests() {
    // A client that does not wait for the go-ahead: the depot must not read
    // the payload as part of the request line.
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 1024);
    let mut bytes = store_line(&a.write, 10).into_bytes();
    bytes.extend_from_slice(b"0 8 fake\n!");
    bytes.extend_from_slice(probe_line(&a.manage).as_bytes());
    bytes.extend_from_slice(load_line(&a.read, 0, 10).as_bytes());
    c.send(&bytes);
    assert_eq!(c.read_line(), "1 \n");
    assert_eq!(c.read_line(), "1 10\n");
    let p = Probe::parse(&c.read_line());
    assert_eq!(
        (
            p.read_refs,
            p.write_refs,
            p.size,
            p.max_size,
            p.reliability,
            p.storage
        ),
        (1, 1, 10, 1024, 2, 1)
    );
    assert!((3598..=3600).contains(&p.secs), "{p:?}");
    assert_eq!(c.read_line(), "1 10 \n");
    assert_eq!(c.read_exact(10), b"0 8 fake\n!");
}

#[test]
fn chng_limits() {
    let d = DepotBuilder::new().args(["--max-duration", "1h"]).spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 600, 1024);
    c.store(&a.write, &[7u8; 100]);

    // Shrinking below the stored size: -20.
    expect_error(&d, &chng_line(&a.manage, 50, 0, 0), " -20 \n");
    // A duration beyond the maximum: -28.
    expect_error(&d, &chng_line(&a.manage, 0, 3601, 0), " -28 \n");
    // Growing beyond the resource (1 GiB default): -19.
    expect_error(&d, &chng_line(&a.manage, 2 << 30, 0, 0), " -19 \n");
    // A bad reliability number.
    expect_error(&d, &chng_line(&a.manage, 0, 0, 7), " -34 \n");
    let p = d.connect().probe(&a.manage);
    assert_eq!((p.size, p.max_size, p.reliability), (100, 1024, 2));
    assert!((598..=600).contains(&p.secs), "{p:?}");

    // Allowed changes: shrink to exactly the size, -1 = the maximum
    // duration, SOFT.
    let mut c = d.connect();
    assert_eq!(c.request(&chng_line(&a.manage, 100, -1, 1)), "1 \n");
    let p = c.probe(&a.manage);
    assert_eq!((p.size, p.max_size, p.reliability), (100, 100, 1));
    assert!((3598..=3600).contains(&p.secs), "{p:?}");
    // Now full: one more byte is -19.
    expect_error(&d, &store_line(&a.write, 1), " -19 \n");
}

#[test]
fn allocate_errors_and_durations() {
    let d = DepotBuilder::new().args(["--max-duration", "2h"]).spawn();
    // Only BYTEARRAY (1) is served: BUFFER, FIFO, CIRQ are -22.
    for ty in 2..=4 {
        expect_error(&d, &format!("1 1 0 2 {ty} 3600 1024 300\n"), " -22 \n");
    }
    // An unknown type number is a bad value (-30); so is an unknown reliability.
    expect_error(&d, "1 1 0 2 9 3600 1024 300\n", " -30 \n");
    expect_error(&d, "1 1 0 3 1 3600 1024 300\n", " -30 \n");
    // Duration 0 (IBP's "permanent") and above the maximum: -28; below -1: -33.
    expect_error(&d, "1 1 0 2 1 0 1024 300\n", " -28 \n");
    expect_error(&d, "1 1 0 2 1 7201 1024 300\n", " -28 \n");
    expect_error(&d, "1 1 0 2 1 -2 1024 300\n", " -33 \n");
    // An unknown RID: -23 (ALLOCATE) and "-23 \n" (STATUS).
    expect_error(&d, "1 1 7 2 1 3600 1024 300\n", " -23 \n");
    expect_error(&d, "1 4 7 1 ibp 300\n", "-23 \n");
    // Larger than the whole resource (1 GiB by default): -19.
    expect_error(
        &d,
        &format!("1 1 0 2 1 3600 {} 300\n", (1u64 << 30) + 1),
        " -19 \n",
    );

    // Duration -1 gives the maximum.
    let mut c = d.connect();
    let a = c.allocate(2, -1, 1024);
    let p = c.probe(&a.manage);
    assert!(
        (7199..=7200).contains(&p.secs),
        "duration -1 must be the maximum 7200 s, got {p:?}"
    );
    // The maximum itself is fine, and a SOFT allocation reports reliability 1.
    let b = c.allocate(1, 7200, 10);
    let p = c.probe(&b.manage);
    assert_eq!((p.reliability, p.storage, p.max_size), (1, 1, 10));
    assert!((7199..=7200).contains(&p.secs), "{p:?}");
    // Nothing of the refused allocations was reserved.
    c.send(b"1 4 0 1 ibp 300\n");
    let body = read_body(&mut c);
    assert!(body.contains(" UT:1034 "), "{body}");
    assert!(body.contains(" UH:1024 "), "{body}");
}

#[test]
fn soft_allocations_are_reclaimed_for_hard_ones() {
    let d = DepotBuilder::new()
        .args(["--hard-size", "1MiB", "--soft-size", "2MiB"])
        .legacy_whole_resource()
        .spawn();
    let mut c = d.connect();
    // Two SOFT allocations fill the 2 MiB; the first expires sooner.
    let soon = c.allocate(1, 600, MIB);
    let later = c.allocate(1, 1200, MIB);
    c.store(&soon.write, b"soon");
    c.store(&later.write, b"later");
    // No room for another SOFT byte.
    assert_eq!(c.request("1 1 0 1 1 600 1 300\n"), " -19 \n");
    c.expect_closed();

    // A HARD 1 MiB allocation fits by reclaiming the soonest-expiring SOFT one.
    let mut c = d.connect();
    let hard = c.allocate(2, 3600, MIB);
    c.store(&hard.write, b"hard");
    assert_eq!(c.request(&probe_line(&soon.manage)), " -4 \n");
    c.expect_closed();
    expect_error(&d, &load_line(&soon.read, 0, 4), " -4 \n");
    let mut c = d.connect();
    let p = c.probe(&later.manage);
    assert_eq!((p.size, p.max_size, p.reliability), (5, MIB, 1));
    assert_eq!(c.load(&later.read, 0, 5), b"later");
    assert_eq!(c.load(&hard.read, 0, 4), b"hard");

    // HARD is full: another HARD allocation cannot fit (-19), and nothing
    // is reclaimed for it.
    expect_error(&d, "1 1 0 2 1 3600 1 300\n", " -19 \n");
    let mut c = d.connect();
    assert_eq!(c.probe(&later.manage).size, 5);
    c.send(b"1 4 0 1 ibp 300\n");
    let body = read_body(&mut c);
    assert!(
        body.contains(&format!(
            " CT:{} ST:{} UT:{} AT:0 CH:{MIB} SH:{MIB} UH:{MIB} AH:0 ",
            2 * MIB,
            2 * MIB,
            2 * MIB
        )),
        "{body}"
    );
    // Only the one reclaimed file is gone from the data directory.
    assert_eq!(list_dir(&d.data.join("data")).len(), 2);
}

#[test]
fn soft_reclaim_takes_only_what_is_needed() {
    let d = DepotBuilder::new()
        .args(["--hard-size", "2MiB", "--soft-size", "2MiB"])
        .legacy_whole_resource()
        .spawn();
    let mut c = d.connect();
    let q = MIB / 4;
    let s_late = c.allocate(1, 1200, q);
    let s_soon = c.allocate(1, 600, q);
    let s_mid = c.allocate(1, 900, q);
    let _h = c.allocate(2, 3600, MIB + q);
    // 2 MiB reserved. A HARD quarter MiB needs one quarter back: only the
    // soonest-expiring SOFT allocation is reclaimed.
    let _h2 = c.allocate(2, 3600, q);
    assert_eq!(c.request(&probe_line(&s_soon.manage)), " -4 \n");
    c.expect_closed();
    let mut c = d.connect();
    assert_eq!(c.probe(&s_mid.manage).max_size, q);
    assert_eq!(c.probe(&s_late.manage).max_size, q);
    // The next one takes the next soonest.
    let _h3 = c.allocate(2, 3600, q);
    assert_eq!(c.request(&probe_line(&s_mid.manage)), " -4 \n");
    c.expect_closed();
    assert_eq!(d.connect().probe(&s_late.manage).max_size, q);
    // The last one takes the last SOFT allocation; HARD is then full
    // (2 MiB) and one more byte is -19.
    let mut c = d.connect();
    let _h4 = c.allocate(2, 3600, q);
    assert_eq!(c.request(&probe_line(&s_late.manage)), " -4 \n");
    c.expect_closed();
    expect_error(&d, "1 1 0 2 1 60 1 300\n", " -19 \n");
    expect_error(&d, "1 1 0 1 1 60 1 300\n", " -19 \n");
}

#[test]
fn status_change_with_the_right_password() {
    let d = DepotBuilder::new()
        .args(["--status-password", "s3cret", "--max-duration", "1d"])
        .legacy_whole_resource()
        .spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 1000);
    // Right password: go-ahead, then "<hardMiB> <softMiB> <max_duration> \n",
    // then the INQ form with the new values.
    assert_eq!(c.request("1 4 0 2 s3cret 300\n"), "1 \n");
    c.send(b"2 4 7200 \n");
    let body = read_body(&mut c);
    assert_eq!(
        body,
        format!(
            "VS:1.4:0.4 DT:1:2:3 NFU:1 RID:0 RT:1 CT:{t} ST:{t} UT:1000 AT:{} CH:{h} SH:{h} UH:1000 AH:{} DR:7200 RE \n",
            4 * MIB - 1000,
            2 * MIB - 1000,
            t = 4 * MIB,
            h = 2 * MIB
        )
    );
    // The connection stays open and the new limits apply at once.
    let b = c.allocate(2, 7200, MIB);
    assert_eq!(c.probe(&b.manage).max_size, MIB);
    assert_eq!(c.probe(&a.manage).max_size, 1000);
    expect_error(&d, "1 1 0 2 1 7201 10 300\n", " -28 \n");
    expect_error(&d, &format!("1 1 0 2 1 60 {MIB} 300\n"), " -19 \n");
    // The v0 form works too; INQ shows the values.
    let mut c = d.connect();
    assert_eq!(c.request("0 4 2 s3cret 300\n"), "1 \n");
    c.send(b"3 5 600 \n");
    let body = read_body(&mut c);
    assert!(body.contains(&format!(" CH:{} ", 3 * MIB)), "{body}");
    assert!(body.ends_with(" DR:600 RE \n"), "{body}");
    c.send(b"1 4 0 1 ibp 300\n");
    assert_eq!(read_body(&mut c), body);

    // soft < hard is refused (-30, STATUS form) and changes nothing.
    let mut c = d.connect();
    assert_eq!(c.request("1 4 0 2 s3cret 300\n"), "1 \n");
    assert_eq!(c.request("8 4 600 \n"), "-30 \n");
    c.expect_closed();
    let mut c = d.connect();
    c.send(b"1 4 0 1 ibp 300\n");
    assert_eq!(read_body(&mut c), body);
    // Wrong password: -29, the values line is never read.
    expect_error(&d, "1 4 0 2 S3CRET 300\n", "-29 \n");
}

#[test]
fn status_resources_version_and_stats() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    assert_eq!(c.request("1 4 3 300\n"), "1 1 0 \n");
    c.send(b"1 4 5 300\n");
    let body = read_body(&mut c);
    assert!(body.starts_with("ibp-depot "), "{body:?}");
    assert!(body.ends_with("END\n"), "{body:?}");
    c.send(b"1 4 4 0 300\n");
    let body = read_body(&mut c);
    assert!(body.ends_with("END\n"), "{body:?}");
    assert!(
        body.contains("ibp_requests_total{command=\"STATUS\",status=\"ok\"} 2\n"),
        "{body}"
    );
    // The v0 INQ (default resource) answers the tagged form.
    c.send(b"0 4 1 ibp 300\n");
    let body = read_body(&mut c);
    assert!(
        body.starts_with("VS:1.4:0.4 DT:1:2:3 NFU:1 RID:0 "),
        "{body}"
    );
    // RES, VERSION and STATS have no v0 form.
    expect_error(&d, "0 4 3 300\n", "-21 \n");
}

#[test]
fn many_requests_on_one_connection() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let mut keys = std::collections::HashSet::new();
    let mut all = Vec::new();
    for i in 0..100u64 {
        let a = c.allocate(if i % 2 == 0 { 2 } else { 1 }, 3600, 1000 + i);
        let p = c.probe(&a.manage);
        assert_eq!((p.read_refs, p.write_refs, p.size), (1, 1, 0));
        assert_eq!(p.max_size, 1000 + i);
        assert_eq!(p.reliability, if i % 2 == 0 { 2 } else { 1 });
        assert!(keys.insert(a.read.cap.key.clone()), "duplicate key");
        all.push(a);
    }
    // 100 pipelined PROBEs in one write, 100 replies in order.
    let mut burst = String::new();
    for a in &all {
        burst.push_str(&probe_line(&a.read));
    }
    c.send(burst.as_bytes());
    for (i, _) in all.iter().enumerate() {
        let p = Probe::parse(&c.read_line());
        assert_eq!(p.max_size, 1000 + i as u64);
    }
    c.send(b"1 4 0 1 ibp 300\n");
    let body = read_body(&mut c);
    let total: u64 = (0..100).map(|i| 1000 + i).sum();
    assert!(body.contains(&format!(" UT:{total} ")), "{body}");
}

/// CHNG must not leave an allocation holding more than its maximum size:
/// a STORE that is in flight (go-ahead sent, data arriving) while CHNG
/// shrinks the maximum below its end must not both succeed.
#[test]
fn chng_cannot_shrink_below_an_in_flight_store() {
    let d = DepotBuilder::new().spawn();
    let mut a_conn = d.connect();
    let a = a_conn.allocate(2, 3600, 1024);
    let data = pattern(5, 0, 1000);
    assert_eq!(a_conn.request(&store_line(&a.write, 1000)), "1 \n");
    a_conn.send(&data[..500]);
    // Let the depot take in the first half.
    std::thread::sleep(std::time::Duration::from_millis(200));

    // CHNG is sent while the STORE is in flight; its reply is read only
    // after the STORE finished (a depot may make CHNG wait for the STORE).
    let mut b_conn = d.connect();
    b_conn.send(chng_line(&a.manage, 100, 0, 0).as_bytes());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let store = match a_conn.try_send(&data[500..]) {
        Ok(()) => a_conn
            .try_read_line()
            .expect("read STORE reply")
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let chng = b_conn.read_line();
    let p = d.connect().probe(&a.manage);
    assert!(
        !(chng == "1 \n" && store == "1 1000\n"),
        "CHNG to 100 bytes ({chng:?}) and a 1000-byte STORE ({store:?}) both succeeded: {p:?}"
    );
    assert!(
        p.size <= p.max_size,
        "allocation holds more than its maximum: {p:?}"
    );
}

#[test]
fn several_resources_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("depot.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[resource]]\nrid = 0\ndata = {:?}\nhard_size = \"1MiB\"\n\n[[resource]]\nrid = 7\ndata = {:?}\nhard_size = 4096\nmax_duration = \"1h\"\n",
            dir.path().join("r0").to_str().unwrap(),
            dir.path().join("r7").to_str().unwrap()
        ),
    )
    .unwrap();
    let d = DepotBuilder::new()
        .no_data()
        .arg("--config")
        .arg(&cfg)
        .legacy_whole_resource()
        .spawn();
    let mut c = d.connect();
    assert_eq!(c.request("1 4 3 300\n"), "1 2 0 7 \n");

    // ALLOCATE on RID 7: capabilities carry "/7#".
    let reply = c.request("1 1 7 2 1 3600 4096 300\n");
    let a = parse_allocate_reply(&reply, "127.0.0.1", d.port(), 7);
    c.store(&a.write, b"in resource seven");
    assert_eq!(c.load(&a.read, 0, 100), b"in resource seven");
    assert_eq!(c.probe(&a.manage).max_size, 4096);
    // RID 7's own limits: 4096 bytes, 1 h.
    expect_error(&d, "1 1 7 2 1 3600 4097 300\n", " -19 \n");
    expect_error(&d, "1 1 7 2 1 3601 1 300\n", " -28 \n");
    // The v0 form uses the first resource (RID 0), with its own limits.
    let mut c = d.connect();
    let b = parse_allocate_reply(
        &c.request("0 1 2 1 7200 8192 300\n"),
        "127.0.0.1",
        d.port(),
        0,
    );
    c.store(&b.write, b"in resource zero");
    // Files live in each resource's own directory.
    assert_eq!(list_dir(&dir.path().join("r7").join("data")).len(), 1);
    assert_eq!(list_dir(&dir.path().join("r0").join("data")).len(), 1);
    // A key presented with the other RID is not found.
    let mut wrong = a.read.clone();
    wrong.cap.rid = ibp_proto::Rid(0);
    expect_error(&d, &load_line(&wrong, 0, 10), " -4 \n");
    // STATUS per resource.
    let mut c = d.connect();
    c.send(b"1 4 7 1 ibp 300\n");
    let body = read_body(&mut c);
    assert_eq!(
        body,
        "VS:1.4:0.4 DT:1:2:3 NFU:1 RID:7 RT:1 CT:4096 ST:4096 UT:4096 AT:0 CH:4096 SH:4096 UH:4096 AH:0 DR:3600 RE \n"
    );
    c.send(b"1 4 0 1 ibp 300\n");
    let body = read_body(&mut c);
    assert!(
        body.contains(" RID:0 ") && body.contains(" UT:8192 "),
        "{body}"
    );
}

// ---- Issue 14: a reader cannot destroy data (the legacy port). As in the
// ---- IBP 1.4 depot's ibp_manage.c, INCR/DECR/CHNG need the MANAGE key.

/// A holder of the READ capability sends DECR (cap type 1) until the
/// allocation would be gone: every attempt is refused with " -10 \n"
/// (IBP_E_INVALID_MANAGE_CAP) and closes the connection; the data still
/// loads and the read count is untouched.
#[test]
fn reader_cannot_decr_away_an_allocation() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);
    c.store(&a.write, b"precious");
    for _ in 0..3 {
        expect_error(&d, &decr_line(&a.read, 1), " -10 \n");
        expect_error(&d, &decr_line(&a.read, 2), " -10 \n");
    }
    let mut c = d.connect();
    assert_eq!(c.load(&a.read, 0, 8), b"precious");
    let p = c.probe(&a.read);
    assert_eq!((p.read_refs, p.write_refs, p.size), (1, 1, 8));
}

/// INCR on the READ capability would pin the allocation past its owner's
/// release: refused; the owner's single DECR with the MANAGE capability
/// deletes it. CHNG on the READ capability is refused too.
#[test]
fn reader_cannot_pin_an_allocation() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);
    expect_error(&d, &incr_line(&a.read, 1), " -10 \n");
    expect_error(&d, &chng_line(&a.read, 0, 7200, 0), " -10 \n");
    assert_eq!(c.probe(&a.manage).read_refs, 1);
    assert_eq!(c.request(&decr_line(&a.manage, 1)), "1 \n");
    assert_eq!(c.request(&probe_line(&a.manage)), " -4 \n");
}

/// LoRS's `lors_trim -d` sends `0 9 <rid>#<key> <typekey> 42 1 <timeout>`
/// with the MANAGE capability and cap type 1: it still deletes, and a
/// PROBE with the READ capability (allowed to any capability) shows it gone.
#[test]
fn lors_trim_decr_with_the_manage_cap_still_deletes() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);
    c.store(&a.write, b"trim me");
    assert_eq!(Probe::parse(&c.request(&probe_line(&a.read))).size, 7);
    let trim = format!("0 9 {} 42 1 20\n", cr(&a.manage));
    assert_eq!(c.request(&trim), "1 \n");
    assert_eq!(c.request(&probe_line(&a.read)), " -4 \n");
    c.expect_closed();
    expect_error(&d, &load_line(&a.read, 0, 7), " -4 \n");
}

/// The files in the resource's spare directory: (inode, length) each.
fn spares(d: &DepotProc) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dir = d.data.join("spare");
    let mut out: Vec<(u64, u64)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().metadata().unwrap())
        .map(|m| (m.ino(), m.len()))
        .collect();
    out.sort_unstable();
    out
}

/// `--spare-bytes 0` (`resource.spare_bytes = 0`): a freed allocation's
/// file is deleted, as before spare files; a budget smaller than the file
/// keeps it cut to the budget.
#[test]
fn spare_bytes_zero_keeps_no_spare_file() {
    for (budget, kept_len) in [("0", None), ("64KiB", Some(64 * 1024))] {
        let d = DepotBuilder::new()
            .legacy_whole_resource()
            .args(["--spare-bytes", budget])
            .spawn();
        let mut c = d.connect();
        let a = c.allocate(2, 3600, 200_000);
        c.store(&a.write, &[b'S'; 100_000]);
        assert_eq!(c.request(&decr_line(&a.manage, 1)), "1 \n");
        let kept: Vec<u64> = spares(&d).into_iter().map(|(_, len)| len).collect();
        assert_eq!(kept, Vec::from_iter(kept_len), "--spare-bytes {budget}");
        let files = std::fs::read_dir(d.data.join("data")).unwrap().count();
        assert_eq!(files, 0, "the freed file left data/");
    }
}

/// A deleted allocation's file is kept as a spare (with its bytes, to be
/// overwritten in place), then becomes the file of a new allocation: none
/// of the old bytes is ever readable there (not past its end, not in a gap
/// a WRITE leaves). A file open in a transfer when its allocation goes is
/// not kept: the transfer ends on the old bytes, and nobody else gets
/// that file.
#[test]
fn freed_files_become_spares_and_never_show_old_bytes() {
    use std::os::unix::fs::MetadataExt;
    // A small budget: spares keep bytes only while the disk keeps the
    // budget free, and the default (a quarter of 1 GiB) would make the
    // test depend on TMPDIR's free space.
    let d = DepotBuilder::new()
        .legacy_whole_resource()
        .args(["--spare-bytes", "1MiB"])
        .spawn();
    let mut c = d.connect();
    assert!(spares(&d).is_empty(), "no spares at start");
    let secret = vec![b'S'; 100_000];
    let a = c.allocate(2, 3600, 200_000);
    c.store(&a.write, &secret);
    assert_eq!(c.request(&decr_line(&a.manage, 1)), "1 \n");
    let kept = spares(&d);
    assert_eq!(kept.len(), 1, "the freed file is kept");
    assert_eq!(kept[0].1, secret.len() as u64, "with its bytes");

    // The next allocation's first STORE gets that very file.
    let b = c.allocate(2, 3600, 200_000);
    c.store(&b.write, b"new");
    assert!(spares(&d).is_empty(), "the spare was used");
    let ino = |d: &DepotProc| -> Vec<u64> {
        std::fs::read_dir(d.data.join("data"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    };
    assert_eq!(ino(&d), vec![kept[0].0], "same inode");
    let lens: Vec<u64> = std::fs::read_dir(d.data.join("data"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(lens, vec![3], "the file is cut to its data after the STORE");
    assert_eq!(c.load(&b.read, 0, 200_000), b"new");
    assert_eq!(c.load(&b.read, 3, 200_000), b"", "nothing past its end");
    assert_eq!(c.probe(&b.manage).size, 3);
    // A WRITE past the end leaves a gap: zeros, not the old bytes.
    assert_eq!(c.request(&write_line(&b.write, 50_000, 2)), "1 \n");
    c.send(b"ww");
    assert_eq!(c.read_line(), "1 2\n");
    let all = c.load(&b.read, 0, 200_000);
    assert_eq!(all.len(), 50_002);
    assert_eq!(&all[..3], b"new");
    assert!(
        all[3..50_000].iter().all(|&x| x == 0),
        "the gap reads as zeros"
    );
    assert_eq!(&all[50_000..], b"ww");

    // A LOAD in flight (its reader not reading) when the allocation goes:
    // the file is not made a spare, and the LOAD sends the old bytes.
    // Larger than loopback's socket buffers, so the LOAD cannot be over.
    let big = vec![b'L'; 32 << 20];
    let l = c.allocate(2, 3600, big.len() as u64);
    c.store(&l.write, &big);
    let mut reader = d.connect();
    reader.send(load_line(&l.read, 0, big.len() as u64).as_bytes());
    assert_eq!(reader.read_line(), format!("1 {} \n", big.len()));
    assert_eq!(c.request(&decr_line(&l.manage, 1)), "1 \n");
    assert!(
        spares(&d).is_empty(),
        "a file open in a transfer is not kept"
    );
    assert_eq!(
        reader.read_exact(big.len()),
        big,
        "the LOAD ends on its bytes"
    );
    // Removed with nobody on it, b's file is kept again.
    assert_eq!(c.request(&decr_line(&b.manage, 1)), "1 \n");
    assert_eq!(spares(&d).len(), 1);
}
