//! Tests of `lors::crypto`: block encryption, checksums, key wrapping and
//! key files.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use lors::crypto::{
    apply_keystream, block_iv, checksum, checksum_at, read_private_key, unwrap, verify,
    verify_mapping, wrap, write_private_key, CryptoError, DataKey, KeyPair, PublicKey, WrapContext,
};
use uuid::Uuid;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn file() -> Uuid {
    Uuid::parse_str("6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8").unwrap()
}

// ------------------------------------------------------------ encryption

#[test]
fn iv_layout_and_range() {
    let iv = block_iv(&file(), 0x0102_0304).unwrap();
    assert_eq!(&iv[..8], &file().as_bytes()[..8]);
    assert_eq!(&iv[8..12], &[1, 2, 3, 4]);
    assert_eq!(&iv[12..], &[0, 0, 0, 0]);
    assert!(block_iv(&file(), u64::from(u32::MAX)).is_ok());
    assert!(matches!(
        block_iv(&file(), 1 << 32),
        Err(CryptoError::BlockIndex(_))
    ));
    let key = DataKey::from_bytes([7; 16]);
    assert!(apply_keystream(&key, &file(), 1 << 32, &mut [0u8; 4]).is_err());
}

#[test]
fn round_trip_over_several_blocks() {
    let key = DataKey::generate().unwrap();
    let plain: Vec<Vec<u8>> = (0..4u8)
        .map(|b| (0..10_000u32).map(|i| (i as u8) ^ b).collect())
        .collect();
    let mut blocks = plain.clone();
    for (i, b) in blocks.iter_mut().enumerate() {
        apply_keystream(&key, &file(), i as u64, b).unwrap();
    }
    for (p, c) in plain.iter().zip(&blocks) {
        assert_ne!(p, c);
    }
    for (i, b) in blocks.iter_mut().enumerate() {
        apply_keystream(&key, &file(), i as u64, b).unwrap();
    }
    assert_eq!(plain, blocks);
    // Another key or file does not decrypt.
    let mut other = plain[0].clone();
    apply_keystream(&key, &file(), 0, &mut other).unwrap();
    apply_keystream(&key, &Uuid::nil(), 0, &mut other).unwrap();
    assert_ne!(other, plain[0]);
}

#[test]
fn distinct_blocks_have_distinct_keystreams() {
    const MIB: usize = 1 << 20;
    let key = DataKey::from_bytes([0x42; 16]);
    let mut b0 = vec![0u8; MIB];
    let mut b1 = vec![0u8; MIB];
    apply_keystream(&key, &file(), 0, &mut b0).unwrap();
    apply_keystream(&key, &file(), 1, &mut b1).unwrap();
    assert_ne!(b0, b1);
    let seen: HashSet<&[u8]> = b0.chunks(16).collect();
    assert_eq!(seen.len(), MIB / 16, "keystream repeats within block 0");
    assert!(b1.chunks(16).all(|c| !seen.contains(c)));
}

/// NIST SP 800-38A F.5.1 CTR-AES128.Encrypt. Its counter increments in the
/// low bytes without carrying past the last 32 bits, so `Ctr32BE` matches
/// all four blocks.
#[test]
fn nist_sp800_38a_f51() {
    let key: [u8; 16] = hex("2b7e151628aed2a6abf7158809cf4f3c").try_into().unwrap();
    let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
    let mut data = hex(concat!(
        "6bc1bee22e409f96e93d7e117393172a",
        "ae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52ef",
        "f69f2445df4f9b17ad2b417be66c3710",
    ));
    let expected = hex(concat!(
        "874d6191b620e3261bef6864990db6ce",
        "9806f66b7970fdff8617187bb9fffdff",
        "5ae4df3edbd5d35e5b4f09020db03eab",
        "1e031dda2fbe03d1792170a0f3009cee",
    ));
    let mut cipher = ctr::Ctr32BE::<aes::Aes128>::new((&key).into(), (&iv).into());
    cipher.apply_keystream(&mut data);
    assert_eq!(data, expected);

    // apply_keystream uses the same cipher with block_iv: its first two
    // keystream blocks are AES_k(iv) and AES_k(iv + 1).
    let aes = aes::Aes128::new((&key).into());
    let iv = block_iv(&file(), 9).unwrap();
    let mut ks = [0u8; 32];
    apply_keystream(&DataKey::from_bytes(key), &file(), 9, &mut ks).unwrap();
    for (n, chunk) in ks.chunks(16).enumerate() {
        let mut block = iv;
        block[15] = n as u8;
        let mut block = block.into();
        aes.encrypt_block(&mut block);
        assert_eq!(chunk, &block[..]);
    }
    // And the first NIST block, from its IV alone.
    let mut first = aes::Block::clone_from_slice(&hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"));
    aes.encrypt_block(&mut first);
    let ct: Vec<u8> = first
        .iter()
        .zip(hex("6bc1bee22e409f96e93d7e117393172a"))
        .map(|(k, p)| k ^ p)
        .collect();
    assert_eq!(ct, hex("874d6191b620e3261bef6864990db6ce"));
}

#[test]
fn data_key_debug_hides_bytes() {
    let key = DataKey::from_bytes([0xab; 16]);
    let shown = format!("{key:?}");
    assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"));
    assert_ne!(DataKey::generate().unwrap(), DataKey::generate().unwrap());
}

// ------------------------------------------------------------- checksums

#[test]
fn checksums_verify() {
    let data = b"stored bytes".to_vec();
    let c = checksum(&data);
    assert!(matches!(c, exnode::Checksum::Blake3(_)));
    assert_eq!(c.bytes(), blake3::hash(&data).as_bytes());
    assert!(verify(&data, &c));
    assert!(!verify(b"stored bytez", &c));
    let mut flipped = *c.bytes();
    flipped[31] ^= 1;
    assert!(!verify(&data, &exnode::Checksum::Blake3(flipped)));

    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &data)
        .as_ref()
        .try_into()
        .unwrap();
    assert!(verify(&data, &exnode::Checksum::Sha256(sha)));
    assert!(!verify(&data, &exnode::Checksum::Sha256(*c.bytes())));
    assert!(!verify(&data, &exnode::Checksum::Blake3(sha)));
}

#[test]
fn placed_checksums_bind_the_bytes_to_their_range_and_share() {
    let data = b"stored bytes of block 3".to_vec();
    let at = |offset, share: Option<(u32, u16)>| exnode::Mapping {
        logical_offset: offset,
        logical_length: 4096,
        alloc_length: data.len() as u64,
        share: share.map(|(group, index)| exnode::Share { group, index }),
        ..Default::default()
    };
    let mut m = at(12288, None);
    m.checksum = Some(checksum_at(&m.place(), &data));
    assert_eq!(m.checksum.unwrap().algorithm(), "blake3-placed");
    assert!(verify_mapping(&m, &data));
    assert!(!verify_mapping(&m, b"stored bytes of block 4"));
    // The exact input documented in docs/exnode.md.
    let mut input = b"lors exnode mapping checksum v1\0".to_vec();
    input.extend_from_slice(&12288u64.to_be_bytes());
    input.extend_from_slice(&4096u64.to_be_bytes());
    input.push(0);
    input.extend_from_slice(&(data.len() as u64).to_be_bytes());
    input.extend_from_slice(&data);
    assert_eq!(m.checksum.unwrap().bytes(), blake3::hash(&input).as_bytes());
    // The same bytes and checksum moved to another range, length or share
    // no longer match.
    for (offset, len, share) in [
        (0, 4096, None),
        (12288, 4095, None),
        (12288, 4096, Some((3, 0))),
    ] {
        let mut moved = at(offset, share);
        moved.logical_length = len;
        moved.checksum = m.checksum;
        assert!(!verify_mapping(&moved, &data), "{offset} {len} {share:?}");
    }
    let mut s0 = at(0, Some((0, 0)));
    s0.checksum = Some(checksum_at(&s0.place(), &data));
    let mut s1 = at(0, Some((0, 1)));
    s1.checksum = s0.checksum;
    assert!(verify_mapping(&s0, &data) && !verify_mapping(&s1, &data));
    // An unbound checksum (older exNodes) checks the bytes only; none: no check.
    let mut old = at(0, None);
    old.checksum = Some(checksum(&data));
    assert!(verify_mapping(&old, &data) && !verify_mapping(&old, b"other"));
    old.checksum = None;
    assert!(verify_mapping(&old, b"anything"));
    // `verify` alone cannot check a placed checksum.
    assert!(!verify(&data, &m.checksum.unwrap()));
}

// ----------------------------------------------------------- key wrapping

fn ctx(key_id: &str) -> WrapContext<'_> {
    WrapContext {
        file: file(),
        key_id,
    }
}

#[test]
fn wrap_round_trip() {
    let alice = KeyPair::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let text = wrap(&key, alice.public(), &ctx("k1")).unwrap();
    assert!(text.starts_with("x25519-v1 "));
    assert!(text.len() < 4096);
    assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)));
    assert_eq!(unwrap(&text, &alice, &ctx("k1")).unwrap(), key);
    // Each wrap uses a fresh ephemeral key.
    assert_ne!(text, wrap(&key, alice.public(), &ctx("k1")).unwrap());
}

#[test]
fn unwrap_rejections() {
    let alice = KeyPair::generate().unwrap();
    let bob = KeyPair::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let text = wrap(&key, alice.public(), &ctx("k1")).unwrap();
    let unwrap_err = |t: &str, kp: &KeyPair, c: &WrapContext<'_>| unwrap(t, kp, c).unwrap_err();

    // Wrong recipient.
    assert!(matches!(
        unwrap_err(&text, &bob, &ctx("k1")),
        CryptoError::Unwrap
    ));
    // Wrong context: file, key id.
    let mut c = ctx("k1");
    c.file = Uuid::nil();
    assert!(matches!(unwrap_err(&text, &alice, &c), CryptoError::Unwrap));
    assert!(matches!(
        unwrap_err(&text, &alice, &ctx("k2")),
        CryptoError::Unwrap
    ));
    // Tampered: every character of the two base64 words changed in turn.
    let words: Vec<&str> = text.split(' ').collect();
    for w in 1..3 {
        for i in 0..words[w].len() {
            let mut chars: Vec<char> = words[w].chars().collect();
            if chars[i] == '=' {
                continue;
            }
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let mut parts = words.clone();
            let changed: String = chars.into_iter().collect();
            parts[w] = &changed;
            assert!(unwrap(&parts.join(" "), &alice, &ctx("k1")).is_err());
        }
    }
    // Low-order ephemeral key (all zeros): the shared secret is zero.
    let zero = format!("x25519-v1 {} {}", "A".repeat(43) + "=", words[2]);
    assert!(matches!(
        unwrap_err(&zero, &alice, &ctx("k1")),
        CryptoError::Unwrap
    ));
    // Bad base64, wrong lengths, wrong shape, unknown prefix.
    let bad = [
        format!("x25519-v1 {}! {}", &words[1][..43], words[2]),
        format!("x25519-v1 {} {}", words[1], "*".repeat(44)),
        format!("x25519-v1 {} {}", &words[1][..40], words[2]),
        format!("x25519-v1 {} {}AAAA", words[1], words[2]),
        format!("x25519-v1 {} {}", words[1], &words[2][..20]),
        format!("x25519-v1 {}", words[1]),
        format!("{text} extra"),
        format!("{text} "),
        format!("x25519-v1  {} {}", words[1], words[2]),
        String::new(),
        "x".repeat(5000),
    ];
    for t in &bad {
        assert!(
            matches!(
                unwrap_err(t, &alice, &ctx("k1")),
                CryptoError::Malformed { .. } | CryptoError::UnknownFormat(_)
            ),
            "{t:?}"
        );
    }
    for t in [
        text.replacen("x25519-v1", "x25519-v2", 1),
        text.replacen("x25519-v1", "X25519-V1", 1),
    ] {
        assert!(matches!(
            unwrap_err(&t, &alice, &ctx("k1")),
            CryptoError::UnknownFormat(_)
        ));
    }
    // A low-order recipient key is refused when wrapping.
    assert!(matches!(
        wrap(&key, &PublicKey::from_bytes([0; 32]), &ctx("k1")),
        Err(CryptoError::WeakPublicKey)
    ));
}

// --------------------------------------------------------------- key files

#[test]
fn public_key_text() {
    let kp = KeyPair::generate().unwrap();
    let text = kp.public().to_text();
    assert!(text.starts_with("x25519 ") && text.len() == 7 + 44);
    assert_eq!(&PublicKey::parse(&text).unwrap(), kp.public());
    assert_eq!(
        &PublicKey::parse(&format!("{text}\n")).unwrap(),
        kp.public()
    );
    let b64 = &text[7..];
    for bad in [
        String::new(),
        "x25519".to_string(),
        format!("x25519  {b64}"),
        format!("ed25519 {b64}"),
        format!("x25519:{b64}"),
        format!("x25519 {}", &b64[..40]),
        format!("x25519 {b64}AAAA"),
        format!("x25519 {}!", &b64[..43]),
        format!("x25519 {} x", b64),
    ] {
        assert!(PublicKey::parse(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn key_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x25519.pem");
    let kp = KeyPair::generate().unwrap();
    write_private_key(&path, &kp).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("-----BEGIN LORS X25519 PRIVATE KEY-----"));
    let back = read_private_key(&path).unwrap();
    assert_eq!(back.public(), kp.public());
    assert!(!format!("{back:?}").contains(&text[40..60]));

    // A wrap for the original unwraps with the key read back.
    let key = DataKey::generate().unwrap();
    let wrapped = wrap(&key, kp.public(), &ctx("k")).unwrap();
    assert_eq!(unwrap(&wrapped, &back, &ctx("k")).unwrap(), key);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = read_private_key(&path).unwrap_err();
    assert!(err.to_string().contains("644"), "{err}");

    // Malformed PEM contents.
    assert!(KeyPair::from_pem(&text.replace("LORS X25519", "OTHER")).is_err());
    let short = pem::encode(&pem::Pem::new("LORS X25519 PRIVATE KEY", vec![1u8; 31]));
    assert!(KeyPair::from_pem(&short).is_err());
    assert!(KeyPair::from_pem("not pem").is_err());
    assert!(read_private_key(&dir.path().join("missing")).is_err());
}
