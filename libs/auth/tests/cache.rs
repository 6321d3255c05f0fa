//! `IdentityCache`: answers repeated chains from the cache, never caches a
//! refusal, and stops answering once the credential or the TTL expires.

mod common;

use common::{Grid, ProxySpec};
use ibp_auth::cache::IdentityCache;

#[test]
fn caches_successes_within_validity_and_ttl() {
    let grid = Grid::new();
    let chain = grid.chain(&ProxySpec::with_attributes(grid.ext()));
    let cache = IdentityCache::new(16, 60);
    let now = grid.now;
    let id = cache
        .peer_identity(Some(&chain), &grid.trust, now)
        .unwrap()
        .unwrap();
    assert_eq!(id.vo_id, "vo1:0001");
    assert_eq!(cache.len(), 1);
    // Same bytes: same identity (from the cache).
    let again = cache
        .peer_identity(Some(&chain), &grid.trust, now + 1)
        .unwrap()
        .unwrap();
    assert_eq!(again, id);
    // No chain: no identity.
    assert!(cache
        .peer_identity(None, &grid.trust, now)
        .unwrap()
        .is_none());
    // Past the credential's expiry (and the clock-skew allowance) the chain is verified again, and refused.
    assert!(cache
        .peer_identity(Some(&chain), &grid.trust, id.not_after + 1000)
        .is_err());
    // A clock that went backwards is not answered from the cache either
    // (the verification runs again; at that time the attributes are not
    // yet valid).
    assert!(cache
        .peer_identity(Some(&chain), &grid.trust, now - 3600)
        .is_err());
}

#[test]
fn never_caches_refusals_and_ttl_bounds_reuse() {
    let grid = Grid::new();
    let good = grid.chain(&ProxySpec::with_attributes(grid.ext()));
    let bare = grid.chain(&ProxySpec::new());
    let cache = IdentityCache::new(1, 10);
    assert!(cache
        .peer_identity(Some(&bare), &grid.trust, grid.now)
        .is_err());
    assert!(cache.is_empty());
    cache
        .peer_identity(Some(&good), &grid.trust, grid.now)
        .unwrap();
    // An empty trust store refuses: inside the TTL the cache still answers
    // (the trust store of a service does not change while it runs) ...
    let empty = ibp_auth::TrustStore::new();
    assert!(cache
        .peer_identity(Some(&good), &empty, grid.now + 5)
        .is_ok());
    // ... and after the TTL the chain is verified again.
    assert!(cache
        .peer_identity(Some(&good), &empty, grid.now + 11)
        .is_err());
}
