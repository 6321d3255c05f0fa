//! The challenge a member signs with an extra certificate's key to link
//! it to their VO ID (docs/identity.md, "Linking a certificate
//! yourself"): one definition for the online CA, which issues and checks
//! it, and for `lors link-cert`, which rebuilds it and signs only what it
//! built.

/// The label the signed challenge starts with.
pub const CHALLENGE_LABEL: &[u8] = b"ibp-grid link-cert v1\0";

/// The bytes the certificate's key signs: [`CHALLENGE_LABEL`], then the VO,
/// the VO ID and the nonce each as a 4-byte big-endian length and its
/// bytes, the SHA-256 of the certificate's DER (32 bytes) and the expiry
/// (Unix seconds, 8 bytes big-endian).
pub fn challenge_bytes(
    vo: &str,
    vo_id: &str,
    cert_sha256: &[u8],
    nonce: &str,
    expires_at: i64,
) -> Vec<u8> {
    let mut out = CHALLENGE_LABEL.to_vec();
    for f in [vo.as_bytes(), vo_id.as_bytes(), nonce.as_bytes()] {
        out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(f);
    }
    out.extend_from_slice(cert_sha256);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format, byte for byte (a change breaks every deployed client).
    #[test]
    fn challenge_vector() {
        let b = challenge_bytes("vo1", "id", &[7u8; 32], "n", 0x0102);
        let mut want = b"ibp-grid link-cert v1\0".to_vec();
        want.extend_from_slice(b"\0\0\0\x03vo1\0\0\0\x02id\0\0\0\x01n");
        want.extend_from_slice(&[7u8; 32]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(b, want);
    }
}
