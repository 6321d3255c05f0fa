//! Erasure coding of one block (Reed-Solomon, `reed-solomon-simd`).
//!
//! A block of `len` bytes (ciphertext when the file is encrypted) is split
//! into `k` data shares of [`shard_size`] bytes, the last padded with zeros,
//! and `m` parity shares of the same size are computed; any `k` of the
//! `k + m` rebuild the block. One block is one exNode `ec_group`.

use std::collections::BTreeMap;

/// Largest `k + m` (the exNode format's limit).
pub const MAX_SHARES: usize = exnode::MAX_EC_SHARES;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("erasure coding {k}+{m} is not supported (k ≥ 1, m ≥ 1, k + m ≤ {MAX_SHARES})")]
    Unsupported { k: usize, m: usize },
    #[error("only {have} of the {k} shares needed to rebuild the block")]
    TooFewShares { have: usize, k: usize },
    #[error("Reed-Solomon: {0}")]
    Rs(String),
}

/// Checks a `k+m` scheme.
pub fn check(k: usize, m: usize) -> Result<(), CodecError> {
    if k == 0
        || m == 0
        || k + m > MAX_SHARES
        || !reed_solomon_simd::ReedSolomonEncoder::supports(k, m)
    {
        return Err(CodecError::Unsupported { k, m });
    }
    Ok(())
}

/// Size of each share of a `len`-byte block split in `k`: ⌈len / k⌉
/// rounded up to an even number (what the codec needs), at least 2.
pub fn shard_size(len: u64, k: usize) -> u64 {
    let s = len.div_ceil(k.max(1) as u64).max(2);
    s + (s & 1)
}

/// The `k` data shares and `m` parity shares of `block`.
pub fn encode(block: &[u8], k: usize, m: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    check(k, m)?;
    let size = shard_size(block.len() as u64, k) as usize;
    let mut shares: Vec<Vec<u8>> = (0..k)
        .map(|i| {
            let start = (i * size).min(block.len());
            let end = ((i + 1) * size).min(block.len());
            let mut s = Vec::with_capacity(size);
            s.extend_from_slice(&block[start..end]);
            s.resize(size, 0);
            s
        })
        .collect();
    let parity =
        reed_solomon_simd::encode(k, m, &shares).map_err(|e| CodecError::Rs(e.to_string()))?;
    shares.extend(parity);
    Ok(shares)
}

/// Rebuilds a `len`-byte block from at least `k` shares (`index → bytes`,
/// indices `0..k` data, `k..k+m` parity, each `shard_size(len, k)` long).
pub fn decode(
    len: u64,
    k: usize,
    m: usize,
    shares: BTreeMap<usize, Vec<u8>>,
) -> Result<Vec<u8>, CodecError> {
    check(k, m)?;
    let size = shard_size(len, k) as usize;
    if shares.len() < k {
        return Err(CodecError::TooFewShares {
            have: shares.len(),
            k,
        });
    }
    if shares.values().any(|s| s.len() != size) || shares.keys().any(|&i| i >= k + m) {
        return Err(CodecError::Rs("a share has the wrong size or index".into()));
    }
    let mut data: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut parity: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, s) in shares {
        if i < k {
            data.insert(i, s);
        } else {
            parity.push((i - k, s));
        }
    }
    if data.len() < k {
        let restored = reed_solomon_simd::decode(
            k,
            m,
            data.iter().map(|(i, s)| (*i, s.as_slice())),
            parity.iter().map(|(i, s)| (*i, s.as_slice())),
        )
        .map_err(|e| CodecError::Rs(e.to_string()))?;
        data.extend(restored);
    }
    let mut out = Vec::with_capacity(k * size);
    for i in 0..k {
        let s = data
            .get(&i)
            .ok_or(CodecError::TooFewShares { have: i, k })?;
        out.extend_from_slice(s);
    }
    out.truncate(len as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn every_k_subset_rebuilds() {
        for len in [1usize, 2, 3, 1000, 4097] {
            let b = block(len);
            let shares = encode(&b, 2, 1).unwrap();
            assert_eq!(shares.len(), 3);
            for drop in 0..3 {
                let have: BTreeMap<usize, Vec<u8>> = shares
                    .iter()
                    .cloned()
                    .enumerate()
                    .filter(|(i, _)| *i != drop)
                    .collect();
                assert_eq!(
                    decode(len as u64, 2, 1, have).unwrap(),
                    b,
                    "len {len} drop {drop}"
                );
            }
        }
    }

    #[test]
    fn four_plus_two_survives_two_losses() {
        let b = block(100_003);
        let shares = encode(&b, 4, 2).unwrap();
        let have: BTreeMap<usize, Vec<u8>> = [1usize, 3, 4, 5]
            .iter()
            .map(|&i| (i, shares[i].clone()))
            .collect();
        assert_eq!(decode(b.len() as u64, 4, 2, have).unwrap(), b);
    }

    #[test]
    fn too_few_and_bad_schemes_are_errors() {
        let b = block(10);
        let shares = encode(&b, 2, 1).unwrap();
        let one: BTreeMap<usize, Vec<u8>> = [(2usize, shares[2].clone())].into_iter().collect();
        assert!(matches!(
            decode(10, 2, 1, one),
            Err(CodecError::TooFewShares { have: 1, k: 2 })
        ));
        assert!(matches!(
            encode(&b, 0, 1),
            Err(CodecError::Unsupported { .. })
        ));
        assert!(matches!(
            encode(&b, 2, 0),
            Err(CodecError::Unsupported { .. })
        ));
        let short: BTreeMap<usize, Vec<u8>> = [(0usize, vec![0u8; 3]), (1, vec![0u8; 3])]
            .into_iter()
            .collect();
        assert!(decode(10, 2, 1, short).is_err());
    }

    #[test]
    fn shard_sizes_are_even_and_cover_the_block() {
        for (len, k) in [
            (0u64, 2usize),
            (1, 2),
            (5, 2),
            (7, 3),
            (1 << 20, 2),
            (3_000_001, 4),
        ] {
            let s = shard_size(len, k);
            assert_eq!(s % 2, 0);
            assert!(s * k as u64 >= len);
            assert!(s >= 2);
        }
    }
}
