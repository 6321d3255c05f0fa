//! Erasure coding of one block (Reed-Solomon, `reed-solomon-simd`).
//!
//! A block of `len` bytes (ciphertext when the file is encrypted) is split
//! into `k` data shares of [`shard_size`] bytes, the last padded with zeros,
//! and `m` parity shares of the same size are computed; any `k` of the
//! `k + m` rebuild the block. One block is one exNode `ec_group`.
//!
//! Without copies: an upload codes a block in place ([`encode_in_place`]):
//! the block is padded with zeros to `k × shard_size` and the `m` parity
//! shares are appended to it, so every share is a slice of the one buffer
//! (recycled block after block). The codec works on [`SEGMENT`] bytes of
//! each share at a time (Reed-Solomon codes each position of the shares
//! independently, so the shares are exactly those of coding whole shares),
//! with encoders and decoders kept for reuse ([`KEPT_CODERS`] of each at
//! most): their working space is a few segments per coder in use, not a
//! block's worth, and stays in the CPU's cache. A `k+1` code's parity is
//! the XOR of the data shares (the codec's own parity for one recovery
//! share), computed without an encoder. A download with every data
//! share needs no Reed-Solomon work at all ([`restore`] returns at once).

use std::collections::BTreeMap;
use std::sync::Mutex;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Largest `k + m` (the exNode format's limit).
pub const MAX_SHARES: usize = exnode::MAX_EC_SHARES;

/// Bytes of each share coded at a time: a multiple of 64 (the codec's
/// unit), so the shares come out exactly as if coded whole.
pub const SEGMENT: usize = 64 << 10;

/// Encoders (and decoders) kept for reuse between blocks; more in use at
/// once are made and dropped.
pub const KEPT_CODERS: usize = 8;

static ENCODERS: Mutex<Vec<ReedSolomonEncoder>> = Mutex::new(Vec::new());
static DECODERS: Mutex<Vec<ReedSolomonDecoder>> = Mutex::new(Vec::new());

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("erasure coding {k}+{m} is not supported (k ≥ 1, m ≥ 1, k + m ≤ {MAX_SHARES})")]
    Unsupported { k: usize, m: usize },
    #[error("only {have} of the {k} shares needed to rebuild the block")]
    TooFewShares { have: usize, k: usize },
    #[error("Reed-Solomon: {0}")]
    Rs(String),
}

fn rs(e: reed_solomon_simd::Error) -> CodecError {
    CodecError::Rs(e.to_string())
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

/// Pads `block` with zeros to `k × shard_size(len, k)` bytes and returns
/// the share size: data share `i` is then `block[i × size..(i + 1) × size]`
/// (exactly the share [`encode`] makes). Only the padding is written (for
/// a block that `k` divides into even shares, nothing).
pub fn pad_to_shares(block: &mut Vec<u8>, k: usize) -> usize {
    let size = shard_size(block.len() as u64, k) as usize;
    block.resize(k * size, 0);
    size
}

/// The `(start, end)` of each segment of a share of `size` bytes.
fn segments(size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..size.div_ceil(SEGMENT)).map(move |s| (s * SEGMENT, ((s + 1) * SEGMENT).min(size)))
}

/// Computes the `m` parity shares of the `k` data shares `data` (`k ×
/// size` bytes, share `i` at `i × size`, `size` even) into `parity` (`m ×
/// size` bytes, parity share `j` at `j × size`).
pub fn encode_parity(data: &[u8], k: usize, m: usize, parity: &mut [u8]) -> Result<(), CodecError> {
    check(k, m)?;
    let size = data.len() / k;
    if data.is_empty() || data.len() % k != 0 || size % 2 != 0 || parity.len() != m * size {
        return Err(CodecError::Rs(format!(
            "{} data bytes and {} parity bytes are not {k}+{m} shares",
            data.len(),
            parity.len()
        )));
    }
    if m == 1 {
        xor_parity(data, k, size, parity);
        return Ok(());
    }
    let mut enc = ENCODERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let r = (|| {
        for (a, b) in segments(size) {
            let e = match enc.as_mut() {
                Some(e) => {
                    e.reset(k, m, b - a).map_err(rs)?;
                    e
                }
                None => enc.insert(ReedSolomonEncoder::new(k, m, b - a).map_err(rs)?),
            };
            for i in 0..k {
                e.add_original_shard(&data[i * size + a..i * size + b])
                    .map_err(rs)?;
            }
            let out = e.encode().map_err(rs)?;
            for (j, r) in out.recovery_iter().enumerate() {
                parity[j * size + a..j * size + b].copy_from_slice(r);
            }
        }
        Ok(())
    })();
    if let Some(e) = enc {
        let mut kept = ENCODERS.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_CODERS {
            kept.push(e);
        }
    }
    r
}

/// The one parity share of a `k+1` code: with a single recovery share,
/// `reed-solomon-simd`'s parity is the XOR of the data shares
/// (`single_parity_is_the_codecs` holds it to the codec for every `k`), so
/// it is computed in one pass over the shares, segment by segment, without
/// copying them into an encoder's work space.
fn xor_parity(data: &[u8], k: usize, size: usize, parity: &mut [u8]) {
    for (a, b) in segments(size) {
        let p = &mut parity[a..b];
        let first = &data[a..b];
        match k {
            1 => p.copy_from_slice(first),
            _ => xor_of(p, first, &data[size + a..size + b]),
        }
        for i in 2..k {
            xor_into(p, &data[i * size + a..i * size + b]);
        }
    }
}

/// `out = x ^ y` (equal lengths), 64 bytes at a time so the compiler
/// uses vector registers.
fn xor_of(out: &mut [u8], x: &[u8], y: &[u8]) {
    let mut o = out.chunks_exact_mut(64);
    let (mut xs, mut ys) = (x.chunks_exact(64), y.chunks_exact(64));
    for ((o, x), y) in (&mut o).zip(&mut xs).zip(&mut ys) {
        for i in 0..64 {
            o[i] = x[i] ^ y[i];
        }
    }
    let tail = o.into_remainder().iter_mut().zip(xs.remainder());
    for ((o, x), y) in tail.zip(ys.remainder()) {
        *o = x ^ y;
    }
}

/// `out ^= x` (equal lengths).
fn xor_into(out: &mut [u8], x: &[u8]) {
    let mut o = out.chunks_exact_mut(64);
    let mut xs = x.chunks_exact(64);
    for (o, x) in (&mut o).zip(&mut xs) {
        for i in 0..64 {
            o[i] ^= x[i];
        }
    }
    for (o, x) in o.into_remainder().iter_mut().zip(xs.remainder()) {
        *o ^= x;
    }
}

/// Erasure codes `block` in place: pads it to its `k` data shares
/// ([`pad_to_shares`]) and appends its `m` parity shares, so that share
/// `j` (data or parity) is `block[j × size..(j + 1) × size]`; returns
/// `size`. With a capacity of `(k + m) × shard_size` reserved beforehand
/// (what [`coded_capacity`] gives), the block is never reallocated.
pub fn encode_in_place(block: &mut Vec<u8>, k: usize, m: usize) -> Result<usize, CodecError> {
    encode_in_place_from(block, 0, k, m)
}

/// [`encode_in_place`] for the block `buf[lead..]`: share `j` is then
/// `buf[lead + j × size..lead + (j + 1) × size]`; the `lead` bytes before
/// the block are left as they are.
pub fn encode_in_place_from(
    buf: &mut Vec<u8>,
    lead: usize,
    k: usize,
    m: usize,
) -> Result<usize, CodecError> {
    check(k, m)?;
    let lead = lead.min(buf.len());
    let size = shard_size((buf.len() - lead) as u64, k) as usize;
    buf.resize(lead + (k + m) * size, 0);
    let (data, parity) = buf[lead..].split_at_mut(k * size);
    encode_parity(data, k, m, parity)?;
    Ok(size)
}

/// The capacity a block of at most `block_size` bytes needs to be coded
/// in place ([`encode_in_place`]): `(k + m) × shard_size(block_size, k)`.
pub fn coded_capacity(block_size: u64, k: usize, m: usize) -> usize {
    (k + m) * shard_size(block_size, k) as usize
}

/// The `k` data shares and `m` parity shares of `block`, each a new
/// buffer (for callers that keep shares apart, e.g. a repair; uploads use
/// [`encode_in_place`]).
pub fn encode(block: &[u8], k: usize, m: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    check(k, m)?;
    let mut coded = Vec::with_capacity(coded_capacity(block.len() as u64, k, m));
    coded.extend_from_slice(block);
    let size = encode_in_place(&mut coded, k, m)?;
    Ok(coded.chunks(size).map(<[u8]>::to_vec).collect())
}

/// Checks the shares given to [`decode`]/[`restore`]: at least `k`, each
/// of `size` bytes, indices below `k + m`.
fn check_shares<S: AsRef<[u8]>>(
    k: usize,
    m: usize,
    size: usize,
    shares: &BTreeMap<usize, S>,
) -> Result<(), CodecError> {
    check(k, m)?;
    if shares.len() < k {
        return Err(CodecError::TooFewShares {
            have: shares.len(),
            k,
        });
    }
    if shares.values().any(|s| s.as_ref().len() != size) || shares.keys().any(|&i| i >= k + m) {
        return Err(CodecError::Rs("a share has the wrong size or index".into()));
    }
    Ok(())
}

/// Rebuilds the data shares missing from `shares` (`index → bytes`,
/// indices `0..k` data, `k..k+m` parity, each `size` bytes), adding them
/// to `shares`; with every data share there, does nothing (no Reed-Solomon
/// work). Restored shares are built in buffers from `buffer` (e.g. a
/// pool's recycled ones).
pub fn restore(
    k: usize,
    m: usize,
    size: usize,
    shares: &mut BTreeMap<usize, Vec<u8>>,
    mut buffer: impl FnMut() -> Vec<u8>,
) -> Result<(), CodecError> {
    check_shares(k, m, size, shares)?;
    let missing: Vec<usize> = (0..k).filter(|i| !shares.contains_key(i)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut restored: Vec<Vec<u8>> = missing
        .iter()
        .map(|_| {
            let mut b = buffer();
            b.clear();
            b.reserve_exact(size);
            b
        })
        .collect();
    let mut dec = DECODERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let r = (|| {
        for (a, b) in segments(size) {
            let d = match dec.as_mut() {
                Some(d) => {
                    d.reset(k, m, b - a).map_err(rs)?;
                    d
                }
                None => dec.insert(ReedSolomonDecoder::new(k, m, b - a).map_err(rs)?),
            };
            for (&i, s) in shares.iter() {
                if i < k {
                    d.add_original_shard(i, &s[a..b]).map_err(rs)?;
                } else {
                    d.add_recovery_shard(i - k, &s[a..b]).map_err(rs)?;
                }
            }
            let out = d.decode().map_err(rs)?;
            for (&i, r) in missing.iter().zip(restored.iter_mut()) {
                let seg = out
                    .restored_original(i)
                    .ok_or_else(|| CodecError::Rs(format!("share {i} was not restored")))?;
                r.extend_from_slice(seg);
            }
        }
        Ok(())
    })();
    if let Some(d) = dec {
        let mut kept = DECODERS.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_CODERS {
            kept.push(d);
        }
    }
    r?;
    shares.extend(missing.into_iter().zip(restored));
    Ok(())
}

/// Rebuilds a `len`-byte block from at least `k` shares (`index → bytes`,
/// indices `0..k` data, `k..k+m` parity, each `shard_size(len, k)` long).
pub fn decode(
    len: u64,
    k: usize,
    m: usize,
    mut shares: BTreeMap<usize, Vec<u8>>,
) -> Result<Vec<u8>, CodecError> {
    let size = shard_size(len, k) as usize;
    restore(k, m, size, &mut shares, Vec::new)?;
    let mut out = Vec::with_capacity(k * size);
    for i in 0..k {
        let s = shares
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

    /// The encoder before shares became slices of the block (one fresh
    /// buffer per share, whole shares coded at once): the reference the
    /// on-depot format is held to.
    fn reference_encode(block: &[u8], k: usize, m: usize) -> Vec<Vec<u8>> {
        let size = shard_size(block.len() as u64, k) as usize;
        let mut shares: Vec<Vec<u8>> = (0..k)
            .map(|i| {
                let start = (i * size).min(block.len());
                let end = ((i + 1) * size).min(block.len());
                let mut s = block[start..end].to_vec();
                s.resize(size, 0);
                s
            })
            .collect();
        let parity = reed_solomon_simd::encode(k, m, &shares).unwrap();
        shares.extend(parity);
        shares
    }

    /// Every subset of `n` indices of size `k`.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|b| b.count_ones() as usize == k)
            .map(|b| (0..n).filter(|i| b & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn shares_are_the_old_encoders_and_every_k_subset_rebuilds() {
        let lens = [
            0usize,
            1,
            2,
            3,
            63,
            64,
            65,
            1000,
            4097,
            SEGMENT - 2,
            SEGMENT,
            SEGMENT + 6,
            2 * SEGMENT + 130,
            3 * SEGMENT + 1,
            (1 << 20) + 7,
        ];
        for (k, m) in [(1usize, 1usize), (2, 1), (3, 2), (4, 2), (2, 3), (5, 3)] {
            for len in lens {
                let b = block(len);
                let shares = encode(&b, k, m).unwrap();
                assert_eq!(
                    shares,
                    reference_encode(&b, k, m),
                    "{k}+{m}, {len} bytes: shares differ from the old encoder's"
                );
                // In place: the padded block is the data shares.
                let mut padded = b.clone();
                let size = pad_to_shares(&mut padded, k);
                assert_eq!(size as u64, shard_size(len as u64, k));
                for i in 0..k {
                    assert_eq!(&padded[i * size..(i + 1) * size], &shares[i][..]);
                }
                // In place, into a dirty recycled buffer: the same shares.
                let mut dirty = vec![0xAAu8; coded_capacity(len as u64, k, m) + 100];
                dirty.clear();
                dirty.extend_from_slice(&b);
                assert_eq!(encode_in_place(&mut dirty, k, m).unwrap(), size);
                assert_eq!(dirty.len(), (k + m) * size);
                for (j, s) in shares.iter().enumerate() {
                    assert_eq!(&dirty[j * size..(j + 1) * size], &s[..], "share {j}");
                }
                for have in subsets(k + m, k) {
                    let given: BTreeMap<usize, Vec<u8>> =
                        have.iter().map(|&i| (i, shares[i].clone())).collect();
                    assert_eq!(
                        decode(len as u64, k, m, given).unwrap(),
                        b,
                        "{k}+{m}, {len} bytes from shares {have:?}"
                    );
                }
            }
        }
    }

    /// `k+1` parity is computed as a XOR ([`xor_parity`]); it must stay
    /// the codec's own parity, share for share, for small and large `k`
    /// up to the format's limit and sizes around the 64-byte unit and the segment.
    #[test]
    fn single_parity_is_the_codecs() {
        for k in (1..=16).chain([31, 64, 127, MAX_SHARES - 1]) {
            for size in [2usize, 62, 64, 66, 1000, SEGMENT, SEGMENT + 70] {
                let shares: Vec<Vec<u8>> = (0..k)
                    .map(|i| {
                        (0..size)
                            .map(|j| ((i * 7919 + j * 31 + i * j) % 256) as u8)
                            .collect()
                    })
                    .collect();
                let expected = reed_solomon_simd::encode(k, 1, &shares).unwrap();
                let data = shares.concat();
                let mut parity = vec![0x5Au8; size];
                encode_parity(&data, k, 1, &mut parity).unwrap();
                assert_eq!(parity, expected[0], "{k}+1, shares of {size} bytes");
            }
        }
    }

    #[test]
    fn restore_adds_only_the_missing_data_shares() {
        let b = block(3 * SEGMENT + 10);
        let shares = encode(&b, 2, 1).unwrap();
        let size = shares[0].len();
        // Every data share there: nothing to do, no buffer taken.
        let mut all: BTreeMap<usize, Vec<u8>> =
            [(0usize, shares[0].clone()), (1, shares[1].clone())]
                .into_iter()
                .collect();
        restore(2, 1, size, &mut all, || panic!("no buffer needed")).unwrap();
        assert_eq!(all.len(), 2);
        // Share 0 lost: rebuilt into the buffer given.
        let mut some: BTreeMap<usize, Vec<u8>> =
            [(1usize, shares[1].clone()), (2, shares[2].clone())]
                .into_iter()
                .collect();
        restore(2, 1, size, &mut some, || vec![7u8; 5]).unwrap();
        assert_eq!(some[&0], shares[0]);
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
        // Data that is not k even shares, or the wrong number of parity
        // buffers.
        assert!(encode_parity(&[0u8; 6], 2, 1, &mut [0u8; 3]).is_err());
        assert!(encode_parity(&[0u8; 8], 2, 1, &mut []).is_err());
        assert!(encode_parity(&[], 2, 1, &mut []).is_err());
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
