//! Round trips of every request and reply shape: `encode()` produces the exact
//! IBP 1.4 bytes, and parsing those bytes gives back the same value.

use ibp_proto::{
    parse_request, parse_status_change_values, Allocate, Attributes, CapKind, CapRef, Capability,
    Copy, Expect, IbpError, Load, Manage, ManageOp, ProbeInfo, Reliability, Reply, Request, Rid,
    Status, StatusInfo, StatusOp, StorageType, Store, Version, Write, MAX_LINE, MAX_PASSWORD_LEN,
};
use proptest::prelude::*;

/// A real IBP 1.4 key (from the reference transcript).
const KEY: &str =
    "IBP-7jYckkhw1hQRYUpNVVaqpoXOvmxYthrldllmgCPWgOoQAeA37pRIswkpEBaeb0jwhr2bhuO7Rc6TwZ2iTxMkoPnPp4";

fn cap(typekey: u32) -> CapRef {
    CapRef {
        rid: Rid(0),
        key: KEY.to_owned(),
        typekey,
    }
}

fn uri(host: &str, port: u16, typekey: u32, kind: CapKind) -> Capability {
    Capability {
        host: host.to_owned(),
        port,
        cap: cap(typekey),
        kind,
    }
}

/// `encode()` gives exactly `wire`, and `wire` parses back to `req`.
#[track_caller]
fn check_request(req: Request, wire: &str) {
    assert_eq!(req.encode(), wire, "encode of {req:?}");
    assert_eq!(
        parse_request(wire.as_bytes()),
        Ok(req.clone()),
        "parse of {wire:?}"
    );
    // The line is also accepted without its final newline.
    let bare = wire
        .strip_suffix('\n')
        .expect("request lines end with a newline");
    assert_eq!(parse_request(bare.as_bytes()), Ok(req));
}

/// `encode()` gives exactly `wire`, and `wire` parses back to `reply`.
#[track_caller]
fn check_reply(reply: Reply, expect: Expect, wire: &str) {
    assert_eq!(reply.encode(), wire, "encode of {reply:?}");
    assert_eq!(
        Reply::parse(wire.as_bytes(), expect),
        Ok(reply),
        "parse of {wire:?}"
    );
}

// ---------------------------------------------------------------- requests

#[test]
fn allocate_v1() {
    check_request(
        Request::Allocate(Allocate {
            version: Version::V1,
            rid: Some(Rid(0)),
            reliability: Reliability::Hard,
            storage: StorageType::ByteArray,
            duration: 3600,
            size: 1024,
            timeout: 300,
        }),
        "1 1 0 2 1 3600 1024 300\n",
    );
    check_request(
        Request::Allocate(Allocate {
            version: Version::V1,
            rid: Some(Rid(7)),
            reliability: Reliability::Soft,
            storage: StorageType::CircularQueue,
            duration: -1,
            size: 0,
            timeout: 0,
        }),
        "1 1 7 1 4 -1 0 0\n",
    );
}

#[test]
fn allocate_v0() {
    check_request(
        Request::Allocate(Allocate {
            version: Version::V0,
            rid: None,
            reliability: Reliability::Hard,
            storage: StorageType::ByteArray,
            duration: 3600,
            size: 1024,
            timeout: 300,
        }),
        "0 1 2 1 3600 1024 300\n",
    );
    check_request(
        Request::Allocate(Allocate {
            version: Version::V0,
            rid: None,
            reliability: Reliability::Soft,
            storage: StorageType::Fifo,
            duration: -1,
            size: u64::MAX,
            timeout: -5,
        }),
        "0 1 1 3 -1 18446744073709551615 -5\n",
    );
}

#[test]
fn allocate_storage_types() {
    for (storage, n) in [
        (StorageType::ByteArray, 1),
        (StorageType::Buffer, 2),
        (StorageType::Fifo, 3),
        (StorageType::CircularQueue, 4),
    ] {
        check_request(
            Request::Allocate(Allocate {
                version: Version::V1,
                rid: Some(Rid(0)),
                reliability: Reliability::Soft,
                storage,
                duration: 10,
                size: 20,
                timeout: 30,
            }),
            &format!("1 1 0 1 {n} 10 20 30\n"),
        );
    }
}

#[test]
fn store() {
    check_request(
        Request::Store(Store {
            cap: cap(377731970),
            size: 16,
            timeout: 300,
        }),
        &format!("0 2 0#{KEY} 377731970 16 300 \n"),
    );
}

#[test]
fn write() {
    check_request(
        Request::Write(Write {
            cap: cap(377731970),
            offset: 4,
            size: 4,
            timeout: 300,
        }),
        &format!("0 13 0#{KEY} 377731970 4 4 300 \n"),
    );
}

#[test]
fn load() {
    check_request(
        Request::Load(Load {
            cap: cap(492128891),
            offset: 0,
            size: 16,
            timeout: 300,
        }),
        &format!("0 8 0#{KEY} 492128891 0 16 300 \n"),
    );
}

#[test]
fn copy() {
    let target = Capability {
        host: "localhost".to_owned(),
        port: 6715,
        cap: CapRef {
            rid: Rid(3),
            key: "IBP-target".to_owned(),
            typekey: 1656623010,
        },
        kind: CapKind::Write,
    };
    check_request(
        Request::Copy(Copy {
            source: cap(492128891),
            target,
            offset: 0,
            size: 16,
            source_timeout: 300,
            target_timeout: 301,
            mover_timeout: 302,
        }),
        &format!(
            "0 5 0#{KEY} ibp://localhost:6715/3#IBP-target/1656623010/WRITE 492128891 0 16 300 301 302 \n"
        ),
    );
}

fn manage(op: ManageOp, cap_type: u8, timeout: i64) -> Request {
    Request::Manage(Manage {
        cap: cap(1702475233),
        op,
        cap_type,
        timeout,
    })
}

#[test]
fn manage_probe() {
    let zero = Attributes {
        max_size: 0,
        duration: 0,
        reliability: 0,
    };
    check_request(
        manage(ManageOp::Probe(zero), 1, 300),
        &format!("0 9 0#{KEY} 1702475233 40 1 0 0 0 300\n"),
    );
    // LoRS sends captype 0 and non-zero attributes on PROBE; they round-trip.
    check_request(
        manage(
            ManageOp::Probe(Attributes {
                max_size: 32768,
                duration: 0,
                reliability: 2,
            }),
            0,
            0,
        ),
        &format!("0 9 0#{KEY} 1702475233 40 0 32768 0 2 0\n"),
    );
}

#[test]
fn manage_incr() {
    check_request(
        manage(ManageOp::Incr, 1, 300),
        &format!("0 9 0#{KEY} 1702475233 41 1 300\n"),
    );
    check_request(
        manage(ManageOp::Incr, 2, 20),
        &format!("0 9 0#{KEY} 1702475233 41 2 20\n"),
    );
}

#[test]
fn manage_decr() {
    check_request(
        manage(ManageOp::Decr, 1, 300),
        &format!("0 9 0#{KEY} 1702475233 42 1 300\n"),
    );
    check_request(
        manage(ManageOp::Decr, 2, 20),
        &format!("0 9 0#{KEY} 1702475233 42 2 20\n"),
    );
}

#[test]
fn manage_change() {
    check_request(
        manage(
            ManageOp::Change(Attributes {
                max_size: 32768,
                duration: 10800,
                reliability: 2,
            }),
            0,
            20,
        ),
        &format!("0 9 0#{KEY} 1702475233 43 0 32768 10800 2 20\n"),
    );
    // 0 = unchanged, -1 duration = the maximum.
    check_request(
        manage(
            ManageOp::Change(Attributes {
                max_size: 0,
                duration: -1,
                reliability: 0,
            }),
            0,
            20,
        ),
        &format!("0 9 0#{KEY} 1702475233 43 0 0 -1 0 20\n"),
    );
}

fn status(version: Version, op: StatusOp, timeout: i64) -> Request {
    Request::Status(Status {
        version,
        op,
        timeout,
    })
}

#[test]
fn status_inquire_v1() {
    check_request(
        status(
            Version::V1,
            StatusOp::Inquire {
                rid: Some(Rid(0)),
                password: "ibp".to_owned(),
            },
            300,
        ),
        "1 4 0 1 ibp 300\n",
    );
    check_request(
        status(
            Version::V1,
            StatusOp::Inquire {
                rid: Some(Rid(12)),
                password: "ibp".to_owned(),
            },
            0,
        ),
        "1 4 12 1 ibp 0\n",
    );
}

#[test]
fn status_inquire_v0() {
    check_request(
        status(
            Version::V0,
            StatusOp::Inquire {
                rid: None,
                password: "ibp".to_owned(),
            },
            300,
        ),
        "0 4 1 ibp 300\n",
    );
}

#[test]
fn status_change() {
    check_request(
        status(
            Version::V1,
            StatusOp::Change {
                rid: Some(Rid(0)),
                password: "wrongpw".to_owned(),
            },
            300,
        ),
        "1 4 0 2 wrongpw 300\n",
    );
    check_request(
        status(
            Version::V0,
            StatusOp::Change {
                rid: None,
                password: "wrongpw".to_owned(),
            },
            300,
        ),
        "0 4 2 wrongpw 300\n",
    );
}

#[test]
fn status_change_second_line() {
    assert_eq!(
        parse_status_change_values(b"1073741824 2147483648 86400 \n"),
        Ok((1073741824, 2147483648, 86400))
    );
    assert_eq!(parse_status_change_values(b"0 0 -1\n"), Ok((0, 0, -1)));
    assert!(parse_status_change_values(b"1 2\n").is_err());
    assert!(parse_status_change_values(b"-1 2 3\n").is_err());
}

#[test]
fn status_resources() {
    check_request(status(Version::V1, StatusOp::Resources, 300), "1 4 3 300\n");
}

#[test]
fn status_stats() {
    check_request(
        status(Version::V1, StatusOp::Stats { since: 1700000000 }, 300),
        "1 4 4 1700000000 300\n",
    );
    check_request(
        status(Version::V1, StatusOp::Stats { since: 0 }, 0),
        "1 4 4 0 0\n",
    );
}

#[test]
fn status_version() {
    check_request(status(Version::V1, StatusOp::Version, 300), "1 4 5 300\n");
}

#[test]
fn request_command_numbers() {
    let r = parse_request(b"1 4 5 300\n").expect("parses");
    assert_eq!(r.command().number(), 4);
    assert_eq!(r.command().name(), "STATUS");
}

// ----------------------------------------------------------------- replies

#[test]
fn reply_ok() {
    check_reply(Reply::Ok, Expect::Ok, "1 \n");
}

#[test]
fn reply_count() {
    check_reply(Reply::Count(16), Expect::Count, "1 16\n");
    check_reply(Reply::Count(0), Expect::Count, "1 0\n");
}

#[test]
fn reply_payload() {
    check_reply(Reply::Payload(16), Expect::Payload, "1 16 \n");
    check_reply(Reply::Payload(160), Expect::Payload, "1 160 \n");
    check_reply(Reply::Payload(0), Expect::Payload, "1 0 \n");
}

#[test]
fn reply_allocated() {
    let wire = format!(
        "1 ibp://127.0.0.1:6714/0#{KEY}/492128891/READ \
         ibp://127.0.0.1:6714/0#{KEY}/377731970/WRITE \
         ibp://127.0.0.1:6714/0#{KEY}/1702475233/MANAGE \n"
    );
    assert_eq!(
        wire.len(),
        406,
        "the size of the reply in the reference transcript"
    );
    check_reply(
        Reply::Allocated {
            read: uri("127.0.0.1", 6714, 492128891, CapKind::Read),
            write: uri("127.0.0.1", 6714, 377731970, CapKind::Write),
            manage: uri("127.0.0.1", 6714, 1702475233, CapKind::Manage),
        },
        Expect::Allocated,
        &wire,
    );
}

#[test]
fn reply_probe() {
    check_reply(
        Reply::Probe(ProbeInfo {
            read_refs: 1,
            write_refs: 1,
            size: 16,
            max_size: 1024,
            seconds_left: 3600,
            reliability: 2,
            storage: 1,
        }),
        Expect::Probe,
        "1 1 1 16 1024 3600 2 1 \n",
    );
}

#[test]
fn reply_resources() {
    check_reply(Reply::Resources(vec![]), Expect::Resources, "1 0 \n");
    check_reply(
        Reply::Resources(vec![Rid(0)]),
        Expect::Resources,
        "1 1 0 \n",
    );
    check_reply(
        Reply::Resources(vec![Rid(0), Rid(1), Rid(42)]),
        Expect::Resources,
        "1 3 0 1 42 \n",
    );
    assert!(Reply::parse(b"1 2 0 \n", Expect::Resources).is_err());
}

#[test]
fn reply_error_has_leading_space() {
    check_reply(
        Reply::Error(IbpError::LongDuration),
        Expect::Allocated,
        " -28 \n",
    );
    check_reply(
        Reply::Error(IbpError::InvalidReadCap),
        Expect::Payload,
        " -9 \n",
    );
    check_reply(
        Reply::Error(IbpError::WouldExceedLimit),
        Expect::Ok,
        " -19 \n",
    );
    check_reply(Reply::Error(IbpError::CapNotFound), Expect::Probe, " -4 \n");
}

#[test]
fn reply_status_error_has_no_leading_space() {
    check_reply(
        Reply::StatusError(IbpError::WrongPassword),
        Expect::Payload,
        "-29 \n",
    );
    check_reply(
        Reply::StatusError(IbpError::InvalidCommand),
        Expect::Resources,
        "-25 \n",
    );
}

#[test]
fn every_error_code_round_trips_in_both_forms() {
    for (i, e) in IbpError::ALL.iter().copied().enumerate() {
        let n = i32::try_from(i).expect("small") + 1;
        assert_eq!(e.code(), -n, "ALL is in numeric order");
        assert_eq!(IbpError::from_code(e.code()), Some(e));
        for expect in EXPECTS {
            check_reply(Reply::Error(e), expect, &format!(" -{n} \n"));
            check_reply(Reply::StatusError(e), expect, &format!("-{n} \n"));
        }
    }
    assert_eq!(IbpError::from_code(0), None);
    assert_eq!(IbpError::from_code(-37), None);
}

#[test]
fn status_info_body() {
    let body = "VS:1.4:0.4 DT:1:2:3 NFU:1 RID:0 RT:1 CT:4294967296 ST:4294967296 UT:314576192 \
                AT:3980391104 CH:4294967296 SH:4294967296 UH:314576192 AH:3980391104 DR:86400 RE \n";
    assert_eq!(body.len(), 160);
    let info = StatusInfo {
        rid: Rid(0),
        resource_type: 1,
        total_configured: 4294967296,
        total_served: 4294967296,
        total_used: 314576192,
        total_available: 3980391104,
        hard_configured: 4294967296,
        hard_served: 4294967296,
        hard_used: 314576192,
        hard_available: 3980391104,
        max_duration: 86400,
    };
    assert_eq!(info.encode(), body);
    assert_eq!(StatusInfo::parse(body), Ok(info));
}

// --------------------------------------------------------------- proptests

const EXPECTS: [Expect; 6] = [
    Expect::Ok,
    Expect::Count,
    Expect::Payload,
    Expect::Allocated,
    Expect::Probe,
    Expect::Resources,
];

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{1,98}"
}

fn cap_ref() -> impl Strategy<Value = CapRef> {
    (any::<u32>(), key(), any::<u32>()).prop_map(|(rid, key, typekey)| CapRef {
        rid: Rid(rid),
        key,
        typekey,
    })
}

fn cap_kind() -> impl Strategy<Value = CapKind> {
    prop_oneof![
        Just(CapKind::Read),
        Just(CapKind::Write),
        Just(CapKind::Manage)
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    ("[a-z0-9.-]{1,30}", any::<u16>(), cap_ref(), cap_kind()).prop_map(|(host, port, cap, kind)| {
        Capability {
            host,
            port,
            cap,
            kind,
        }
    })
}

/// Durations: any i64, with -1 ("the maximum") and 0 drawn often.
fn duration() -> impl Strategy<Value = i64> {
    prop_oneof![Just(-1i64), Just(0i64), any::<i64>()]
}

fn password() -> impl Strategy<Value = String> {
    // Any printable non-space ASCII, up to the limit.
    proptest::string::string_regex(&format!("[!-~]{{1,{MAX_PASSWORD_LEN}}}")).expect("valid regex")
}

fn attributes() -> impl Strategy<Value = Attributes> {
    (any::<u64>(), duration(), any::<i64>()).prop_map(|(max_size, duration, reliability)| {
        Attributes {
            max_size,
            duration,
            reliability,
        }
    })
}

fn allocate() -> impl Strategy<Value = Request> {
    (
        prop_oneof![Just(Version::V0), Just(Version::V1)],
        any::<u32>(),
        prop_oneof![Just(Reliability::Soft), Just(Reliability::Hard)],
        prop_oneof![
            Just(StorageType::ByteArray),
            Just(StorageType::Buffer),
            Just(StorageType::Fifo),
            Just(StorageType::CircularQueue)
        ],
        duration(),
        any::<u64>(),
        any::<i64>(),
    )
        .prop_map(
            |(version, rid, reliability, storage, duration, size, timeout)| {
                Request::Allocate(Allocate {
                    version,
                    // The v0 form has no RID field; the v1 form always has one.
                    rid: (version == Version::V1).then_some(Rid(rid)),
                    reliability,
                    storage,
                    duration,
                    size,
                    timeout,
                })
            },
        )
}

fn manage_op() -> impl Strategy<Value = ManageOp> {
    prop_oneof![
        attributes().prop_map(ManageOp::Probe),
        Just(ManageOp::Incr),
        Just(ManageOp::Decr),
        attributes().prop_map(ManageOp::Change),
    ]
}

fn status_op() -> impl Strategy<Value = (Version, StatusOp)> {
    let rid_pw = || {
        (
            prop_oneof![Just(Version::V0), Just(Version::V1)],
            any::<u32>(),
            password(),
        )
    };
    prop_oneof![
        rid_pw().prop_map(|(v, rid, password)| (
            v,
            StatusOp::Inquire {
                rid: (v == Version::V1).then_some(Rid(rid)),
                password
            }
        )),
        rid_pw().prop_map(|(v, rid, password)| (
            v,
            StatusOp::Change {
                rid: (v == Version::V1).then_some(Rid(rid)),
                password
            }
        )),
        // RES, STATS and VERSION exist only in the v1 form.
        Just((Version::V1, StatusOp::Resources)),
        any::<i64>().prop_map(|since| (Version::V1, StatusOp::Stats { since })),
        Just((Version::V1, StatusOp::Version)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        allocate(),
        (cap_ref(), any::<u64>(), any::<i64>())
            .prop_map(|(cap, size, timeout)| Request::Store(Store { cap, size, timeout })),
        (cap_ref(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(cap, offset, size, timeout)| Request::Write(Write {
                cap,
                offset,
                size,
                timeout
            })
        ),
        (cap_ref(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(cap, offset, size, timeout)| Request::Load(Load {
                cap,
                offset,
                size,
                timeout
            })
        ),
        (
            cap_ref(),
            capability(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>()
        )
            .prop_map(|(source, target, offset, size, sto, tto, dto)| {
                Request::Copy(Copy {
                    source,
                    target,
                    offset,
                    size,
                    source_timeout: sto,
                    target_timeout: tto,
                    mover_timeout: dto,
                })
            }),
        (cap_ref(), manage_op(), any::<u8>(), any::<i64>()).prop_map(
            |(cap, op, cap_type, timeout)| Request::Manage(Manage {
                cap,
                op,
                cap_type,
                timeout
            })
        ),
        (status_op(), any::<i64>()).prop_map(|((version, op), timeout)| {
            Request::Status(Status {
                version,
                op,
                timeout,
            })
        }),
    ]
}

fn ibp_error() -> impl Strategy<Value = IbpError> {
    proptest::sample::select(IbpError::ALL.to_vec())
}

/// A reply together with the Expect a client would parse it with.
fn reply() -> impl Strategy<Value = (Reply, Expect)> {
    prop_oneof![
        Just((Reply::Ok, Expect::Ok)),
        any::<u64>().prop_map(|n| (Reply::Count(n), Expect::Count)),
        any::<u64>().prop_map(|n| (Reply::Payload(n), Expect::Payload)),
        (capability(), capability(), capability()).prop_map(|(read, write, manage)| (
            Reply::Allocated {
                read,
                write,
                manage
            },
            Expect::Allocated
        )),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            duration(),
            any::<i32>(),
            any::<i32>()
        )
            .prop_map(|(rr, wr, size, max, left, rel, ty)| (
                Reply::Probe(ProbeInfo {
                    read_refs: rr,
                    write_refs: wr,
                    size,
                    max_size: max,
                    seconds_left: left,
                    reliability: rel,
                    storage: ty,
                }),
                Expect::Probe
            )),
        proptest::collection::vec(any::<u32>(), 0..40).prop_map(|rids| (
            Reply::Resources(rids.into_iter().map(Rid).collect()),
            Expect::Resources
        )),
        (ibp_error(), proptest::sample::select(EXPECTS.to_vec()))
            .prop_map(|(e, x)| (Reply::Error(e), x)),
        (ibp_error(), proptest::sample::select(EXPECTS.to_vec()))
            .prop_map(|(e, x)| (Reply::StatusError(e), x)),
    ]
}

fn status_info() -> impl Strategy<Value = StatusInfo> {
    (any::<u32>(), any::<u32>(), any::<[u64; 8]>(), duration()).prop_map(|(rid, rt, n, dr)| {
        StatusInfo {
            rid: Rid(rid),
            resource_type: rt,
            total_configured: n[0],
            total_served: n[1],
            total_used: n[2],
            total_available: n[3],
            hard_configured: n[4],
            hard_served: n[5],
            hard_used: n[6],
            hard_available: n[7],
            max_duration: dr,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn request_round_trips(req in request()) {
        let wire = req.encode();
        prop_assert!(wire.ends_with('\n'));
        prop_assert!(wire.len() <= MAX_LINE);
        prop_assert_eq!(parse_request(wire.as_bytes()), Ok(req));
    }

    #[test]
    fn reply_round_trips((reply, expect) in reply()) {
        let wire = reply.encode();
        prop_assert!(wire.ends_with('\n'));
        prop_assert!(wire.len() <= MAX_LINE);
        prop_assert_eq!(Reply::parse(wire.as_bytes(), expect), Ok(reply));
    }

    #[test]
    fn capability_round_trips(c in capability()) {
        prop_assert_eq!(c.to_string().parse::<Capability>(), Ok(c));
    }

    #[test]
    fn status_info_round_trips(info in status_info()) {
        prop_assert_eq!(StatusInfo::parse(&info.encode()), Ok(info));
    }

    /// Whatever a peer sends: no panic, and anything accepted re-encodes to a
    /// line that parses to the same request.
    #[test]
    fn arbitrary_request_lines(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(req) = parse_request(&line) {
            prop_assert_eq!(parse_request(req.encode().as_bytes()), Ok(req));
        }
    }

    /// Any whitespace between fields (spaces, tabs, several), with or without
    /// the trailing space, and with `\n`, `\r\n` or no terminator: the same
    /// request.
    #[test]
    fn whitespace_variations_parse_the_same(
        req in request(),
        seps in proptest::collection::vec("[ \t]{1,3}", 16),
        trailing in "[ \t]{0,2}",
        end in "(\n|\r\n|)",
    ) {
        let wire = req.encode();
        let tokens: Vec<&str> = wire.split_ascii_whitespace().collect();
        let mut line = String::new();
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                line.push_str(&seps[i % seps.len()]);
            }
            line.push_str(t);
        }
        line.push_str(&trailing);
        line.push_str(&end);
        prop_assume!(line.len() <= MAX_LINE);
        prop_assert_eq!(parse_request(line.as_bytes()), Ok(req));
    }

    /// Valid requests with one field replaced, inserted or removed: no panic,
    /// and whatever still parses round-trips.
    #[test]
    fn mutated_request_lines(
        req in request(),
        op in 0..3usize,
        at in any::<proptest::sample::Index>(),
        token in prop_oneof![
            "-?[0-9]{1,21}", "[0-9]{1,3}#[A-Za-z0-9-]{0,8}", "[!-~]{1,8}", "-", "",
            "ibp://[a-z0-9.:\\[\\]-]{0,8}:[+0-9]{0,6}/[0-9]{0,3}#[a-z/#]{0,4}/[0-9]{0,4}/[A-Z]{0,6}",
        ],
    ) {
        let wire = req.encode();
        let mut tokens: Vec<String> = wire.split_ascii_whitespace().map(str::to_owned).collect();
        let i = at.index(tokens.len() + 1);
        match op {
            0 if i < tokens.len() => tokens[i] = token,
            1 => tokens.insert(i, token),
            _ if i < tokens.len() => { tokens.remove(i); }
            _ => tokens.push(token),
        }
        let line = format!("{}\n", tokens.join(" "));
        if let Ok(parsed) = parse_request(line.as_bytes()) {
            prop_assert_eq!(parse_request(parsed.encode().as_bytes()), Ok(parsed));
        }
    }

    #[test]
    fn arbitrary_reply_lines(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        for expect in EXPECTS {
            if let Ok(reply) = Reply::parse(&line, expect) {
                prop_assert_eq!(Reply::parse(reply.encode().as_bytes(), expect), Ok(reply));
            }
        }
    }
}
