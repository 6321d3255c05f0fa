//! Every rejection path of `ibp-auth`, each checked for the specific
//! `AuthError` it must produce: proxies, chains, VO attributes, tokens, TLS,
//! the trust directory and secret files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{
    build_proxy, ders, handshake, name_der, Grid, HandshakeError, Pci, ProxySpec, Subject,
    COMMON_NAME, ORGANIZATION,
};
use ibp_auth::pki::Authority;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::tls::{client_config, peer_identity, server_config, ClientAuth};
use ibp_auth::tokens::{DepotGrant, FileTicket, MAX_TOKEN};
use ibp_auth::trust::TokenSigner;
use ibp_auth::{verify_chain, AuthError, ProxyCredential, TrustStore};
use ring::signature::Ed25519KeyPair;
use rustls_pki_types::CertificateDer;

fn proxy_error(r: Result<ibp_auth::Identity, AuthError>) -> String {
    match r {
        Err(AuthError::Proxy(msg)) => msg,
        other => panic!("expected AuthError::Proxy, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Sanity: the test builder makes proxies the library accepts.

#[test]
fn builder_default_proxy_verifies() {
    let g = Grid::new();
    let id = verify_chain(
        &g.chain(&ProxySpec::with_attributes(g.ext())),
        &g.trust,
        g.now,
    )
    .expect("a correct hand-built proxy verifies");
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vo_id, "vo1:0001");
}

// ---------------------------------------------------------------------------
// Proxy validity.

#[test]
fn expired_proxy_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        not_before: g.now - 290, // the user certificate starts at now - 300
        not_after: g.now - 200,  // beyond the 120 s skew
        ..ProxySpec::with_attributes(g.ext())
    };
    match verify_chain(&g.chain(&spec), &g.trust, g.now) {
        Err(AuthError::Expired { what, at, now }) => {
            assert_eq!(what, "proxy certificate");
            assert_eq!(at, g.now - 200);
            assert_eq!(now, g.now);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[test]
fn proxy_expired_within_skew_is_accepted() {
    let g = Grid::new();
    let spec = ProxySpec {
        not_before: g.now - 290,
        not_after: g.now - 60, // within the 120 s skew
        ..ProxySpec::with_attributes(g.ext())
    };
    verify_chain(&g.chain(&spec), &g.trust, g.now).expect("60 s past expiry is within the skew");
}

#[test]
fn proxy_not_yet_valid_is_refused_naming_clock_skew() {
    let g = Grid::new();
    let spec = ProxySpec {
        not_before: g.now + 600,
        not_after: g.now + 1200,
        ..ProxySpec::with_attributes(g.ext())
    };
    let err = verify_chain(&g.chain(&spec), &g.trust, g.now).unwrap_err();
    match &err {
        AuthError::NotYetValid { what, at, .. } => {
            assert_eq!(*what, "proxy certificate");
            assert_eq!(*at, g.now + 600);
        }
        other => panic!("expected NotYetValid, got {other:?}"),
    }
    assert!(err.to_string().contains("clock skew"), "{err}");
}

#[test]
fn proxy_lifetime_beyond_issuer_is_refused() {
    let g = Grid::new();
    let (_, user) = x509_parser::parse_x509_certificate(&g.user.cert_der).unwrap();
    let user_na = user.validity().not_after.timestamp();
    let spec = ProxySpec {
        not_after: user_na + 3600,
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("lifetime exceeds the issuer's"), "{msg}");
}

#[test]
fn proxy_starting_before_issuer_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        not_before: g.now - 3600, // the user certificate starts at now - 300
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("lifetime exceeds the issuer's"), "{msg}");
}

// ---------------------------------------------------------------------------
// Proxy structure.

#[test]
fn proxy_signed_by_wrong_key_is_refused() {
    let g = Grid::new();
    let (other_key, _) = common::new_p256();
    let spec = ProxySpec {
        signing_key: Some(other_key),
        ..ProxySpec::with_attributes(g.ext())
    };
    assert_eq!(
        verify_chain(&g.chain(&spec), &g.trust, g.now).unwrap_err(),
        AuthError::BadSignature {
            what: "proxy certificate"
        }
    );
}

#[test]
fn proxy_with_wrong_issuer_name_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        issuer_name: Some(name_der(&[
            (ORGANIZATION, "Test Grid"),
            (COMMON_NAME, "Mallory"),
        ])),
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(
        msg.contains("issuer name is not the next certificate's subject"),
        "{msg}"
    );
}

#[test]
fn proxy_with_subject_alt_name_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        san: true,
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(
        msg.contains("must not carry subject or issuer alternative names"),
        "{msg}"
    );
}

#[test]
fn proxy_that_is_a_ca_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        ca: true,
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("must not be a CA"), "{msg}");
}

#[test]
fn proxy_with_unknown_critical_extension_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        extra_extensions: vec![(vec![1, 3, 6, 1, 4, 1, 99999, 1], true, vec![0x05, 0x00])],
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("unknown critical extension"), "{msg}");
}

#[test]
fn proxy_with_a_repeated_extension_is_refused() {
    let g = Grid::new();
    // A second ProxyCertInfo (path length 0) beside the builder's own.
    let pci = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u32(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        1, 3, 6, 1, 5, 5, 7, 21, 1,
                    ]));
            });
        })
    });
    let spec = ProxySpec {
        extra_extensions: vec![(vec![1, 3, 6, 1, 5, 5, 7, 1, 14], true, pci)],
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("appears twice"), "{msg}");
}

#[test]
fn proxy_cert_info_not_critical_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        pci: Pci::NonCritical,
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("ProxyCertInfo is not critical"), "{msg}");
}

#[test]
fn proxy_cert_info_with_other_policy_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        // id-ppl-independent
        policy: vec![1, 3, 6, 1, 5, 5, 7, 21, 2],
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(msg.contains("unsupported proxy policy language"), "{msg}");
}

/// Without ProxyCertInfo the leaf is not a proxy, so the verifier treats it
/// as the end-entity certificate and hands `[leaf, user]` to webpki. The
/// only candidate issuer of the leaf is the user certificate, which would
/// have to act as an intermediate CA but has no basicConstraints cA, so
/// webpki refuses the path with `EndEntityUsedAsCa` (an `AuthError::Chain`).
/// NoAttributes (there are no proxies whose attributes could be used) is
/// never reached: the chain check comes first.
#[test]
fn proxy_cert_info_missing_makes_leaf_an_unverifiable_end_entity() {
    let g = Grid::new();
    let spec = ProxySpec {
        pci: Pci::Omit,
        ..ProxySpec::with_attributes(g.ext())
    };
    assert_eq!(
        verify_chain(&g.chain(&spec), &g.trust, g.now).unwrap_err(),
        AuthError::Chain("EndEntityUsedAsCa".into())
    );
}

#[test]
fn proxy_subject_with_two_extra_cns_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        subject: Subject::IssuerPlusCns(vec!["1234".into(), "5678".into()]),
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(
        msg.contains("subject is not the issuer's subject plus one CN"),
        "{msg}"
    );
}

#[test]
fn proxy_subject_with_different_organization_is_refused() {
    let g = Grid::new();
    let spec = ProxySpec {
        subject: Subject::Raw(name_der(&[
            (ORGANIZATION, "Other Grid"),
            (COMMON_NAME, "Alice"),
            (COMMON_NAME, "1234"),
        ])),
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(
        msg.contains("subject is not the issuer's subject plus one CN"),
        "{msg}"
    );
}

#[test]
fn proxy_subject_with_non_cn_last_rdn_is_refused() {
    let g = Grid::new();
    let (_, user) = x509_parser::parse_x509_certificate(&g.user.cert_der).unwrap();
    let issuer_rdns = common::sequence_contents(user.subject().as_raw()).to_vec();
    // Issuer's subject + O=1234 (one RDN, but not a CN).
    let extra = name_der(&[(ORGANIZATION, "1234")]);
    let mut contents = issuer_rdns;
    contents.extend_from_slice(common::sequence_contents(&extra));
    let subject = yasna::construct_der(|w| w.write_sequence(|w| w.next().write_der(&contents)));
    let spec = ProxySpec {
        subject: Subject::Raw(subject),
        ..ProxySpec::with_attributes(g.ext())
    };
    let msg = proxy_error(verify_chain(&g.chain(&spec), &g.trust, g.now));
    assert!(
        msg.contains("subject is not the issuer's subject plus one CN"),
        "{msg}"
    );
}

#[test]
fn path_length_exceeded_is_refused() {
    let g = Grid::new();
    // P1: pathLen 0 below the user, with the attributes.
    let (p1, p1_key) = build_proxy(
        &g.user.cert_der,
        &g.user.key_pkcs8,
        &ProxySpec {
            path_len: Some(0),
            ..ProxySpec::with_attributes(g.ext())
        },
    );
    // P1 alone is fine.
    verify_chain(
        &ders(&[p1.clone(), g.user.cert_der.clone()]),
        &g.trust,
        g.now,
    )
    .expect("a proxy with path length 0 and nothing below it");
    // P2 below P1 violates P1's path length.
    let (p2, _) = build_proxy(
        &p1,
        &p1_key,
        &ProxySpec {
            not_after: g.now + 1800,
            ..ProxySpec::new()
        },
    );
    let chain = ders(&[p2, p1, g.user.cert_der.clone()]);
    let msg = proxy_error(verify_chain(&chain, &g.trust, g.now));
    assert!(msg.contains("certificate 1 of the chain"), "{msg}");
    assert!(msg.contains("proxy path length 0 exceeded"), "{msg}");
}

#[test]
fn path_length_one_allows_one_proxy_below() {
    let g = Grid::new();
    let p1 = ProxyCredential::create(
        std::slice::from_ref(&g.user.cert_der),
        &g.user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(g.ext()),
            path_len: Some(1),
        },
    )
    .unwrap();
    let p2 = ProxyCredential::create(
        &p1.chain,
        &p1.key_pkcs8,
        &ProxyOptions {
            lifetime: 1800,
            attributes: None,
            path_len: None,
        },
    )
    .unwrap();
    verify_chain(&p2.chain_der(), &g.trust, g.now).expect("one proxy below pathLen 1");
    let p3 = ProxyCredential::create(
        &p2.chain,
        &p2.key_pkcs8,
        &ProxyOptions {
            lifetime: 900,
            attributes: None,
            path_len: None,
        },
    )
    .unwrap();
    let msg = proxy_error(verify_chain(&p3.chain_der(), &g.trust, g.now));
    assert!(msg.contains("proxy path length 1 exceeded"), "{msg}");
}

// ---------------------------------------------------------------------------
// Chains.

#[test]
fn user_certificate_from_untrusted_ca_is_refused() {
    let g = Grid::new();
    let other_ca = Authority::new_ca("Other Grid", "Other CA", 30).unwrap();
    let user = other_ca.issue_user("Other Grid", "Eve", 12 * 3600).unwrap();
    let ext = g.aa.sign_attributes(&g.attrs_for(&user.cert_der)).unwrap();
    let (proxy, _) = build_proxy(
        &user.cert_der,
        &user.key_pkcs8,
        &ProxySpec::with_attributes(ext),
    );
    match verify_chain(&ders(&[proxy, user.cert_der]), &g.trust, g.now) {
        Err(AuthError::Chain(msg)) => assert!(msg.contains("UnknownIssuer"), "{msg}"),
        other => panic!("expected AuthError::Chain, got {other:?}"),
    }
}

#[test]
fn server_certificate_as_user_certificate_is_refused() {
    let g = Grid::new();
    let server = g.ca.issue_server(&["localhost"], 30).unwrap();
    let ext =
        g.aa.sign_attributes(&g.attrs_for(&server.cert_der))
            .unwrap();
    let (proxy, _) = build_proxy(
        &server.cert_der,
        &server.key_pkcs8,
        &ProxySpec::with_attributes(ext),
    );
    // Its EKU is serverAuth only; webpki wants clientAuth.
    match verify_chain(&ders(&[proxy, server.cert_der]), &g.trust, g.now) {
        Err(AuthError::Chain(msg)) => assert!(msg.contains("RequiredEkuNotFound"), "{msg}"),
        other => panic!("expected AuthError::Chain, got {other:?}"),
    }
}

#[test]
fn ca_certificate_as_user_certificate_is_refused() {
    let g = Grid::new();
    let ext = g.aa.sign_attributes(&g.attrs_for(&g.ca.cert_der)).unwrap();
    let (proxy, _) = build_proxy(
        &g.ca.cert_der,
        &g.ca.key_pkcs8,
        &ProxySpec::with_attributes(ext),
    );
    assert_eq!(
        verify_chain(&ders(&[proxy, g.ca.cert_der.clone()]), &g.trust, g.now).unwrap_err(),
        AuthError::Chain("CaUsedAsEndEntity".into())
    );
}

#[test]
fn proxy_below_the_end_entity_is_refused() {
    let g = Grid::new();
    let (proxy, _) = build_proxy(
        &g.user.cert_der,
        &g.user.key_pkcs8,
        &ProxySpec::with_attributes(g.ext()),
    );
    let chain = ders(&[proxy.clone(), g.user.cert_der.clone(), proxy]);
    let msg = proxy_error(verify_chain(&chain, &g.trust, g.now));
    assert!(msg.contains("certificate 2 of the chain"), "{msg}");
    assert!(
        msg.contains("a proxy below the end-entity certificate"),
        "{msg}"
    );
}

#[test]
fn empty_and_overlong_chains_are_refused() {
    let g = Grid::new();
    assert!(matches!(
        verify_chain(&[], &g.trust, g.now),
        Err(AuthError::Chain(m)) if m.contains("chain of 0")
    ));
    let chain: Vec<CertificateDer<'static>> = (0..11)
        .map(|_| CertificateDer::from(g.user.cert_der.clone()))
        .collect();
    assert!(matches!(
        verify_chain(&chain, &g.trust, g.now),
        Err(AuthError::Chain(m)) if m.contains("chain of 11")
    ));
}

#[test]
fn only_proxies_without_end_entity_is_refused() {
    let g = Grid::new();
    let (proxy, _) = build_proxy(
        &g.user.cert_der,
        &g.user.key_pkcs8,
        &ProxySpec::with_attributes(g.ext()),
    );
    assert!(matches!(
        verify_chain(&ders(&[proxy]), &g.trust, g.now),
        Err(AuthError::Chain(m)) if m.contains("no end-entity certificate")
    ));
}

#[test]
fn garbage_certificate_is_malformed() {
    let g = Grid::new();
    let chain = vec![CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
    assert!(matches!(
        verify_chain(&chain, &g.trust, g.now),
        Err(AuthError::Malformed {
            what: "certificate",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// VO attributes.

#[test]
fn attributes_from_aa_pinned_for_another_vo_are_refused() {
    let g = Grid::new();
    let aa2 = g.ca.new_aa("Test Grid", "vo2", 30).unwrap();
    let mut trust = g.trust.clone();
    trust.pin_aa("vo2", aa2.cert_der.clone());
    // aa2 signs attributes claiming vo1.
    let ext = aa2.sign_attributes(&g.attrs()).unwrap();
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &trust, g.now).unwrap_err(),
        AuthError::UntrustedAttributeAuthority { vo: "vo1".into() }
    );
}

#[test]
fn attributes_from_unpinned_aa_are_refused() {
    let g = Grid::new();
    let rogue = g.ca.new_aa("Test Grid", "vo1", 30).unwrap();
    let ext = rogue.sign_attributes(&g.attrs()).unwrap();
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &g.trust, g.now).unwrap_err(),
        AuthError::UntrustedAttributeAuthority { vo: "vo1".into() }
    );
}

#[test]
fn attributes_bound_to_another_certificate_are_refused() {
    let g = Grid::new();
    let bob = g.ca.issue_user("Test Grid", "Bob", 12 * 3600).unwrap();
    let ext = g.aa.sign_attributes(&g.attrs_for(&bob.cert_der)).unwrap();
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &g.trust, g.now).unwrap_err(),
        AuthError::WrongHolder
    );
}

#[test]
fn expired_attributes_are_refused() {
    let g = Grid::new();
    let attrs = ibp_auth::VoAttributes {
        not_before: g.now - 7200,
        not_after: g.now - 600,
        ..g.attrs()
    };
    let ext = g.aa.sign_attributes(&attrs).unwrap();
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &g.trust, g.now).unwrap_err(),
        AuthError::Expired {
            what: "VO attributes",
            at: g.now - 600,
            now: g.now
        }
    );
}

#[test]
fn attributes_not_yet_valid_are_refused_naming_clock_skew() {
    let g = Grid::new();
    let attrs = ibp_auth::VoAttributes {
        not_before: g.now + 600,
        not_after: g.now + 3600,
        ..g.attrs()
    };
    let ext = g.aa.sign_attributes(&attrs).unwrap();
    let err =
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &g.trust, g.now).unwrap_err();
    assert_eq!(
        err,
        AuthError::NotYetValid {
            what: "VO attributes",
            at: g.now + 600,
            now: g.now
        }
    );
    assert!(err.to_string().contains("clock skew"), "{err}");
}

#[test]
fn tampered_attributes_fail_the_signature() {
    let g = Grid::new();
    let mut ext = g.ext();
    // Change the VO ID inside the signed VoAttributes: "vo1:0001" -> "vo1:0002".
    let needle = b"vo1:0001";
    let pos = ext
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("VO ID in the extension value");
    ext[pos + needle.len() - 1] = b'2';
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &g.trust, g.now).unwrap_err(),
        AuthError::BadSignature {
            what: "VO attributes"
        }
    );
}

#[test]
fn no_attributes_at_all() {
    let g = Grid::new();
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::new()), &g.trust, g.now).unwrap_err(),
        AuthError::NoAttributes
    );
    // Same through the library's own minting.
    let cred = ProxyCredential::create(
        std::slice::from_ref(&g.user.cert_der),
        &g.user.key_pkcs8,
        &ProxyOptions {
            lifetime: 600,
            attributes: None,
            path_len: None,
        },
    )
    .unwrap();
    assert_eq!(
        verify_chain(&cred.chain_der(), &g.trust, g.now).unwrap_err(),
        AuthError::NoAttributes
    );
}

#[test]
fn garbage_attribute_extension_is_malformed() {
    let g = Grid::new();
    let spec = ProxySpec::with_attributes(vec![0x30, 0x03, 0x02, 0x01, 0x07]);
    assert!(matches!(
        verify_chain(&g.chain(&spec), &g.trust, g.now),
        Err(AuthError::Malformed {
            what: "VO attributes",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Tokens.

struct Tokens {
    trust: TrustStore,
    lbone: Ed25519KeyPair,
    metadata: Ed25519KeyPair,
    holder: [u8; 32],
    now: i64,
}

const DEPOT: &str = "depot1.example.org:6714";
const FILE: &str = "0b5c1a7e-8f43-4f0e-9a61-2d3c4b5a6978";

fn new_ed25519() -> (Ed25519KeyPair, [u8; 32]) {
    let pkcs8 = ibp_auth::keys::generate_ed25519().unwrap();
    let public = ibp_auth::keys::ed25519_public(&pkcs8).unwrap();
    (Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap(), public)
}

fn tokens() -> Tokens {
    let (lbone, lbone_pub) = new_ed25519();
    let (metadata, metadata_pub) = new_ed25519();
    let mut trust = TrustStore::new();
    trust.add_token_key(TokenSigner::LBone, lbone_pub);
    trust.add_token_key(TokenSigner::MetadataManager, metadata_pub);
    Tokens {
        trust,
        lbone,
        metadata,
        holder: [7; 32],
        now: ibp_auth::unix_now(),
    }
}

impl Tokens {
    fn grant(&self) -> DepotGrant {
        DepotGrant {
            depot: DEPOT.into(),
            vo: "vo1".into(),
            vo_id: "vo1:0001".into(),
            holder: self.holder,
            issued: self.now,
            not_after: self.now + 600,
        }
    }
    fn ticket(&self) -> FileTicket {
        FileTicket {
            file: FILE.into(),
            vo: "vo1".into(),
            vo_id: "vo1:0001".into(),
            holder: self.holder,
            issued: self.now,
            not_after: self.now + 600,
        }
    }
    fn verify_grant(&self, text: &str) -> Result<DepotGrant, AuthError> {
        DepotGrant::verify(text, &self.trust, DEPOT, &self.holder, self.now)
    }
    fn verify_ticket(&self, text: &str) -> Result<FileTicket, AuthError> {
        FileTicket::verify(text, &self.trust, FILE, &self.holder, self.now)
    }
}

#[test]
fn tokens_verify_when_correct() {
    let t = tokens();
    assert_eq!(
        t.verify_grant(&t.grant().sign(&t.lbone)).unwrap(),
        t.grant()
    );
    assert_eq!(
        t.verify_ticket(&t.ticket().sign(&t.metadata)).unwrap(),
        t.ticket()
    );
}

/// Flips one byte of the Ed25519 signature (after the 8-byte key id, so the
/// signer is still found).
fn flip_signature_byte(text: &str) -> String {
    let (body, sig) = text.split_once('.').unwrap();
    let mut sig = B64.decode(sig).unwrap();
    assert_eq!(sig.len(), 8 + 64);
    sig[8 + 10] ^= 0x01;
    format!("{body}.{}", B64.encode(&sig))
}

#[test]
fn token_with_flipped_signature_byte_is_refused() {
    let t = tokens();
    let grant = flip_signature_byte(&t.grant().sign(&t.lbone));
    assert_eq!(
        t.verify_grant(&grant).unwrap_err(),
        AuthError::BadSignature { what: "token" }
    );
    let ticket = flip_signature_byte(&t.ticket().sign(&t.metadata));
    assert_eq!(
        t.verify_ticket(&ticket).unwrap_err(),
        AuthError::BadSignature { what: "token" }
    );
}

#[test]
fn token_with_swapped_body_is_refused() {
    let t = tokens();
    // The signature part of a genuine grant with the body of a forged one.
    let genuine = t.grant().sign(&t.lbone);
    let forged = DepotGrant {
        vo_id: "vo1:9999".into(),
        ..t.grant()
    }
    .sign(&new_ed25519().0);
    let (_, sig) = genuine.split_once('.').unwrap();
    let (body, _) = forged.split_once('.').unwrap();
    assert_eq!(
        t.verify_grant(&format!("{body}.{sig}")).unwrap_err(),
        AuthError::BadSignature { what: "token" }
    );
}

#[test]
fn expired_token_is_refused() {
    let t = tokens();
    let grant = DepotGrant {
        issued: t.now - 3600,
        not_after: t.now - 600,
        ..t.grant()
    };
    assert_eq!(
        t.verify_grant(&grant.sign(&t.lbone)).unwrap_err(),
        AuthError::Expired {
            what: "depot grant",
            at: t.now - 600,
            now: t.now
        }
    );
    let ticket = FileTicket {
        issued: t.now - 3600,
        not_after: t.now - 600,
        ..t.ticket()
    };
    assert_eq!(
        t.verify_ticket(&ticket.sign(&t.metadata)).unwrap_err(),
        AuthError::Expired {
            what: "file ticket",
            at: t.now - 600,
            now: t.now
        }
    );
}

#[test]
fn token_issued_in_the_future_is_refused_naming_clock_skew() {
    let t = tokens();
    let grant = DepotGrant {
        issued: t.now + 600,
        not_after: t.now + 1200,
        ..t.grant()
    };
    let err = t.verify_grant(&grant.sign(&t.lbone)).unwrap_err();
    assert_eq!(
        err,
        AuthError::NotYetValid {
            what: "depot grant",
            at: t.now + 600,
            now: t.now
        }
    );
    assert!(err.to_string().contains("clock skew"), "{err}");
    // Within the skew it is fine.
    let grant = DepotGrant {
        issued: t.now + 60,
        ..t.grant()
    };
    t.verify_grant(&grant.sign(&t.lbone)).unwrap();
}

#[test]
fn token_expiry_skew_allowance() {
    let t = tokens();
    assert_eq!(t.trust.max_skew, 120);
    let recent = DepotGrant {
        issued: t.now - 600,
        not_after: t.now - 60,
        ..t.grant()
    };
    t.verify_grant(&recent.sign(&t.lbone))
        .expect("expired 60 s ago is within the 120 s skew");
    let old = DepotGrant {
        issued: t.now - 1200,
        not_after: t.now - 600,
        ..t.grant()
    };
    assert!(matches!(
        t.verify_grant(&old.sign(&t.lbone)),
        Err(AuthError::Expired {
            what: "depot grant",
            ..
        })
    ));
    // Exactly at the edge: not_after + skew == now is still accepted, one
    // second later is not.
    let edge = DepotGrant {
        issued: t.now - 600,
        not_after: t.now - 120,
        ..t.grant()
    };
    t.verify_grant(&edge.sign(&t.lbone)).unwrap();
    let past_edge = DepotGrant {
        not_after: t.now - 121,
        ..edge
    };
    assert!(matches!(
        t.verify_grant(&past_edge.sign(&t.lbone)),
        Err(AuthError::Expired { .. })
    ));
}

#[test]
fn grant_for_another_depot_is_refused() {
    let t = tokens();
    let text = t.grant().sign(&t.lbone);
    assert_eq!(
        DepotGrant::verify(&text, &t.trust, "depot2.example.org:6714", &t.holder, t.now)
            .unwrap_err(),
        AuthError::WrongTarget {
            what: "depot",
            found: DEPOT.into(),
            expected: "depot2.example.org:6714".into()
        }
    );
}

#[test]
fn ticket_for_another_file_is_refused() {
    let t = tokens();
    let text = t.ticket().sign(&t.metadata);
    let other = "11111111-2222-3333-4444-555555555555";
    assert_eq!(
        FileTicket::verify(&text, &t.trust, other, &t.holder, t.now).unwrap_err(),
        AuthError::WrongTarget {
            what: "file",
            found: FILE.into(),
            expected: other.into()
        }
    );
}

#[test]
fn token_for_another_holder_is_refused() {
    let t = tokens();
    let other = [8u8; 32];
    assert_eq!(
        DepotGrant::verify(&t.grant().sign(&t.lbone), &t.trust, DEPOT, &other, t.now).unwrap_err(),
        AuthError::WrongTokenHolder
    );
    assert_eq!(
        FileTicket::verify(&t.ticket().sign(&t.metadata), &t.trust, FILE, &other, t.now)
            .unwrap_err(),
        AuthError::WrongTokenHolder
    );
}

#[test]
fn token_signed_by_unknown_key_is_refused() {
    let t = tokens();
    let (stranger, _) = new_ed25519();
    assert_eq!(
        t.verify_grant(&t.grant().sign(&stranger)).unwrap_err(),
        AuthError::UnknownSigner
    );
    assert_eq!(
        t.verify_ticket(&t.ticket().sign(&stranger)).unwrap_err(),
        AuthError::UnknownSigner
    );
    // A key trusted for the other role is unknown for this one.
    assert_eq!(
        t.verify_grant(&t.grant().sign(&t.metadata)).unwrap_err(),
        AuthError::UnknownSigner
    );
}

#[test]
fn grant_presented_as_ticket_is_refused() {
    let t = tokens();
    let grant_text = t.grant().sign(&t.lbone);
    // The L-Bone's key is not a metadata-manager key.
    assert_eq!(
        t.verify_ticket(&grant_text).unwrap_err(),
        AuthError::UnknownSigner
    );
    // Even with one key trusted for both roles, the type label tells them apart.
    let (shared, shared_pub) = new_ed25519();
    let mut trust = t.trust.clone();
    trust.add_token_key(TokenSigner::LBone, shared_pub);
    trust.add_token_key(TokenSigner::MetadataManager, shared_pub);
    let grant_text = t.grant().sign(&shared);
    assert_eq!(
        FileTicket::verify(&grant_text, &trust, FILE, &t.holder, t.now).unwrap_err(),
        AuthError::Malformed {
            what: "token",
            why: "not a file ticket".into()
        }
    );
    let ticket_text = t.ticket().sign(&shared);
    assert_eq!(
        DepotGrant::verify(&ticket_text, &trust, DEPOT, &t.holder, t.now).unwrap_err(),
        AuthError::Malformed {
            what: "token",
            why: "not a depot grant".into()
        }
    );
}

#[test]
fn garbage_token_text_is_malformed() {
    let t = tokens();
    for text in [
        "",
        "garbage",
        "!!!.???",
        "abc.def",
        ".",
        "AAAA.AAAA",
        "not base64 at all.also not",
    ] {
        match t.verify_grant(text) {
            Err(AuthError::Malformed { what: "token", .. }) => {}
            other => panic!("{text:?}: expected Malformed token, got {other:?}"),
        }
    }
    // A correctly signed body that is not a token encoding.
    let body = b"\x00\x00\x00\x12ibp-depot-grant-v1\x00\x00\x00\xff";
    let mut sig = {
        use ring::signature::KeyPair;
        let d = ring::digest::digest(&ring::digest::SHA256, t.lbone.public_key().as_ref());
        d.as_ref()[..8].to_vec()
    };
    sig.extend_from_slice(t.lbone.sign(body).as_ref());
    let text = format!("{}.{}", B64.encode(body), B64.encode(&sig));
    assert_eq!(
        t.verify_grant(&text).unwrap_err(),
        AuthError::Malformed {
            what: "token",
            why: "truncated field".into()
        }
    );
}

#[test]
fn oversized_token_text_is_malformed() {
    let t = tokens();
    let text = t.grant().sign(&t.lbone);
    // Pad a valid token past the limit with trailing whitespace (which
    // `trim` would otherwise remove): refused on length before anything else.
    let padded = format!("{text}{}", " ".repeat(MAX_TOKEN + 1 - text.len()));
    assert_eq!(
        t.verify_grant(&padded).unwrap_err(),
        AuthError::Malformed {
            what: "token",
            why: "too long".into()
        }
    );
    let huge = "A".repeat(MAX_TOKEN * 4);
    assert_eq!(
        t.verify_grant(&huge).unwrap_err(),
        AuthError::Malformed {
            what: "token",
            why: "too long".into()
        }
    );
}

// ---------------------------------------------------------------------------
// TLS.

fn tls_server(g: &Grid, auth: ClientAuth) -> (rustls::ServerConfig, Arc<TrustStore>) {
    let server = g.ca.issue_server(&["localhost"], 30).unwrap();
    let trust = Arc::new(g.trust.clone());
    let scfg = server_config(
        trust.clone(),
        vec![CertificateDer::from(server.cert_der)],
        server.key_pkcs8,
        auth,
    )
    .unwrap();
    (scfg, trust)
}

#[test]
fn tls_with_expired_proxy_fails_on_server() {
    let g = Grid::new();
    let (chain, key) = g.chain_with_key(&ProxySpec {
        not_before: g.now - 290,
        not_after: g.now - 200,
        ..ProxySpec::with_attributes(g.ext())
    });
    let cred = ProxyCredential {
        chain: chain.iter().map(|c| c.to_vec()).collect(),
        key_pkcs8: key,
    };
    let (scfg, trust) = tls_server(&g, ClientAuth::Required);
    let ccfg = client_config(&trust, Some(&cred)).unwrap();
    let (sconn, result) = handshake(scfg, ccfg);
    match result {
        Err(HandshakeError::Server(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(other),
        ))) => {
            let auth = other
                .0
                .downcast_ref::<AuthError>()
                .expect("the verifier's AuthError");
            assert!(
                matches!(
                    auth,
                    AuthError::Expired {
                        what: "proxy certificate",
                        ..
                    }
                ),
                "{auth:?}"
            );
        }
        other => panic!("expected the server to refuse the certificate, got {other:?}"),
    }
    assert!(
        sconn.is_handshaking(),
        "the server must not complete the handshake"
    );
}

#[test]
fn tls_with_good_proxy_succeeds() {
    let g = Grid::new();
    let (chain, key) = g.chain_with_key(&ProxySpec::with_attributes(g.ext()));
    let cred = ProxyCredential {
        chain: chain.iter().map(|c| c.to_vec()).collect(),
        key_pkcs8: key,
    };
    let (scfg, trust) = tls_server(&g, ClientAuth::Required);
    let ccfg = client_config(&trust, Some(&cred)).unwrap();
    let (sconn, result) = handshake(scfg, ccfg);
    result.unwrap();
    let id = peer_identity(sconn.peer_certificates(), &trust, g.now)
        .unwrap()
        .unwrap();
    assert_eq!(id.vo_id, "vo1:0001");
    assert_eq!(id.key_hash, cred.key_hash().unwrap());
}

#[test]
fn tls_required_client_auth_without_certificate_fails() {
    let g = Grid::new();
    let (scfg, trust) = tls_server(&g, ClientAuth::Required);
    let ccfg = client_config(&trust, None).unwrap();
    let (_, result) = handshake(scfg, ccfg);
    match result {
        Err(HandshakeError::Server(rustls::Error::NoCertificatesPresented)) => {}
        other => panic!("expected NoCertificatesPresented on the server, got {other:?}"),
    }
}

#[test]
fn tls_optional_client_auth_without_certificate_succeeds_anonymously() {
    let g = Grid::new();
    let (scfg, trust) = tls_server(&g, ClientAuth::Optional);
    let ccfg = client_config(&trust, None).unwrap();
    let (sconn, result) = handshake(scfg, ccfg);
    result.unwrap();
    assert_eq!(
        peer_identity(sconn.peer_certificates(), &trust, g.now),
        Ok(None)
    );
}

#[test]
fn tls_peer_identity_refuses_chain_without_attributes() {
    let g = Grid::new();
    let (chain, key) = g.chain_with_key(&ProxySpec::new());
    let cred = ProxyCredential {
        chain: chain.iter().map(|c| c.to_vec()).collect(),
        key_pkcs8: key,
    };
    let (scfg, trust) = tls_server(&g, ClientAuth::Required);
    let ccfg = client_config(&trust, Some(&cred)).unwrap();
    let (sconn, result) = handshake(scfg, ccfg);
    // The handshake checks certificates only; attributes come after it.
    result.unwrap();
    assert_eq!(
        peer_identity(sconn.peer_certificates(), &trust, g.now),
        Err(AuthError::NoAttributes)
    );
}

// ---------------------------------------------------------------------------
// Trust directory and secret files.

fn pem_cert(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

#[test]
fn trust_store_load_from_directory() {
    let g = Grid::new();
    let aa2 = g.ca.new_aa("Test Grid", "vo2", 30).unwrap();
    let other_ca = Authority::new_ca("Other Grid", "Other CA", 30).unwrap();
    let (lbone, lbone_pub) = new_ed25519();
    let (metadata, metadata_pub) = new_ed25519();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["ca", "vomsdir/vo1", "vomsdir/vo2", "lbone", "metadata"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    // Two CAs in one file.
    std::fs::write(
        root.join("ca/grid.pem"),
        format!(
            "{}{}",
            pem_cert(&g.ca.cert_der),
            pem_cert(&other_ca.cert_der)
        ),
    )
    .unwrap();
    std::fs::write(root.join("ca/README"), "not a pem file").unwrap();
    std::fs::write(root.join("vomsdir/vo1/aa.pem"), pem_cert(&g.aa.cert_der)).unwrap();
    std::fs::write(root.join("vomsdir/vo2/aa.pem"), pem_cert(&aa2.cert_der)).unwrap();
    std::fs::write(
        root.join("lbone/lbone.pub"),
        ibp_auth::keys::format_public_key(&lbone_pub),
    )
    .unwrap();
    std::fs::write(
        root.join("metadata/mm.pub"),
        ibp_auth::keys::format_public_key(&metadata_pub),
    )
    .unwrap();

    let trust = TrustStore::load(root).unwrap();
    assert_eq!(trust.ca_certificates().len(), 2);
    assert_eq!(trust.max_skew, 120);
    assert!(trust.is_pinned_aa("vo1", &g.aa.cert_der));
    assert!(trust.is_pinned_aa("vo2", &aa2.cert_der));
    assert!(!trust.is_pinned_aa("vo1", &aa2.cert_der));
    assert!(!trust.is_pinned_aa("vo2", &g.aa.cert_der));
    assert_eq!(trust.token_keys(TokenSigner::LBone), &[lbone_pub]);
    assert_eq!(
        trust.token_keys(TokenSigner::MetadataManager),
        &[metadata_pub]
    );

    // vo1 attributes from the vo1 AA verify.
    let id = verify_chain(
        &g.chain(&ProxySpec::with_attributes(g.ext())),
        &trust,
        g.now,
    )
    .unwrap();
    assert_eq!(id.vo, "vo1");
    // vo1 attributes from the AA under vomsdir/vo2 do not.
    let ext = aa2.sign_attributes(&g.attrs()).unwrap();
    assert_eq!(
        verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &trust, g.now).unwrap_err(),
        AuthError::UntrustedAttributeAuthority { vo: "vo1".into() }
    );
    // vo2 attributes from the vo2 AA do.
    let attrs2 = ibp_auth::VoAttributes {
        vo: "vo2".into(),
        vo_id: "vo2:0042".into(),
        ..g.attrs()
    };
    let ext = aa2.sign_attributes(&attrs2).unwrap();
    let id = verify_chain(&g.chain(&ProxySpec::with_attributes(ext)), &trust, g.now).unwrap();
    assert_eq!((id.vo.as_str(), id.vo_id.as_str()), ("vo2", "vo2:0042"));

    // Token keys: each verifies its own role only.
    let t = tokens();
    let grant = t.grant().sign(&lbone);
    DepotGrant::verify(&grant, &trust, DEPOT, &t.holder, t.now).unwrap();
    let ticket = t.ticket().sign(&metadata);
    FileTicket::verify(&ticket, &trust, FILE, &t.holder, t.now).unwrap();
    assert_eq!(
        FileTicket::verify(&t.ticket().sign(&lbone), &trust, FILE, &t.holder, t.now).unwrap_err(),
        AuthError::UnknownSigner
    );
}

/// Regression: a stray file directly under `vomsdir/` (README, .gitkeep)
/// used to make `TrustStore::load` fail with "Not a directory".
#[test]
fn trust_store_load_ignores_stray_files_in_vomsdir() {
    let g = Grid::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("vomsdir/vo1")).unwrap();
    std::fs::write(root.join("vomsdir/README"), "one directory per VO\n").unwrap();
    std::fs::write(root.join("vomsdir/.gitkeep"), "").unwrap();
    std::fs::write(root.join("vomsdir/vo1/aa.pem"), pem_cert(&g.aa.cert_der)).unwrap();
    let trust = TrustStore::load(root).unwrap();
    assert!(trust.is_pinned_aa("vo1", &g.aa.cert_der));
    assert!(!trust.is_pinned_aa("README", &g.aa.cert_der));
}

#[test]
fn trust_store_load_of_missing_parts_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    assert!(trust.ca_certificates().is_empty());
    assert!(trust.token_keys(TokenSigner::LBone).is_empty());
}

#[test]
fn trust_store_load_refuses_bad_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lbone")).unwrap();
    std::fs::write(dir.path().join("lbone/bad.pub"), "rsa AAAA\n").unwrap();
    assert!(matches!(
        TrustStore::load(dir.path()),
        Err(AuthError::Malformed {
            what: "public key file",
            ..
        })
    ));
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn write_secret_creates_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    ibp_auth::keys::write_secret(&path, b"secret").unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"secret");
}

#[test]
fn write_secret_forces_0600_on_existing_0644_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::write(&path, b"an older, longer content").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(mode(&path), 0o644);
    ibp_auth::keys::write_secret(&path, b"secret").unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"secret");
}

#[test]
fn proxy_credential_save_load_round_trip_mode_0600() {
    let g = Grid::new();
    let cred = ProxyCredential::create(
        std::slice::from_ref(&g.user.cert_der),
        &g.user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(g.ext()),
            path_len: None,
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x509up_u1000");
    // A pre-existing world-readable file is tightened too.
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    cred.save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    // Globus order: proxy certificate, key, then the user certificate.
    let tags: Vec<String> = pem::parse_many(&text)
        .unwrap()
        .iter()
        .map(|b| b.tag().to_owned())
        .collect();
    assert_eq!(tags, ["CERTIFICATE", "PRIVATE KEY", "CERTIFICATE"]);
    let loaded = ProxyCredential::load(&path).unwrap();
    assert_eq!(loaded.chain, cred.chain);
    assert_eq!(loaded.key_pkcs8, cred.key_pkcs8);
    assert_eq!(loaded.key_hash().unwrap(), cred.key_hash().unwrap());
    let id = verify_chain(&loaded.chain_der(), &g.trust, g.now).unwrap();
    assert_eq!(id.vo_id, "vo1:0001");
}

#[test]
fn a_group_or_world_readable_proxy_is_refused_naming_file_mode_and_chmod() {
    let dir = tempfile::tempdir().unwrap();
    let g = Grid::new();
    let cred = ProxyCredential::create(
        std::slice::from_ref(&g.user.cert_der),
        &g.user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(g.ext()),
            path_len: None,
        },
    )
    .unwrap();
    let path = dir.path().join("x509up_u1000");
    cred.save(&path).unwrap();
    for bad in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let Err(AuthError::Io(msg)) = ProxyCredential::load(&path) else {
            panic!("mode {bad:o} accepted");
        };
        let p = path.display().to_string();
        assert_eq!(
            msg,
            format!(
                "proxy {p} has mode {bad:03o}; it must be readable by its owner only (chmod 600 {p})"
            )
        );
    }
    for good in [0o600, 0o400] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(good)).unwrap();
        assert_eq!(ProxyCredential::load(&path).unwrap().chain, cred.chain);
    }
}

#[test]
fn proxy_credential_load_refuses_files_without_key_or_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let g = Grid::new();
    let no_key = dir.path().join("nokey");
    std::fs::write(&no_key, pem_cert(&g.user.cert_der)).unwrap();
    std::fs::set_permissions(&no_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        ProxyCredential::load(&no_key).unwrap_err(),
        AuthError::Malformed {
            what: "proxy file",
            why: "no PRIVATE KEY block".into()
        }
    );
    let missing = dir.path().join("missing");
    assert!(matches!(
        ProxyCredential::load(&missing),
        Err(AuthError::Io(m)) if m.contains("read proxy")
    ));
}
