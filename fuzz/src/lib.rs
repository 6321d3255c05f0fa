//! The properties the fuzz targets check, one function per target, on
//! arbitrary bytes. Each must never panic except on a broken property.
//! The targets in `fuzz_targets/` call them; the workspace test
//! `tests/fuzz_checks.rs` (root package) includes this file with
//! `#[path]` and runs every function over the seed corpus (`fuzz/seeds/`)
//! and bounded proptests, so CI exercises them on stable.

use exnode::{from_xml, to_xml};
use ibp_depot_client::seal::{b64_decode, b64_encode, hex, unhex, SessionKeys, KEY_MATERIAL_LEN};
use ibp_proto::{
    parse_request, parse_secure_request, Expect, IbpError, ProtoError, Reply, MAX_LINE,
    MAX_SECURE_LINE,
};

/// One target's check.
pub type Check = fn(&[u8]);

/// The targets and their check functions, by the target's name (also the
/// name of its seed directory).
pub const TARGETS: [(&str, Check); 5] = [
    ("request", request),
    ("reply", reply),
    ("exnode", exnode),
    ("secure_request", secure_request),
    ("sealed", sealed),
];

/// `parse_request` on arbitrary bytes must never panic, and a request it
/// accepts must re-encode to a line that parses back to the same request.
pub fn request(data: &[u8]) {
    let Ok(req) = parse_request(data) else {
        return;
    };
    let line = req.encode();
    assert!(line.ends_with('\n'), "{line:?}");
    if line.len() > MAX_LINE {
        // encode() normalises numbers and whitespace, which never lengthens a
        // line, but it adds the canonical trailing space some commands carry;
        // a maximal input without it can come out one byte too long.
        assert!(line.len() <= data.len() + 2, "{line:?}");
        let err = parse_request(line.as_bytes()).expect_err("over-long line");
        assert_eq!(err.kind, ProtoError::LineTooLong);
        return;
    }
    let again = parse_request(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line:?} (from {req:?}) does not parse: {e}"));
    assert_eq!(again, req, "{line:?}");
    // Canonical form is a fixed point.
    assert_eq!(again.encode(), line);
}

const EXPECTS: [Expect; 6] = [
    Expect::Ok,
    Expect::Count,
    Expect::Payload,
    Expect::Allocated,
    Expect::Probe,
    Expect::Resources,
];

/// `Reply::parse` on arbitrary bytes, for every `Expect`, must never panic,
/// and a reply it accepts must re-encode to a line that parses back the same.
pub fn reply(data: &[u8]) {
    for expect in EXPECTS {
        let Ok(reply) = Reply::parse(data, expect) else {
            continue;
        };
        let line = reply.encode();
        assert!(line.ends_with('\n'), "{line:?}");
        if line.len() > MAX_LINE {
            // Only the canonical trailing space can lengthen a line.
            assert!(line.len() <= data.len() + 1, "{line:?}");
            assert_eq!(
                Reply::parse(line.as_bytes(), expect),
                Err(ProtoError::LineTooLong)
            );
            continue;
        }
        let again = Reply::parse(line.as_bytes(), expect)
            .unwrap_or_else(|e| panic!("{line:?} (from {reply:?}) does not parse: {e}"));
        assert_eq!(again, reply, "{line:?}");
        assert_eq!(again.encode(), line);
    }
}

/// `from_xml` on arbitrary bytes must never panic, and an exNode it accepts
/// must write (`to_xml`) to a document that reads back to an equal model and
/// writes the same bytes again.
pub fn exnode(data: &[u8]) {
    let Ok(x) = from_xml(data) else {
        return;
    };
    // validate() may accept or refuse; it must not panic either.
    let _ = x.validate();
    let _ = x.extents();
    let doc = to_xml(&x);
    let again = from_xml(doc.as_bytes())
        .unwrap_or_else(|e| panic!("{doc:?} (from {x:?}) does not parse: {e}"));
    assert_eq!(again, x, "{doc:?}");
    assert_eq!(to_xml(&again), doc);
}

/// `parse_secure_request` (the secure port, protocol v2/v3: AUTH, CRYPTO,
/// and the v2 forms of every command) on arbitrary bytes must never panic,
/// and a request it accepts must re-encode to a line that parses back to
/// the same request, its canonical form a fixed point; what the depot
/// derives from it (name, command, error reply) must not panic either.
pub fn secure_request(data: &[u8]) {
    let Ok(req) = parse_secure_request(data) else {
        return;
    };
    let _ = (req.name(), req.command());
    let _ = req.error_reply(IbpError::CapAccessDenied).encode();
    let line = req.encode();
    assert!(line.ends_with('\n'), "{line:?}");
    if line.len() > MAX_SECURE_LINE {
        // As for v1: only a canonical trailing space can lengthen a line.
        assert!(line.len() <= data.len() + 2, "{line:?}");
        let err = parse_secure_request(line.as_bytes()).expect_err("over-long line");
        assert_eq!(err.kind, ProtoError::LineTooLong);
        return;
    }
    let again = parse_secure_request(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line:?} (from {req:?}) does not parse: {e}"));
    assert_eq!(again, req, "{line:?}");
    assert_eq!(again.encode(), line);
}

/// The session keys the `sealed` target uses (any fixed material).
fn keys() -> SessionKeys {
    let mut m = [0u8; KEY_MATERIAL_LEN];
    for (i, b) in m.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    SessionKeys::from_material(&m)
}

/// The crypto level's data-connection lines (protocol v3), as the depot's
/// data port reads them: `3 22 <session id hex>` (JOIN) and
/// `3 <cmd> <sealed>` (base64url of nonce, AES-128-CTR ciphertext of a v2
/// request line, HMAC-SHA256 tag), the opened line parsed by
/// `parse_secure_request`. On arbitrary bytes nothing may panic; a forged
/// line never opens; whatever decodes re-encodes canonically; and the
/// bytes sealed as a request open back to the same bytes (the parse of
/// the plaintext then runs on attacker-chosen text, as after a MAC that
/// verified).
pub fn sealed(data: &[u8]) {
    let keys = keys();
    let text = String::from_utf8_lossy(data);
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    match tokens.as_slice() {
        ["3", "22", token] => {
            if let Some(id) = unhex::<16>(token) {
                assert_eq!(hex(&id), token.to_ascii_lowercase());
            }
        }
        ["3", cmd, sealed] => {
            // Without the keys no line opens (the MAC), whatever it holds.
            if let Ok((conn, counter, plain)) = keys.open(cmd, sealed) {
                // Only a line sealed with these keys opens: it must be the
                // canonical sealing of what it holds.
                assert_eq!(keys.seal(cmd, conn, counter, &plain), *sealed);
                let _ = parse_secure_request(&plain);
            }
        }
        _ => {}
    }
    for t in &tokens {
        if let Some(raw) = b64_decode(t) {
            assert_eq!(&b64_encode(&raw), t, "base64url is canonical");
        }
    }
    // The plaintext path: seal the bytes as a request line, open, parse.
    let cmd = match parse_secure_request(data) {
        Ok(r) => r
            .command()
            .map(|c| c.number().to_string())
            .unwrap_or_else(|| "20".into()),
        Err(_) => "2".into(),
    };
    let sealed = keys.seal(&cmd, 7, 42, data);
    let opened = keys.open(&cmd, &sealed).expect("a sealed line opens");
    assert_eq!(opened, (7, 42, data.to_vec()));
    if let Ok(r) = parse_secure_request(&opened.2) {
        assert_eq!(Ok(r), parse_secure_request(data));
    }
    // Bound to its command and its bytes: another command, or any one
    // character changed, and it no longer opens.
    assert!(keys.open("99", &sealed).is_err());
    let mut bytes = sealed.clone().into_bytes();
    let i = data.len() % bytes.len();
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("base64url is ASCII");
    assert!(keys.open(&cmd, &tampered).is_err(), "{tampered}");
}
