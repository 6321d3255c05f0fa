//! Lines a depot must refuse, the IBP error each one maps to, and the exact
//! error reply bytes (` -N \n`, or `-N \n` for STATUS).

use ibp_proto::{
    parse_request, parse_status_change_values, Command, Expect, IbpError, ProtoError, Reply,
    RequestError, StatusInfo, MAX_LINE, MAX_PASSWORD_LEN,
};

const KEY: &str = "IBP-abcDEF0123";

/// Parses `line`, which must fail with `code`, and returns the error.
#[track_caller]
fn refuse(line: &str, code: IbpError) -> RequestError {
    let err = match parse_request(line.as_bytes()) {
        Ok(req) => panic!("{line:?} parsed as {req:?}"),
        Err(err) => err,
    };
    assert_eq!(err.ibp_error(), code, "{line:?}: {err:?}");
    assert_eq!(err.kind.ibp_error(), code);
    err
}

/// The error reply to a refused request, as bytes.
#[track_caller]
fn reply_bytes(line: &str, code: IbpError) -> String {
    refuse(line, code).reply().encode()
}

// ------------------------------------------------------------- line length

/// A valid STORE line of exactly `len` bytes (including `\n`), padded with
/// extra spaces between fields.
fn store_line_of(len: usize) -> String {
    let head = format!("0 2 0#{KEY} 1 16");
    let tail = " 300 \n";
    let pad = len - head.len() - tail.len();
    format!("{head}{}{tail}", " ".repeat(pad))
}

#[test]
fn line_of_max_length_is_accepted() {
    let line = store_line_of(MAX_LINE);
    assert_eq!(line.len(), 4096);
    assert!(parse_request(line.as_bytes()).is_ok());
    // Without its newline the same line is one byte shorter: still fine.
    let bare = &line.as_bytes()[..MAX_LINE - 1];
    assert!(parse_request(bare).is_ok());
}

#[test]
fn line_over_max_length_is_bad_format() {
    let line = store_line_of(MAX_LINE + 1);
    let err = refuse(&line, IbpError::BadFormat);
    assert_eq!(err.kind, ProtoError::LineTooLong);
    assert_eq!(err.reply(), Reply::Error(IbpError::BadFormat));
    assert_eq!(err.reply().encode(), " -21 \n");

    // MAX_LINE counts the newline, so 4096 bytes without one are too many.
    let bare = &line.as_bytes()[..MAX_LINE];
    assert_eq!(
        parse_request(bare).map_err(|e| e.kind),
        Err(ProtoError::LineTooLong)
    );

    // Far too long, and garbage: the length is checked first.
    let huge = vec![0xffu8; 100_000];
    assert_eq!(
        parse_request(&huge).map_err(|e| e.kind),
        Err(ProtoError::LineTooLong)
    );
}

#[test]
fn reply_over_max_length() {
    let line = format!("1 16{} \n", " ".repeat(MAX_LINE));
    assert_eq!(
        Reply::parse(line.as_bytes(), Expect::Payload),
        Err(ProtoError::LineTooLong)
    );
    assert_eq!(ProtoError::LineTooLong.ibp_error(), IbpError::BadFormat);
}

#[test]
fn status_change_values_over_max_length() {
    let line = format!("1 2 3{} \n", " ".repeat(MAX_LINE));
    assert_eq!(
        parse_status_change_values(line.as_bytes()),
        Err(ProtoError::LineTooLong)
    );
}

// --------------------------------------------------------- unknown command

#[test]
fn unknown_command_is_invalid_command() {
    // 3 is unassigned; 6 MCOPY and 12 NFU exist in IBP 1.4 but are not served.
    for line in [
        "0 3 foo\n",
        "0 6 a b c\n",
        "0 12 0#k 1 2 3\n",
        "0 99\n",
        "0 STORE 0#k 1 16 300\n",
    ] {
        let err = refuse(line, IbpError::InvalidCommand);
        assert!(matches!(err.kind, ProtoError::UnknownCommand(_)), "{err:?}");
        assert_eq!(err.command, None);
        assert_eq!(err.reply().encode(), " -25 \n");
    }
    // The command is checked before the version.
    let err = refuse("7 3 x\n", IbpError::InvalidCommand);
    assert_eq!(err.command, None);
}

#[test]
fn unknown_manage_op_is_invalid_command() {
    let err = refuse(
        &format!("0 9 0#{KEY} 1 44 1 300\n"),
        IbpError::InvalidCommand,
    );
    assert_eq!(err.command, Some(Command::Manage));
    assert_eq!(err.reply().encode(), " -25 \n");
}

#[test]
fn unknown_status_op_is_invalid_command_without_leading_space() {
    let err = refuse("1 4 0 9 ibp 300\n", IbpError::InvalidCommand);
    assert_eq!(err.command, Some(Command::Status));
    assert_eq!(err.reply(), Reply::StatusError(IbpError::InvalidCommand));
    assert_eq!(err.reply().encode(), "-25 \n");
    // STATS in the v0 form does not exist: op 4 with a "password".
    assert_eq!(
        reply_bytes("0 4 4 0 300\n", IbpError::InvalidCommand),
        "-25 \n"
    );
}

// --------------------------------------------------------- unknown version

#[test]
fn unknown_version_is_protocol_version() {
    for line in [
        "2 1 0 2 1 3600 1024 300\n",
        "-1 1 0 2 1 3600 1024 300\n",
        "01 1 0 2 1 3600 1024 300\n",
        "v 8 0#k 1 0 16 300 \n",
    ] {
        let err = refuse(line, IbpError::ProtocolVersion);
        assert!(matches!(err.kind, ProtoError::UnknownVersion(_)), "{err:?}");
        assert_eq!(err.reply().encode(), " -27 \n");
    }
}

#[test]
fn v1_form_exists_only_for_allocate_and_status() {
    for (line, command) in [
        (format!("1 2 0#{KEY} 1 16 300 \n"), Command::Store),
        (format!("1 8 0#{KEY} 1 0 16 300 \n"), Command::Load),
        (format!("1 13 0#{KEY} 1 0 16 300 \n"), Command::Write),
        (format!("1 9 0#{KEY} 1 42 1 300\n"), Command::Manage),
    ] {
        let err = refuse(&line, IbpError::ProtocolVersion);
        assert_eq!(err.command, Some(command));
        assert_eq!(err.reply().encode(), " -27 \n");
    }
}

#[test]
fn unknown_version_of_status_has_no_leading_space() {
    let err = refuse("2 4 0 1 ibp 300\n", IbpError::ProtocolVersion);
    assert_eq!(err.command, Some(Command::Status));
    assert_eq!(err.reply().encode(), "-27 \n");
}

// ------------------------------------------------------- invalid parameter

#[test]
fn negative_size_is_invalid_parameter() {
    for line in [
        format!("0 2 0#{KEY} 1 -16 300 \n"),
        format!("0 13 0#{KEY} 1 0 -4 300 \n"),
        format!("0 13 0#{KEY} 1 -1 4 300 \n"),
        format!("0 8 0#{KEY} 1 0 -16 300 \n"),
        format!("0 8 0#{KEY} 1 -8 16 300 \n"),
        "1 1 0 2 1 3600 -1024 300\n".to_owned(),
        "0 1 2 1 3600 -1 300\n".to_owned(),
        format!("0 9 0#{KEY} 1 43 0 -5 0 0 20\n"),
        format!("0 5 0#{KEY} ibp://h:1/0#k/2/WRITE 1 0 -16 1 1 1 \n"),
        "1 1 -1 2 1 3600 1024 300\n".to_owned(),
        format!("0 9 0#{KEY} 1 42 -1 300\n"),
    ] {
        let err = refuse(&line, IbpError::InvalidParameter);
        assert!(matches!(err.kind, ProtoError::OutOfRange(_)), "{err:?}");
        assert_eq!(err.reply().encode(), " -30 \n");
    }
}

#[test]
fn out_of_range_values_are_invalid_parameter() {
    for line in [
        // Reliability 3, storage type 5.
        "1 1 0 3 1 3600 1024 300\n".to_owned(),
        "1 1 0 2 5 3600 1024 300\n".to_owned(),
        "0 1 0 1 3600 1024 300\n".to_owned(),
        // Sizes and RIDs past their types.
        "1 1 0 2 1 3600 18446744073709551616 300\n".to_owned(),
        "1 1 4294967296 2 1 3600 1024 300\n".to_owned(),
        "1 1 0 2 1 9223372036854775808 1024 300\n".to_owned(),
        format!("0 9 0#{KEY} 1 42 256 300\n"),
    ] {
        let err = refuse(&line, IbpError::InvalidParameter);
        assert!(matches!(err.kind, ProtoError::OutOfRange(_)), "{err:?}");
    }
    let long_pw = "p".repeat(MAX_PASSWORD_LEN + 1);
    let err = refuse(
        &format!("1 4 0 1 {long_pw} 300\n"),
        IbpError::InvalidParameter,
    );
    assert_eq!(err.reply().encode(), "-30 \n");
    assert!(parse_request(format!("1 4 0 1 {} 300\n", &long_pw[1..]).as_bytes()).is_ok());
}

#[test]
fn extreme_values_are_accepted() {
    // u64 sizes above i64::MAX and i64 extremes are valid field values.
    assert!(parse_request(b"1 1 0 2 1 -9223372036854775808 18446744073709551615 300\n").is_ok());
    assert!(parse_request(b"0 1 2 1 9223372036854775807 18446744073709551615 -1\n").is_ok());
}

// ------------------------------------------------------------- bad format

#[test]
fn non_numeric_is_bad_format() {
    for line in [
        format!("0 2 0#{KEY} 1 abc 300 \n"),
        format!("0 2 0#{KEY} 1 16 3OO \n"),
        format!("0 2 0#{KEY} 1 +16 300 \n"),
        format!("0 2 0#{KEY} 1 - 300 \n"),
        format!("0 2 0#{KEY} 1 16 - \n"),
        format!("0 2 0#{KEY} 1 1.5 300 \n"),
        format!("0 8 0#{KEY} 1 0x10 16 300 \n"),
        "1 1 0 2 1 36x0 1024 300\n".to_owned(),
        "1 1 0 two 1 3600 1024 300\n".to_owned(),
        "1 4 0 1 ibp soon\n".to_owned(),
        "1 4 4 yesterday 300\n".to_owned(),
        format!("0 9 0#{KEY} 1 43 0 big 0 0 20\n"),
        format!("0 9 0#{KEY} 1 42 READ 300\n"),
    ] {
        let err = refuse(&line, IbpError::BadFormat);
        assert!(matches!(err.kind, ProtoError::NotNumber(_)), "{err:?}");
    }
    assert_eq!(
        reply_bytes(&format!("0 2 0#{KEY} 1 abc 300 \n"), IbpError::BadFormat),
        " -21 \n"
    );
    assert_eq!(
        reply_bytes("1 4 0 1 ibp soon\n", IbpError::BadFormat),
        "-21 \n"
    );
}

#[test]
fn wrong_field_count_is_bad_format() {
    for line in [
        "1 1 0 2 1 3600 1024\n".to_owned(),
        "1 1 0 2 1 3600 1024 300 7\n".to_owned(),
        "0 1 2 1 3600 1024\n".to_owned(),
        format!("0 2 0#{KEY} 1 16\n"),
        format!("0 2 0#{KEY} 1 16 300 9 \n"),
        format!("0 8 0#{KEY} 1 0 16\n"),
        format!("0 13 0#{KEY} 1 0 16\n"),
        format!("0 5 0#{KEY} ibp://h:1/0#k/2/WRITE 1 0 16 1 1\n"),
        format!("0 9 0#{KEY} 1 40 1 300\n"),
        format!("0 9 0#{KEY} 1 42 1 0 0 0 300\n"),
        format!("0 9 0#{KEY} 1\n"),
        "1 4 3\n".to_owned(),
        "1 4 5 300 1\n".to_owned(),
        "1 4 0 1 300\n".to_owned(),
        "0 4 1 300\n".to_owned(),
        "0 4 3 300\n".to_owned(),
        "1\n".to_owned(),
    ] {
        let err = refuse(&line, IbpError::BadFormat);
        assert!(
            matches!(err.kind, ProtoError::FieldCount(_)),
            "{line:?}: {err:?}"
        );
    }
}

#[test]
fn empty_and_binary_lines_are_bad_format() {
    for line in [&b"\n"[..], b"", b"   \n", b"\r\n"] {
        let err = parse_request(line).expect_err("empty");
        assert_eq!(err.kind, ProtoError::Empty);
        assert_eq!(err.ibp_error(), IbpError::BadFormat);
    }
    for line in [
        &b"0 2 \x00 1 16 300 \n"[..],
        b"0 2 0#k\n1 16 300 \n",
        b"0 2 0#k 1 16 300 \xc3\xa9\n",
        b"\x1b[A\n",
    ] {
        let err = parse_request(line).expect_err("binary");
        assert_eq!(err.kind, ProtoError::NotText, "{line:?}");
        assert_eq!(err.ibp_error(), IbpError::BadFormat);
        assert_eq!(err.command, None);
        assert_eq!(err.reply().encode(), " -21 \n");
    }
}

// -------------------------------------------------------- bad capability

#[test]
fn bad_capability_is_wrong_cap_format() {
    for line in [
        // No '#', RID not a number, empty key, key with '/' or '#', typekey not a number.
        format!("0 2 {KEY} 1 16 300 \n"),
        format!("0 2 x#{KEY} 1 16 300 \n"),
        "0 2 0# 1 16 300 \n".to_owned(),
        "0 2 0#IBP-a/b 1 16 300 \n".to_owned(),
        "0 2 0#IBP-a#b 1 16 300 \n".to_owned(),
        format!("0 2 0#{KEY} abc 16 300 \n"),
        format!("0 2 0#{KEY} -1 16 300 \n"),
        format!("0 8 0#{KEY} 4294967296 0 16 300 \n"),
        format!("0 9 #{KEY} 1 40 0 0 0 0 0\n"),
        format!("0 2 0#{} 1 16 300 \n", "k".repeat(257)),
    ] {
        let err = refuse(&line, IbpError::WrongCapFormat);
        assert!(matches!(err.kind, ProtoError::BadCapability(_)), "{err:?}");
        assert_eq!(err.reply().encode(), " -11 \n");
    }
}

#[test]
fn bad_copy_target_is_wrong_cap_format() {
    for target in [
        "http://h:1/0#k/2/WRITE",
        "ibp://h/0#k/2/WRITE",
        "ibp://h:port/0#k/2/WRITE",
        "ibp://h:70000/0#k/2/WRITE",
        "ibp://:1/0#k/2/WRITE",
        "ibp://h!:1/0#k/2/WRITE",
        "ibp://h:1",
        "ibp://h:1/0#k/2",
        "ibp://h:1/0#k/2/WRITE/x",
        "ibp://h:1/0#k/2/DELETE",
        "ibp://h:1/0#k/two/WRITE",
        "ibp://h:1/zero#k/2/WRITE",
        "ibp://h:1/0k/2/WRITE",
    ] {
        let line = format!("0 5 0#{KEY} {target} 1 0 16 300 300 300 \n");
        let err = refuse(&line, IbpError::WrongCapFormat);
        assert!(
            matches!(err.kind, ProtoError::BadCapability(_)),
            "{target}: {err:?}"
        );
    }
}

// ------------------------------------------------- RequestError::reply form

#[test]
fn error_reply_form_depends_only_on_status() {
    // Errors to STATUS requests: "-N \n"; to anything else (or an unknown
    // command): " -N \n".
    let cases: [(&str, &str); 9] = [
        ("1 4 0 1 ibp x\n", "-21 \n"),
        ("0 4 2 pw\n", "-21 \n"),
        ("3 4 0 1 ibp 300\n", "-27 \n"),
        ("1 1 0 2 1 x 1024 300\n", " -21 \n"),
        ("0 2 nokey 1 16 300 \n", " -11 \n"),
        ("0 8 0#k 1 0 -1 300 \n", " -30 \n"),
        ("0 9 0#k 1 40 1 300\n", " -21 \n"),
        ("0 5 0#k bad 1 0 16 1 1 1 \n", " -11 \n"),
        ("0 42\n", " -25 \n"),
    ];
    for (line, wire) in cases {
        let err = parse_request(line.as_bytes()).expect_err(line);
        assert_eq!(err.reply().encode(), wire, "{line:?}");
        let is_status = err.command == Some(Command::Status);
        assert_eq!(matches!(err.reply(), Reply::StatusError(_)), is_status);
        // The client side reads it back as the same error.
        let back = Reply::parse(wire.as_bytes(), Expect::Ok).expect("error reply parses");
        assert_eq!(back, err.reply());
    }
    // Built by hand, for every command.
    for command in [
        None,
        Some(Command::Allocate),
        Some(Command::Store),
        Some(Command::Status),
        Some(Command::Copy),
        Some(Command::Load),
        Some(Command::Manage),
        Some(Command::Write),
    ] {
        let err = RequestError {
            command,
            kind: ProtoError::NotNumber("x"),
        };
        let want = if command == Some(Command::Status) {
            "-21 \n"
        } else {
            " -21 \n"
        };
        assert_eq!(err.reply().encode(), want, "{command:?}");
    }
}

#[test]
fn proto_error_to_ibp_error_table() {
    let table = [
        (ProtoError::LineTooLong, -21),
        (ProtoError::NotText, -21),
        (ProtoError::Empty, -21),
        (ProtoError::FieldCount("x"), -21),
        (ProtoError::NotNumber("x"), -21),
        (ProtoError::BadReply("x"), -21),
        (ProtoError::UnknownVersion("9".into()), -27),
        (ProtoError::UnknownCommand("9".into()), -25),
        (ProtoError::OutOfRange("x"), -30),
        (ProtoError::BadCapability("x"), -11),
    ];
    for (e, code) in table {
        assert_eq!(e.ibp_error().code(), code, "{e:?}");
    }
}

// ------------------------------------------------------------- bad replies

#[test]
fn bad_replies() {
    let cases: [(&[u8], Expect); 14] = [
        (b"1 \n", Expect::Count),
        (b"1 16\n", Expect::Ok),
        (b"1 16", Expect::Count),
        (b"\n", Expect::Ok),
        (b"2 \n", Expect::Ok),
        (b"0 \n", Expect::Ok),
        (b"-x \n", Expect::Ok),
        (b"1 x\n", Expect::Count),
        (b"1 -5 \n", Expect::Payload),
        (b"1 1 1 16 1024 3600 2 \n", Expect::Probe),
        (b"1 2 0 \n", Expect::Resources),
        (b"1 1 x \n", Expect::Resources),
        (
            b"1 ibp://h:1/0#k/1/READ ibp://h:1/0#k/2/WRITE \n",
            Expect::Allocated,
        ),
        (b"1 \xff\n", Expect::Ok),
    ];
    for (line, expect) in cases {
        assert!(
            Reply::parse(line, expect).is_err(),
            "{:?} as {expect:?}",
            String::from_utf8_lossy(line)
        );
    }
    // A capability that is not a capability.
    assert!(matches!(
        Reply::parse(b"1 a b c \n", Expect::Allocated),
        Err(ProtoError::BadCapability(_))
    ));
    // Unknown error numbers are still errors (reported as generic).
    assert_eq!(
        Reply::parse(b" -99 \n", Expect::Ok),
        Ok(Reply::Error(IbpError::Generic))
    );
}

#[test]
fn status_info_parse_errors_and_negative_duration() {
    assert!(StatusInfo::parse("VS:1.4:0.4 RID:0 RE \n").is_err());
    let body = "RID:0 RT:1 CT:1 ST:1 UT:1 AT:1 CH:1 SH:1 UH:1 AH:1 DR:-1 RE \n";
    let info = StatusInfo::parse(body).expect("DR may be -1");
    assert_eq!(info.max_duration, -1);
    assert!(StatusInfo::parse(&body.replace("CT:1", "CT:x")).is_err());
    assert!(StatusInfo::parse(&body.replace("RID:0", "RID:-1")).is_err());
}
