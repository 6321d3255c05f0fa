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
/// (2.25.213140855283283373196766520187213562637; no registration needed).
pub const VO_ATTRIBUTES_UUID: u128 = 0xa05a_4c1b_6e1f_4b8e_9d3c_2f71_0e5b_d40d;

/// DER contents of the VO attribute extension's OID.
pub fn vo_attributes_oid() -> Vec<u8> {
    crate::der::uuid_oid(VO_ATTRIBUTES_UUID)
}

/// DER contents of an OID given by arcs that fit in u64.
pub fn oid_bytes(arcs: &[u64]) -> Vec<u8> {
    crate::der::oid_bytes(arcs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_oid_bytes() {
        // 1.3.6.1.5.5.7.1.14 = 2B 06 01 05 05 07 01 0E
        assert_eq!(
            super::oid_bytes(super::PROXY_CERT_INFO),
            vec![0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x0e]
        );
    }
}
