//! The secure port's STATUS forms: INQ (`2 4 <rid> 1 <password> <timeout>`)
//! and RES (`2 4 3 <timeout>`), the two a verified TLS peer may send before
//! AUTH: exact lines, round trips, and the lines that must be refused.

use ibp_proto::{
    parse_secure_request, Command, IbpError, ProtoError, Reply, Rid, SecureRequest, Status,
    StatusOp, Version,
};

fn status(op: StatusOp, timeout: i64) -> SecureRequest {
    SecureRequest::Status(Status {
        version: Version::V1,
        op,
        timeout,
    })
}

#[track_caller]
fn refuse(line: &str, code: IbpError) -> ProtoError {
    let err = match parse_secure_request(line.as_bytes()) {
        Ok(r) => panic!("{line:?} parsed as {r:?}"),
        Err(e) => e,
    };
    assert_eq!(err.ibp_error(), code, "{line:?}: {err:?}");
    // STATUS errors are answered without the leading space.
    if err.command == Some(Command::Status) {
        assert_eq!(
            err.reply(),
            Reply::StatusError(code),
            "{line:?} is refused as a STATUS"
        );
    }
    err.kind
}

#[test]
fn status_res_encodes_as_the_legacy_form_with_version_2() {
    let r = status(StatusOp::Resources, 30);
    assert_eq!(r.encode(), "2 4 3 30\n");
    assert_eq!(r.command(), Some(Command::Status));
    assert_eq!(r.name(), "STATUS");
}

#[test]
fn status_res_and_inq_round_trip() {
    for r in [
        status(StatusOp::Resources, 30),
        status(StatusOp::Resources, 0),
        status(
            StatusOp::Inquire {
                rid: Some(Rid(0)),
                password: "ibp".into(),
            },
            30,
        ),
        status(
            StatusOp::Inquire {
                rid: Some(Rid(3)),
                password: "x".into(),
            },
            -1,
        ),
    ] {
        let line = r.encode();
        assert_eq!(parse_secure_request(line.as_bytes()).unwrap(), r, "{line}");
    }
    // Extra blanks and no newline parse the same.
    assert_eq!(
        parse_secure_request(b"2  4\t3   30").unwrap(),
        status(StatusOp::Resources, 30)
    );
    // Four fields starting with 3 are an INQ of resource 3, not RES.
    assert_eq!(
        parse_secure_request(b"2 4 3 1 ibp 30\n").unwrap(),
        status(
            StatusOp::Inquire {
                rid: Some(Rid(3)),
                password: "ibp".into(),
            },
            30
        )
    );
}

#[test]
fn other_status_forms_are_refused_on_the_secure_port() {
    // CHANGE, VERSION and STATS are legacy-port only.
    refuse("2 4 0 2 pw 30\n", IbpError::InvalidCommand);
    refuse("2 4 5 30\n", IbpError::InvalidCommand);
    refuse("2 4 9 30\n", IbpError::InvalidCommand);
    refuse("2 4 4 0 30\n", IbpError::BadFormat);
    // The v0 form has no RID.
    refuse("2 4 1 ibp 30\n", IbpError::BadFormat);
    // RES with a bad timeout or extra fields.
    assert_eq!(
        refuse("2 4 3 soon\n", IbpError::BadFormat),
        ProtoError::NotNumber("timeout")
    );
    refuse("2 4 3\n", IbpError::BadFormat);
    refuse("2 4 3 30 30 30 30\n", IbpError::BadFormat);
    refuse("2 4\n", IbpError::BadFormat);
    // The legacy versions of RES are not secure-port lines.
    refuse("1 4 3 30\n", IbpError::ProtocolVersion);
    refuse("0 4 3 30\n", IbpError::ProtocolVersion);
    // A password over the limit.
    let long = format!(
        "2 4 0 1 {} 30\n",
        "p".repeat(ibp_proto::MAX_PASSWORD_LEN + 1)
    );
    assert_eq!(
        refuse(&long, IbpError::InvalidParameter),
        ProtoError::OutOfRange("password")
    );
}

#[test]
fn status_not_served_on_the_secure_port_encodes_faithfully_and_is_refused() {
    // encode() never writes a line that parses as another request.
    for (op, line) in [
        (
            StatusOp::Change {
                rid: Some(Rid(1)),
                password: "pw".into(),
            },
            "2 4 1 2 pw 30\n",
        ),
        (StatusOp::Version, "2 4 5 30\n"),
        (StatusOp::Stats { since: 7 }, "2 4 4 7 30\n"),
    ] {
        let r = status(op, 30);
        assert_eq!(r.encode(), line);
        assert!(parse_secure_request(line.as_bytes()).is_err(), "{line}");
    }
}
