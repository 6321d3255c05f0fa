//! MD5 and HMAC-MD5 for RADIUS only: the Response Authenticator (RFC 2865)
//! and the Message-Authenticator attribute (RFC 3579 §3.2), from the RustCrypto
//! `md-5` and `hmac` crates. MD5 is not used for anything else here.

use hmac::{Hmac, Mac};
use md5::Md5;

/// MD5 digest of the concatenation of `parts` (the tests' fake RADIUS server
/// signs its answers with it).
#[cfg(test)]
pub fn md5(parts: &[&[u8]]) -> [u8; 16] {
    use md5::Digest;
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-MD5 of `msg` under `key`.
pub fn hmac_md5(key: &[u8], msg: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = match <Hmac<Md5> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rfc1321_vectors() {
        let cases = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex(&md5(&[input.as_bytes()])), want, "{input:?}");
        }
        // Split input gives the same digest.
        assert_eq!(md5(&[b"mess", b"age digest"]), md5(&[b"message digest"]));
    }

    #[test]
    fn rfc2202_hmac_vectors() {
        assert_eq!(
            hex(&hmac_md5(&[0x0b; 16], b"Hi There")),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
        assert_eq!(
            hex(&hmac_md5(b"Jefe", b"what do ya want for nothing?")),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            hex(&hmac_md5(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
        );
    }
}
