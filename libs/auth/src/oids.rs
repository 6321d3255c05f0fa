//! Object identifiers.

/// `id-pe-proxyCertInfo` (RFC 3820).
pub const PROXY_CERT_INFO: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 14];
/// `id-ppl-inheritAll` (RFC 3820): the proxy has all its issuer's rights.
pub const PPL_INHERIT_ALL: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 21, 1];
/// `ecdsa-with-SHA256`.
pub const ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
/// `id-ce-keyUsage`.
pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
/// `id-at-commonName`.
pub const COMMON_NAME: &[u64] = &[2, 5, 4, 3];

/// The UUID under `2.25` that names our VO attribute extension
/// (2.25.213145329679226124152276077010734535693, UUID
/// a05a4c1b-6e1f-4b8e-9d3c-2f710e5bd40d; no registration needed).
/// docs/identity.md gives the same OID; a test checks it.
pub const VO_ATTRIBUTES_UUID: u128 = 0xa05a_4c1b_6e1f_4b8e_9d3c_2f71_0e5b_d40d;

/// DER contents of the VO attribute extension's OID.
pub fn vo_attributes_oid() -> Vec<u8> {
    crate::der::uuid_oid(VO_ATTRIBUTES_UUID)
}

/// The UUID under `2.25` that names the extension carrying the VO
/// attributes of further VOs of a multi-VO proxy
/// (2.25.246000994656522428712627927743033490466, UUID
/// b9121175-47bc-4f7a-a586-9cf79fbfbc22; docs/identity.md, "Several VOs in
/// one proxy").
pub const MORE_VO_ATTRIBUTES_UUID: u128 = 0xb912_1175_47bc_4f7a_a586_9cf7_9fbf_bc22;

/// DER contents of the further-VOs attribute extension's OID.
pub fn more_vo_attributes_oid() -> Vec<u8> {
    crate::der::uuid_oid(MORE_VO_ATTRIBUTES_UUID)
}

/// DER contents of an OID given by arcs that fit in u64.
pub fn oid_bytes(arcs: &[u64]) -> Vec<u8> {
    crate::der::oid_bytes(arcs)
}

#[cfg(test)]
mod tests {
    /// The dotted OID in the backticks after "OID " in `text`.
    fn documented_oid(text: &str) -> Option<&str> {
        let start = text.find("OID `2.25.")? + "OID `".len();
        let len = text[start..].find('`')?;
        Some(&text[start..start + len])
    }

    /// DER contents of a dotted OID, arcs of any size (the UUID arc needs
    /// 128 bits).
    fn dotted_to_der(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u128> = dotted
            .split('.')
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|e| panic!("arc {a:?} of {dotted}: {e}"))
            })
            .collect();
        assert!(arcs.len() >= 2 && arcs[0] <= 2, "{dotted}");
        let mut out = Vec::new();
        for mut v in std::iter::once(arcs[0] * 40 + arcs[1]).chain(arcs[2..].iter().copied()) {
            let mut groups = vec![(v & 0x7f) as u8];
            v >>= 7;
            while v > 0 {
                groups.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            out.extend(groups.iter().rev());
        }
        out
    }

    /// Anything built from docs/identity.md must produce the extension the
    /// code looks for.
    #[test]
    fn documented_vo_attribute_oid_is_the_constant() {
        let doc = include_str!("../../../docs/identity.md");
        let oid = documented_oid(doc).expect("docs/identity.md names the VO attribute OID");
        assert_eq!(
            oid,
            format!("2.25.{}", super::VO_ATTRIBUTES_UUID),
            "docs/identity.md"
        );
        assert_eq!(dotted_to_der(oid), super::vo_attributes_oid(), "{oid}");
        // And the comment on the constant.
        let src = include_str!("oids.rs");
        assert!(src.contains(&format!("({oid},")), "oids.rs comment");
    }

    /// The further-VOs extension's OID as docs/identity.md gives it.
    #[test]
    fn documented_more_vo_attributes_oid_is_the_constant() {
        let doc = include_str!("../../../docs/identity.md");
        let marker = "further VOs: OID `";
        let start = doc.find(marker).expect("docs/identity.md names the OID") + marker.len();
        let oid = &doc[start..start + doc[start..].find('`').unwrap()];
        assert_eq!(oid, format!("2.25.{}", super::MORE_VO_ATTRIBUTES_UUID));
        assert_eq!(dotted_to_der(oid), super::more_vo_attributes_oid(), "{oid}");
        assert!(include_str!("oids.rs").contains(&format!("({oid},")));
    }

    #[test]
    fn known_oid_bytes() {
        // 1.3.6.1.5.5.7.1.14 = 2B 06 01 05 05 07 01 0E
        assert_eq!(
            super::oid_bytes(super::PROXY_CERT_INFO),
            vec![0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x0e]
        );
    }
}
