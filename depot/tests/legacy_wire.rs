//! Replays the literal IBP 1.4 transcripts of
//! `/work/shared/reference/ibp-legacy-wire.txt` (sections 1, 2 and 3)
//! against the real depot binary and checks every reply byte for byte
//! (with our own capabilities, ports and lifetimes in place of the original ones).

mod common;

use common::*;

/// Default capacity of `--data` without `--hard-size`: 1 GiB.
const GIB: u64 = 1 << 30;

/// The STATUS INQ body our depot must send for RID 0 with a 1 GiB resource,
/// `used` bytes reserved (all HARD) and a 1 day maximum duration.
fn status_body(used: u64) -> String {
    format!(
        "VS:1.4:0.4 DT:1:2:3 NFU:1 RID:0 RT:1 CT:{GIB} ST:{GIB} UT:{used} AT:{} CH:{GIB} SH:{GIB} UH:{used} AH:{} DR:86400 RE \n",
        GIB - used,
        GIB - used
    )
}

/// Reads a `1 <len> \n` + body reply and checks that len is exact.
fn read_status(c: &mut Conn) -> String {
    let header = c.read_line();
    let len: usize = header
        .strip_prefix("1 ")
        .and_then(|s| s.strip_suffix(" \n"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("STATUS header {header:?}"));
    let body = String::from_utf8(c.read_exact(len)).unwrap();
    assert_eq!(body.len(), len);
    body
}

fn assert_secs(p: &Probe, lo: i64, hi: i64) {
    assert!(
        (lo..=hi).contains(&p.secs),
        "PROBE seconds left {} not in {lo}..={hi}",
        p.secs
    );
}

/// Section 1: ALLOCATE / STORE / LOAD / PROBE / STATUS / ALLOCATE@2 / COPY /
/// WRITE / DECR, on one persistent connection per depot, exactly as libibp
/// sends them. Depot 2 uses `localhost` as its capability host, as in the
/// transcript, so COPY has to resolve it.
#[test]
fn section1_full_session_exact_bytes() {
    let d1 = DepotBuilder::new().spawn();
    let d2 = DepotBuilder::new().hostname("localhost").spawn();
    let mut fd3 = d1.connect();
    let mut fd4 = d2.connect();

    // ALLOCATE (v1): "1 <READ> <WRITE> <MANAGE> \n".
    let reply = fd3.request("1 1 0 2 1 3600 1024 300\n");
    let a = parse_allocate_reply(&reply, "127.0.0.1", d1.port(), 0);
    // The transcript's reply is 406 bytes with a 4-digit port and typekeys
    // of 9 + 9 + 10 digits; only those digits may differ.
    let port_digits = d1.port().to_string().len();
    assert_eq!(
        reply.len(),
        406 + 3 * port_digits - 3 * 4 + typekey_digits(&a) - 28
    );

    // STORE: go-ahead "1 \n", then the 16 bytes, then "1 16\n".
    let store = format!("0 2 {} 16 300 \n", cr(&a.write));
    assert_eq!(fd3.request(&store), "1 \n");
    fd3.send(b"hello-IBP-wire!\n");
    assert_eq!(fd3.read_line(), "1 16\n");

    // LOAD: "1 16 \n" + the data (22 bytes in all).
    let load = format!("0 8 {} 0 16 300 \n", cr(&a.read));
    assert_eq!(fd3.request(&load), "1 16 \n");
    assert_eq!(fd3.read_exact(16), b"hello-IBP-wire!\n");

    // MANAGE PROBE: "1 1 1 16 1024 <secs> 2 1 \n".
    let probe = format!("0 9 {} 40 1 0 0 0 300\n", cr(&a.manage));
    let reply = fd3.request(&probe);
    let p = Probe::parse(&reply);
    assert_secs(&p, 3598, 3600);
    assert_eq!(reply, format!("1 1 1 16 1024 {} 2 1 \n", p.secs));

    // STATUS INQ: "1 <len> \n" + the tagged body.
    fd3.send(b"1 4 0 1 ibp 300\n");
    let body = read_status(&mut fd3);
    assert!(body.starts_with("VS:1.4:0.4 DT:1:2:3 NFU:1 RID:0 RT:1 CT:"));
    assert!(body.ends_with(" DR:86400 RE \n"), "{body:?}");
    assert_eq!(body, status_body(1024));

    // ALLOCATE on depot 2, whose capabilities name "localhost".
    let reply = fd4.request("1 1 0 2 1 3600 1024 300\n");
    let b = parse_allocate_reply(&reply, "localhost", d2.port(), 0);

    // COPY (cmd 5) from depot 1 to depot 2's WRITE capability: "1 16\n".
    let copy = format!(
        "0 5 {} {} {} 0 16 300 300 300 \n",
        a.read.cap.rid_key(),
        b.write,
        a.read.cap.typekey
    );
    assert!(copy.contains(&format!("ibp://localhost:{}/0#IBP-", d2.port())));
    assert_eq!(fd3.request(&copy), "1 16\n");

    // WRITE (cmd 13) at offset 4: "1 \n", "WXYZ", "1 4\n".
    let write = format!("0 13 {} 4 4 300 \n", cr(&a.write));
    assert_eq!(fd3.request(&write), "1 \n");
    fd3.send(b"WXYZ");
    assert_eq!(fd3.read_line(), "1 4\n");

    // Not in the transcript: check what the two depots now hold.
    assert_eq!(fd3.load(&a.read, 0, 100), b"hellWXYZP-wire!\n");
    assert_eq!(fd4.load(&b.read, 0, 100), b"hello-IBP-wire!\n");
    assert_eq!(fd4.probe(&b.manage).size, 16);

    // MANAGE DECR on both (refcount 1 -> 0 deletes): "1 \n".
    let decr = format!("0 9 {} 42 1 300\n", cr(&a.manage));
    assert_eq!(fd3.request(&decr), "1 \n");
    let decr = format!("0 9 {} 42 1 300\n", cr(&b.manage));
    assert_eq!(fd4.request(&decr), "1 \n");

    // Both allocations are gone.
    expect_error(&d1, &probe, " -4 \n");
    expect_error(&d2, &probe_line(&b.manage), " -4 \n");
}

/// Total decimal digits of the three typekeys.
fn typekey_digits(c: &Caps) -> usize {
    let digits = |tk: u32| tk.to_string().len();
    digits(c.read.cap.typekey) + digits(c.write.cap.typekey) + digits(c.manage.cap.typekey)
}

/// Section 2: the error responses E1..E6, each with the exact bytes, and
/// the connection closed after every error reply (but not after the short
/// LOAD of E3).
#[test]
fn section2_error_responses_exact_bytes() {
    let d = DepotBuilder::new().spawn();

    // E1: duration above MAXDURATION -> " -28 \n", then the depot closes the
    // connection: the next v1 ALLOCATE on it gets EOF.
    let mut c = d.connect();
    assert_eq!(c.request("1 1 0 2 1 172800 1024 300\n"), " -28 \n");
    let _ = c.try_send(b"1 1 0 2 1 3600 1024 300\n");
    c.expect_closed();

    // libibp reconnects and retries in the v0 form, which works.
    let mut c = d.connect();
    let reply = c.request("0 1 2 1 3600 1024 300\n");
    let a = parse_allocate_reply(&reply, "127.0.0.1", d.port(), 0);
    assert_eq!(
        c.request(&format!("0 2 {} 16 300 \n", cr(&a.write))),
        "1 \n"
    );
    c.send(b"0123456789abcdef");
    assert_eq!(c.read_line(), "1 16\n");

    // E2: LOAD with a wrong READ typekey -> " -9 \n", closed.
    let mut wrong = a.read.cap.typekey.wrapping_add(1);
    while wrong == a.write.cap.typekey || wrong == a.manage.cap.typekey || wrong == 0 {
        wrong = wrong.wrapping_add(1);
    }
    let e2 = format!("0 8 {} {wrong} 0 16 300 \n", a.read.cap.rid_key());
    assert_eq!(c.request(&e2), " -9 \n");
    c.expect_closed();

    // E3: LOAD past the end -> short read "1 8 \n89abcdef", connection stays open.
    let mut c = d.connect();
    let e3 = format!("0 8 {} 8 100 3 \n", cr(&a.read));
    assert_eq!(c.request(&e3), "1 8 \n");
    assert_eq!(c.read_exact(8), b"89abcdef");
    let p = c.probe(&a.manage);
    assert_eq!((p.size, p.max_size), (16, 1024));

    // E4: STORE 2000 bytes into 1024 -> " -19 \n", closed, size unchanged.
    let e4 = format!("0 2 {} 2000 300 \n", cr(&a.write));
    assert_eq!(c.request(&e4), " -19 \n");
    c.expect_closed();
    assert_eq!(d.connect().probe(&a.manage).size, 16);

    // E5: STATUS CHANGE with a wrong password -> "-29 \n" (no leading
    // space), in the v1 and the v0 form.
    expect_error(&d, "1 4 0 2 wrongpw 300\n", "-29 \n");
    expect_error(&d, "0 4 2 wrongpw 300\n", "-29 \n");

    // E6: DECR deletes (refcount 1 -> 0), then PROBE -> " -4 \n".
    let mut c = d.connect();
    let decr = format!("0 9 {} 42 1 300\n", cr(&a.manage));
    assert_eq!(c.request(&decr), "1 \n");
    let probe = format!("0 9 {} 40 1 0 0 0 300\n", cr(&a.manage));
    assert_eq!(c.request(&probe), " -4 \n");
    c.expect_closed();
    // And the data is gone too.
    expect_error(&d, &load_line(&a.read, 0, 16), " -4 \n");
}

/// Section 3: the request shapes of the LoRS 0.82 tools (upload with server
/// timeout 0, COPY for the second replica, download, ls, refresh, trim -d).
#[test]
fn section3_lors_shapes() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();

    // lors_upload: STATUS with timeout 0, ALLOCATE with timeout 0.
    c.send(b"1 4 0 1 ibp 0\n");
    assert_eq!(read_status(&mut c), status_body(0));
    let reply = c.request("1 1 0 2 1 86400 32768 0\n");
    let a = parse_allocate_reply(&reply, "127.0.0.1", d.port(), 0);
    let data = pattern(3, 0, 32768);
    assert_eq!(
        c.request(&format!("0 2 {} 32768 17 \n", cr(&a.write))),
        "1 \n"
    );
    c.send(&data);
    assert_eq!(c.read_line(), "1 32768\n");

    // Second replica: COPY "<src> <WRITEcap> <typekey> 0 32768 16 16 17".
    let mut c2 = d.connect();
    let b = parse_allocate_reply(
        &c2.request("1 1 0 2 1 86400 32768 0\n"),
        "127.0.0.1",
        d.port(),
        0,
    );
    let copy = format!(
        "0 5 {} {} {} 0 32768 16 16 17 \n",
        a.read.cap.rid_key(),
        b.write,
        a.read.cap.typekey
    );
    assert_eq!(c2.request(&copy), "1 32768\n");

    // lors_download: LOAD with timeout 301 -> "1 32768 \n" + data.
    assert_eq!(
        c.request(&format!("0 8 {} 0 32768 301 \n", cr(&a.read))),
        "1 32768 \n"
    );
    assert_eq!(c.read_exact(32768), data);
    assert_eq!(c2.load(&b.read, 0, 32768), data);

    // lors_ls: PROBE "40 0 0 0 0 0" -> "1 1 1 32768 32768 86400 2 1 \n".
    let ls = format!("0 9 {} 40 0 0 0 0 0\n", cr(&a.manage));
    let reply = c.request(&ls);
    let p = Probe::parse(&reply);
    assert_secs(&p, 86398, 86400);
    assert_eq!(reply, format!("1 1 1 32768 32768 {} 2 1 \n", p.secs));

    // lors_refresh -s 3h: PROBE, CHNG "43 0 32768 10800 2 20", PROBE with
    // attributes "40 0 32768 0 2 0" shows 10800 s left.
    let _ = Probe::parse(&c.request(&ls));
    let chng = format!("0 9 {} 43 0 32768 10800 2 20\n", cr(&a.manage));
    assert_eq!(c.request(&chng), "1 \n");
    let probe2 = format!("0 9 {} 40 0 32768 0 2 0\n", cr(&a.manage));
    let reply = c.request(&probe2);
    let p = Probe::parse(&reply);
    assert_secs(&p, 10798, 10800);
    assert_eq!(reply, format!("1 1 1 32768 32768 {} 2 1 \n", p.secs));

    // lors_trim -d: DECR "42 1 20" (cap type 1: the READ count) with the
    // MANAGE capability deletes it; the next PROBE answers " -4 \n". As in
    // IBP 1.4, the READ capability itself may not DECR (-10).
    let mut reader = d.connect();
    assert_eq!(
        reader.request(&format!("0 9 {} 42 1 20\n", cr(&a.read))),
        " -10 \n"
    );
    reader.expect_closed();
    let trim = format!("0 9 {} 42 1 20\n", cr(&a.manage));
    assert_eq!(c.request(&trim), "1 \n");
    assert_eq!(c.request(&ls), " -4 \n");
    c.expect_closed();

    // The replica made by COPY is independent of the trimmed allocation.
    let mut c3 = d.connect();
    assert_eq!(c3.load(&b.read, 0, 32768), data);
    c3.send(b"1 4 0 1 ibp 0\n");
    assert_eq!(read_status(&mut c3), status_body(32768));
}
