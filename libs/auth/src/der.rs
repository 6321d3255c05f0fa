//! Small DER helpers for what yasna and x509-parser do not cover.

/// The contents of a DER SEQUENCE (its header stripped).
pub fn sequence_contents(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// DER contents of an OBJECT IDENTIFIER under `2.25` (a UUID OID, RFC 4122
/// section 4.3 / ITU-T X.667), whose last arc does not fit in a u64.
pub fn uuid_oid(uuid: u128) -> Vec<u8> {
    let mut out = vec![40 * 2 + 25];
    push_base128(&mut out, uuid);
    out
}

/// DER contents of an OBJECT IDENTIFIER given by arcs that fit in u64.
pub fn oid_bytes(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    if let [a, b, rest @ ..] = arcs {
        push_base128(&mut out, u128::from(a * 40 + b));
        for arc in rest {
            push_base128(&mut out, u128::from(*arc));
        }
    }
    out
}

fn push_base128(out: &mut Vec<u8>, mut v: u128) {
    let mut groups = Vec::new();
    loop {
        groups.push((v & 0x7f) as u8);
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for (i, g) in groups.iter().enumerate().rev() {
        out.push(if i == 0 { *g } else { g | 0x80 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_oid_encodes_base128() {
        // 2.25.1 and 2.25.128
        assert_eq!(uuid_oid(1), vec![0x69, 0x01]);
        assert_eq!(uuid_oid(128), vec![0x69, 0x81, 0x00]);
    }

    #[test]
    fn sequence_contents_checks_length() {
        assert_eq!(sequence_contents(&[0x30, 2, 5, 0]), Some(&[5u8, 0][..]));
        assert_eq!(sequence_contents(&[0x30, 3, 5, 0]), None);
        assert_eq!(sequence_contents(&[0x31, 0]), None);
        let mut long = vec![0x30, 0x81, 200];
        long.extend(std::iter::repeat_n(1, 200));
        assert_eq!(sequence_contents(&long).map(<[u8]>::len), Some(200));
    }
}
