//! Replays the literal wire transcript of the original IBP 1.4 depot and LoRS
//! 0.82 tools (`tests/data/ibp-legacy-wire.txt`, a byte-identical copy of the
//! reference capture) through the parser and formatter.
//!
//! Every `C>S (N bytes): ...` line is either a request line, which must parse
//! and re-encode to exactly the same bytes, or one of the known payloads that
//! follow a STORE/WRITE go-ahead. Every `S>C (N bytes): ...` line must parse
//! with the Expect its request implies and re-encode byte for byte.
//!
//! In the file, the two characters `\n` stand for one LF byte; every other
//! byte is literal (trailing spaces included).

use std::collections::HashMap;

use ibp_proto::{
    parse_request, CapRef, Capability, Expect, ManageOp, Reply, Request, Rid, StatusInfo, StatusOp,
};

const TRANSCRIPT: &str = include_str!("data/ibp-legacy-wire.txt");

/// The `C>S` lines that are data, not requests (as decoded: `\n` -> LF).
/// Each must appear exactly once, right after a STORE/WRITE go-ahead.
const PAYLOADS: [&str; 4] = [
    "hello-IBP-wire!\n",
    "WXYZ",
    "0123456789abcdef",
    // Section 3: the depot received 32768 bytes that the capture elides.
    "<binary payload>",
];

/// Section 3 masks keys and capabilities; these stand in for them. The key is
/// 94 characters like the real ones in sections 1 and 2: "IBP-" + 90
/// alphanumerics (the file's summary says "+ 94", but its byte counts and keys
/// say 90).
const MASKED_KEY: &str =
    "IBP-Zq3mXw8RkTn2bVc7LpYh4GdJs9FaUe6QoWi1NrKt5MyBxCv0HlAzPgDjSfEuIwOqRtYuIoPaSdFgHjKlZxCvBnQw3E";
const MASKED_TYPEKEY: u32 = 1234567890;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

struct Entry {
    /// 1-based line number in the fixture.
    line_no: usize,
    /// `fd3->127.0.0.1:6714` etc.: one TCP connection.
    conn: String,
    dir: Dir,
    /// The `(N bytes)` count.
    declared: usize,
    /// True for `(N bytes, M shown)`: the text is truncated.
    truncated: bool,
    /// The bytes after `): `, with `\n` decoded.
    text: String,
    /// True if the text had `<...>` placeholders that we filled in.
    masked: bool,
    /// How many masked typekeys we filled in (in `<typekey>` and `<...cap>`).
    masked_typekeys: usize,
    /// The indented line(s) after an S>C line: its payload, decoded.
    payload: Option<String>,
}

fn decode(s: &str) -> String {
    s.replace("\\n", "\n")
}

fn masked_cap(host_port: &str, kind: &str) -> String {
    format!("ibp://{host_port}/0#{MASKED_KEY}/{MASKED_TYPEKEY}/{kind}")
}

/// Fills in section 3's placeholders with concrete values; returns the text,
/// whether it was masked and how many typekeys were filled in.
fn unmask(text: &str, conn: &str) -> (String, bool, usize) {
    if !text.contains('<') || PAYLOADS.contains(&text) {
        return (text.to_owned(), false, 0);
    }
    let typekeys = ["<typekey>", "<READcap>", "<WRITEcap>", "<MANAGEcap>"]
        .iter()
        .map(|p| text.matches(p).count())
        .sum();
    // Depot 2 calls itself "localhost" in its capabilities.
    let host_port = if conn.ends_with(":6715") {
        "localhost:6715"
    } else {
        "127.0.0.1:6714"
    };
    let out = text
        .replace("IBP-<key>", MASKED_KEY)
        .replace("<typekey>", &MASKED_TYPEKEY.to_string())
        .replace("<READcap>", &masked_cap(host_port, "READ"))
        .replace("<WRITEcap>", &masked_cap(host_port, "WRITE"))
        .replace("<MANAGEcap>", &masked_cap(host_port, "MANAGE"));
    assert!(!out.contains('<'), "unknown placeholder in {text:?}");
    (out, true, typekeys)
}

fn entries() -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut last_was_s2c = false;
    for (i, line) in TRANSCRIPT.lines().enumerate() {
        let line_no = i + 1;
        let Some(rest) = line.strip_prefix('[') else {
            // An indented continuation right after an S>C line is its payload.
            if last_was_s2c && line.starts_with("    ") && !line.trim().is_empty() {
                let entry = out.last_mut().expect("an S>C entry precedes");
                assert!(entry.payload.is_none(), "line {line_no}: two payload lines");
                entry.payload = Some(decode(line.trim_start()));
                continue;
            }
            last_was_s2c = false;
            // Nothing else in the file may look like a transcript line.
            assert!(
                !line.contains("C>S (") && !line.contains("S>C ("),
                "line {line_no}: unrecognised transcript line {line:?}"
            );
            continue;
        };
        let (conn, rest) = rest.split_once("] ").expect("`[conn] ` prefix");
        let conn = conn.rsplit(' ').next().expect("non-empty").to_owned();
        let (dir, rest) = if let Some(r) = rest.strip_prefix("C>S (") {
            (Dir::ClientToServer, r)
        } else if let Some(r) = rest.strip_prefix("S>C (") {
            (Dir::ServerToClient, r)
        } else {
            panic!("line {line_no}: neither C>S nor S>C: {line:?}");
        };
        let (count, text) = rest.split_once("): ").expect("`(N bytes): `");
        let (declared, truncated) = match count.split_once(" bytes") {
            Some((n, "")) => (n, false),
            Some((n, shown)) => {
                assert!(shown.starts_with(", ") && shown.ends_with(" shown"));
                (n, true)
            }
            None => panic!("line {line_no}: bad byte count {count:?}"),
        };
        let (text, masked, masked_typekeys) = unmask(&decode(text), &conn);
        out.push(Entry {
            line_no,
            conn,
            dir,
            declared: declared.parse().expect("byte count"),
            truncated,
            text,
            masked,
            masked_typekeys,
            payload: None,
        });
        last_was_s2c = dir == Dir::ServerToClient;
    }
    out
}

/// What the next reply on a connection should be.
#[derive(Clone, Copy, Debug)]
struct Pending {
    expect: Expect,
    is_status: bool,
    /// STORE/WRITE: the data size, sent after a `1 \n` go-ahead.
    data_size: Option<u64>,
    /// LOAD: the requested size (the depot may answer with fewer bytes).
    load_size: Option<u64>,
}

#[derive(Default, Debug)]
struct Counts {
    requests: usize,
    requests_exact_real_keys: usize,
    requests_masked: usize,
    payloads: usize,
    replies: usize,
    replies_with_caps: usize,
    error_replies: usize,
    status_errors: usize,
    byte_counts_checked: usize,
    masked_byte_counts_checked: usize,
}

/// A masked line's real typekeys had 1..=10 digits where ours have 10, so its
/// `(N bytes)` must lie in `[len - 9 * typekeys, len]`. This also pins the
/// real key length (a wrong MASKED_KEY length would shift every count).
fn check_masked_count(at: &str, e: &Entry, len: usize, counts: &mut Counts) {
    assert!(e.masked);
    assert_eq!(MASKED_TYPEKEY.to_string().len(), 10);
    let lo = len - 9 * e.masked_typekeys;
    assert!(
        (lo..=len).contains(&e.declared),
        "{at}: masked line of {len} bytes with {} typekeys cannot have been {} bytes",
        e.masked_typekeys,
        e.declared
    );
    counts.masked_byte_counts_checked += 1;
}

fn expect_for(req: &Request) -> Pending {
    let (expect, data_size, load_size) = match req {
        Request::Allocate(_) => (Expect::Allocated, None, None),
        Request::Store(s) => (Expect::Ok, Some(s.size), None),
        Request::Write(w) => (Expect::Ok, Some(w.size), None),
        Request::Load(l) => (Expect::Payload, None, Some(l.size)),
        Request::Copy(_) => (Expect::Count, None, None),
        Request::Manage(m) => match m.op {
            ManageOp::Probe(_) => (Expect::Probe, None, None),
            ManageOp::Incr | ManageOp::Decr | ManageOp::Change(_) => (Expect::Ok, None, None),
        },
        Request::Status(s) => match s.op {
            StatusOp::Inquire { .. } | StatusOp::Change { .. } => (Expect::Payload, None, None),
            StatusOp::Resources => (Expect::Resources, None, None),
            StatusOp::Stats { .. } | StatusOp::Version => (Expect::Payload, None, None),
        },
    };
    Pending {
        expect,
        is_status: matches!(req, Request::Status(_)),
        data_size,
        load_size,
    }
}

fn replay() -> (Counts, Vec<(usize, Request)>) {
    let mut counts = Counts::default();
    let mut requests = Vec::new();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // conn -> size of the data the client must send next.
    let mut data_due: HashMap<String, u64> = HashMap::new();
    let mut payloads_seen: Vec<&str> = Vec::new();

    for e in entries() {
        let at = format!("line {} ({})", e.line_no, e.conn);
        match e.dir {
            Dir::ClientToServer => {
                if let Some(size) = data_due.remove(&e.conn) {
                    // Data after a go-ahead: must be one of the known payloads.
                    let p = PAYLOADS
                        .iter()
                        .find(|p| **p == e.text)
                        .unwrap_or_else(|| panic!("{at}: unexpected data {:?}", e.text));
                    assert!(!payloads_seen.contains(p), "{at}: payload seen twice");
                    payloads_seen.push(p);
                    assert_eq!(e.declared as u64, size, "{at}: data size != request size");
                    if !e.truncated && !p.starts_with('<') {
                        assert_eq!(e.text.len(), e.declared, "{at}: byte count");
                        counts.byte_counts_checked += 1;
                    }
                    // The depot answers the data with `1 <stored>\n`.
                    pending.insert(
                        e.conn.clone(),
                        Pending {
                            expect: Expect::Count,
                            is_status: false,
                            data_size: None,
                            load_size: None,
                        },
                    );
                    counts.payloads += 1;
                    continue;
                }
                assert!(
                    !PAYLOADS.contains(&e.text.as_str()),
                    "{at}: payload {:?} without a go-ahead",
                    e.text
                );
                assert!(!e.truncated, "{at}: a request line is never truncated");
                let req = parse_request(e.text.as_bytes())
                    .unwrap_or_else(|err| panic!("{at}: {:?} does not parse: {err}", e.text));
                assert_eq!(req.encode(), e.text, "{at}: encode differs from the wire");
                if e.masked {
                    check_masked_count(&at, &e, e.text.len(), &mut counts);
                    counts.requests_masked += 1;
                } else {
                    counts.requests_exact_real_keys += 1;
                    assert_eq!(e.text.len(), e.declared, "{at}: byte count");
                    counts.byte_counts_checked += 1;
                }
                pending.insert(e.conn.clone(), expect_for(&req));
                requests.push((e.line_no, req));
                counts.requests += 1;
            }
            Dir::ServerToClient => {
                let p = pending
                    .remove(&e.conn)
                    .unwrap_or_else(|| panic!("{at}: reply without a request"));
                // The reply line is the text up to and including the first LF.
                let end = e.text.find('\n').expect("reply line ends with LF") + 1;
                let (line, rest) = e.text.split_at(end);
                assert_eq!(rest, "", "{at}: bytes after the reply line");
                let reply = Reply::parse(line.as_bytes(), p.expect)
                    .unwrap_or_else(|err| panic!("{at}: {line:?} as {:?}: {err}", p.expect));
                assert_eq!(reply.encode(), line, "{at}: encode differs from the wire");
                counts.replies += 1;
                let mut expected_len = line.len() as u64;
                match &reply {
                    Reply::Error(_) => {
                        assert!(!p.is_status, "{at}: STATUS errors have no leading space");
                        counts.error_replies += 1;
                    }
                    Reply::StatusError(_) => {
                        assert!(p.is_status, "{at}: only STATUS errors lack the space");
                        counts.status_errors += 1;
                    }
                    Reply::Ok => {
                        if let Some(size) = p.data_size {
                            data_due.insert(e.conn.clone(), size);
                        }
                    }
                    Reply::Payload(n) => {
                        expected_len += n;
                        if let Some(asked) = p.load_size {
                            assert!(*n <= asked, "{at}: LOAD returned more than asked");
                        }
                        if let Some(payload) = &e.payload {
                            assert_eq!(payload.len() as u64, *n, "{at}: payload length");
                            if p.is_status {
                                let info = StatusInfo::parse(payload).expect("status body");
                                assert_eq!(info.encode(), *payload, "{at}: status body");
                                assert_eq!(info.rid, Rid(0));
                                assert_eq!(info.max_duration, 86400);
                            }
                        }
                    }
                    Reply::Allocated {
                        read,
                        write,
                        manage,
                    } => {
                        assert_eq!(read.cap.key, write.cap.key, "{at}: one key per allocation");
                        assert_eq!(read.cap.key, manage.cap.key, "{at}: one key per allocation");
                        if !e.masked {
                            assert_eq!(read.cap.key.len(), 94, "{at}: IBP 1.4 key length");
                        }
                        counts.replies_with_caps += 1;
                    }
                    Reply::Count(_) | Reply::Probe(_) | Reply::Resources(_) => {}
                }
                assert!(
                    e.payload.is_none() || matches!(reply, Reply::Payload(_)),
                    "{at}: only payload replies have a continuation line"
                );
                if e.masked {
                    check_masked_count(&at, &e, line.len(), &mut counts);
                } else {
                    assert_eq!(expected_len, e.declared as u64, "{at}: byte count");
                    counts.byte_counts_checked += 1;
                }
            }
        }
    }
    let mut all = PAYLOADS.to_vec();
    all.sort_unstable();
    payloads_seen.sort_unstable();
    assert_eq!(
        payloads_seen, all,
        "every known payload is used exactly once"
    );
    (counts, requests)
}

#[test]
fn transcript_replays_byte_for_byte() {
    let (c, _) = replay();
    // 37 C>S lines = 33 requests + 4 payloads; 9 requests are in masked form.
    assert_eq!(c.requests, 33, "{c:?}");
    assert_eq!(c.requests_exact_real_keys, 24, "{c:?}");
    assert_eq!(c.requests_masked, 9, "{c:?}");
    assert_eq!(c.payloads, 4, "{c:?}");
    // 34 S>C lines; 4 ALLOCATE replies carry capabilities (3 with real keys).
    assert_eq!(c.replies, 34, "{c:?}");
    assert_eq!(c.replies_with_caps, 4, "{c:?}");
    assert_eq!(c.error_replies, 5, "{c:?}");
    assert_eq!(c.status_errors, 2, "{c:?}");
    // `(N bytes)` matches what we decoded for 24 requests, 3 payloads (the
    // elided 32 KiB one is checked against its STORE size only) and 33 replies
    // (payload replies count their data; the masked ALLOCATE reply is not).
    assert_eq!(c.byte_counts_checked, 24 + 3 + 33, "{c:?}");
    // The 9 masked requests and the masked ALLOCATE reply fit their counts.
    assert_eq!(c.masked_byte_counts_checked, 10, "{c:?}");
}

#[test]
fn transcript_covers_every_command() {
    let (_, requests) = replay();
    let mut seen: Vec<&str> = requests.iter().map(|(_, r)| r.command().name()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        ["ALLOCATE", "COPY", "LOAD", "MANAGE", "STATUS", "STORE", "WRITE"]
    );
}

#[test]
fn copy_leg_is_a_v0_store_with_the_target_write_cap() {
    let (_, requests) = replay();
    let copy = requests
        .iter()
        .find_map(|(_, r)| match r {
            Request::Copy(c) if c.source.key != MASKED_KEY => Some(c),
            _ => None,
        })
        .expect("section 1 COPY");
    // Section 1b: depot 1 stores into depot 2 with the target WRITE cap.
    let store = requests
        .iter()
        .find_map(|(_, r)| match r {
            Request::Store(s) if s.cap == copy.target.cap => Some(s),
            _ => None,
        })
        .expect("section 1b STORE");
    assert_eq!(store.size, copy.size);
    assert_eq!(
        copy.target.to_string().parse::<Capability>().as_ref(),
        Ok(&copy.target)
    );
    assert_eq!(
        copy.target.cap,
        CapRef {
            rid: Rid(0),
            key: "IBP-7r5YKq0NWmrK5Inv4nI2cv003IGX8wCExSxpSGIAsGxUbnwH6eCW41XtVz6dMxg0FJiNw2a9rDMspkZMQmZJxoxxdu"
                .to_owned(),
            typekey: 1656623010,
        }
    );
}

#[test]
fn masked_key_looks_real() {
    assert_eq!(MASKED_KEY.len(), 94);
    assert!(MASKED_KEY[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
}

#[test]
fn fixture_is_plain_ascii_with_lf_lines() {
    assert!(TRANSCRIPT.is_ascii());
    assert!(!TRANSCRIPT.contains('\r'));
    assert!(TRANSCRIPT.ends_with('\n'));
    assert_eq!(TRANSCRIPT.matches("C>S (").count(), 37);
    assert_eq!(TRANSCRIPT.matches("S>C (").count(), 34);
}
