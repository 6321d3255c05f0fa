//! Several VOs in one proxy: each attribute set verified on its own (its
//! own AA, or its own VOMS server), the identity of each VO kept apart
//! (`Identity::for_vo`), and a forged, untrusted or misbound set for one
//! VO neither breaking nor granting another (docs/identity.md, "Several
//! VOs in one proxy").

mod common;

use common::Grid;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::voms::issue::{voms_extension, AcRequest};
use ibp_auth::voms::{slash_dn, VomsDir, VOMS_EXTENSION};
use ibp_auth::{verify_chain, AuthError, Group, Identity, ProxyCredential, VoAttributes};

/// vo2 attributes for the grid's user, (not yet) signed.
fn vo2_attrs(g: &Grid) -> VoAttributes {
    VoAttributes {
        vo: "vo2".into(),
        vo_id: "vo2:0042".into(),
        groups: vec![Group {
            id: "g2".into(),
            name: "physics".into(),
        }],
        ..g.attrs()
    }
}

/// A proxy of the grid's user carrying `first` and `more`.
fn proxy(g: &Grid, first: Vec<u8>, more: &[Vec<u8>]) -> ProxyCredential {
    ProxyCredential::create_multi_vo(
        std::slice::from_ref(&g.user.cert_der),
        &g.user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(first),
            path_len: None,
        },
        more,
        &[],
    )
    .unwrap()
}

fn verify(g: &Grid, p: &ProxyCredential) -> Result<Identity, AuthError> {
    verify_chain(&p.chain_der(), &g.trust, g.now)
}

/// The grid with a second AA, pinned for vo2; returns it.
fn with_vo2(g: &mut Grid) -> ibp_auth::pki::Authority {
    let aa2 = g.ca.new_aa("Test Grid", "vo2", 30).unwrap();
    g.trust.pin_aa("vo2", aa2.cert_der.clone());
    aa2
}

#[test]
fn each_vo_verifies_and_acts_alone() {
    let mut g = Grid::new();
    let aa2 = with_vo2(&mut g);
    let p = proxy(&g, g.ext(), &[aa2.sign_attributes(&vo2_attrs(&g)).unwrap()]);
    let id = verify(&g, &p).unwrap();
    assert_eq!((id.vo.as_str(), id.vo_id.as_str()), ("vo1", "vo1:0001"));
    assert_eq!(id.vos(), ["vo1", "vo2"]);
    assert!(id.carries("vo2") && !id.carries("vo3"));

    // In vo2: vo2's VO ID and groups only (vo1's `admins` is not there).
    let in2 = id.for_vo("vo2").unwrap();
    assert_eq!(in2.vo_id, "vo2:0042");
    assert_eq!(in2.groups.len(), 1);
    assert_eq!(in2.groups[0].name, "physics");
    assert!(in2.others.verified.is_empty() && in2.others.refused.is_empty());
    assert_eq!(in2.key_hash, id.key_hash, "one proxy, one key");
    // In vo1: vo1's alone, without the other VO.
    let in1 = id.for_vo("vo1").unwrap();
    assert_eq!(in1.groups[0].name, "admins");
    assert!(in1.others.verified.is_empty());
    // A VO it does not carry.
    match id.for_vo("vo3") {
        Err(e @ AuthError::VoNotCarried { .. }) => {
            assert!(e.to_string().contains("vo1, vo2"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// Asserts vo1 still verifies with vo1's identity, and vo2 is refused
/// naming `why`.
#[track_caller]
fn vo1_only(g: &Grid, p: &ProxyCredential, why: &str) {
    let id = verify(g, p).expect("vo1 unaffected by the vo2 set");
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vos(), ["vo1"]);
    match id.for_vo("vo2") {
        Err(e @ AuthError::VoRefused { .. }) => {
            let text = e.to_string();
            assert!(text.contains("\"vo2\"") && text.contains(why), "{text}");
        }
        other => panic!("vo2 must be refused: {other:?}"),
    }
}

#[test]
fn an_untrusted_second_set_is_refused_for_its_vo_only() {
    let mut g = Grid::new();
    let _aa2 = with_vo2(&mut g);
    // Signed by vo1's AA: not trusted for vo2.
    let by_vo1_aa = g.aa.sign_attributes(&vo2_attrs(&g)).unwrap();
    vo1_only(
        &g,
        &proxy(&g, g.ext(), &[by_vo1_aa]),
        "not trusted for that VO",
    );
    // Signed by an AA nobody pinned.
    let stranger = g.ca.new_aa("Test Grid", "vo2", 30).unwrap();
    let forged = stranger.sign_attributes(&vo2_attrs(&g)).unwrap();
    vo1_only(
        &g,
        &proxy(&g, g.ext(), &[forged]),
        "not trusted for that VO",
    );
}

#[test]
fn a_tampered_second_set_is_refused_for_its_vo_only() {
    let mut g = Grid::new();
    let aa2 = with_vo2(&mut g);
    let mut set = aa2.sign_attributes(&vo2_attrs(&g)).unwrap();
    // The signed VO ID "vo2:0042" becomes "vo2:0043".
    let at = set
        .windows(8)
        .position(|w| w == b"vo2:0042")
        .expect("the VO ID in the set");
    set[at + 7] = b'3';
    vo1_only(&g, &proxy(&g, g.ext(), &[set]), "signature does not verify");
}

#[test]
fn a_second_set_for_another_certificate_is_refused_for_its_vo_only() {
    let mut g = Grid::new();
    let aa2 = with_vo2(&mut g);
    let other = g.ca.issue_user("Test Grid", "Mallory", 3600).unwrap();
    let theirs = VoAttributes {
        vo: "vo2".into(),
        ..g.attrs_for(&other.cert_der)
    };
    let set = aa2.sign_attributes(&theirs).unwrap();
    vo1_only(&g, &proxy(&g, g.ext(), &[set]), "another certificate");
}

#[test]
fn a_refused_first_set_leaves_the_second_vo() {
    let mut g = Grid::new();
    let aa2 = with_vo2(&mut g);
    let stranger = g.ca.new_aa("Test Grid", "vo1", 30).unwrap();
    let forged_vo1 = stranger.sign_attributes(&g.attrs()).unwrap();
    let good_vo2 = aa2.sign_attributes(&vo2_attrs(&g)).unwrap();
    let id = verify(&g, &proxy(&g, forged_vo1.clone(), &[good_vo2])).unwrap();
    assert_eq!((id.vo.as_str(), id.vo_id.as_str()), ("vo2", "vo2:0042"));
    assert!(matches!(id.for_vo("vo1"), Err(AuthError::VoRefused { .. })));
    // Nothing verifies: the first set's reason.
    let forged_vo2 = stranger
        .sign_attributes(&VoAttributes {
            vo: "vo2".into(),
            ..g.attrs()
        })
        .unwrap();
    assert!(matches!(
        verify(&g, &proxy(&g, forged_vo1, &[forged_vo2])),
        Err(AuthError::UntrustedAttributeAuthority { vo }) if vo == "vo1"
    ));
}

#[test]
fn two_sets_for_one_vo_or_an_unreadable_set_refuse_the_credential() {
    let mut g = Grid::new();
    let _aa2 = with_vo2(&mut g);
    let again = g.aa.sign_attributes(&g.attrs()).unwrap();
    let e = verify(&g, &proxy(&g, g.ext(), &[again])).unwrap_err();
    assert!(
        e.to_string().contains("two attribute sets for VO \"vo1\""),
        "{e}"
    );

    // A further-VOs extension whose set is not a VO attribute set: which
    // VO it claims is unknown, so the whole credential is refused.
    let junk = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            w.next().write_sequence(|w| w.next().write_u8(7));
        })
    });
    assert!(ibp_auth::attributes::encode_more(std::slice::from_ref(&junk)).is_err());
    let key = ibp_auth::keys::SigningKey::from_pkcs8(&g.user.key_pkcs8).unwrap();
    let minted = ibp_auth::proxy::mint_with_raw_extensions(
        &g.user.cert_der,
        &key,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(g.ext()),
            path_len: None,
        },
        &[(ibp_auth::oids::more_vo_attributes_oid(), &junk)],
    )
    .unwrap();
    let chain = common::ders(&[minted.certificate, g.user.cert_der.clone()]);
    assert!(matches!(
        verify_chain(&chain, &g.trust, g.now),
        Err(AuthError::Malformed { .. })
    ));
}

#[test]
fn the_further_vos_extension_is_bounded() {
    let g = Grid::new();
    let set = g.ext();
    let max = ibp_auth::attributes::MAX_VOS;
    assert!(ibp_auth::attributes::encode_more(&vec![set.clone(); max - 1]).is_ok());
    assert!(ibp_auth::attributes::encode_more(&vec![set.clone(); max]).is_err());
    assert!(ibp_auth::attributes::encode_more(&[]).is_err());
    let too_many = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for _ in 0..max {
                w.next().write_der(&set);
            }
        })
    });
    assert!(ibp_auth::attributes::parse_more(&too_many).is_err());
    let empty = yasna::construct_der(|w| w.write_sequence_of(|_| {}));
    assert!(ibp_auth::attributes::parse_more(&empty).is_err());
    // What a proxy carries reads back, in order.
    let p = proxy(&g, set.clone(), std::slice::from_ref(&set));
    assert_eq!(
        ibp_auth::attributes::sets_in_certificate(&p.chain[0]).unwrap(),
        vec![set.clone(), set]
    );
}

/// One VOMS extension with an AC per VO (as `voms-proxy-init -voms vo1
/// -voms vo2` makes it): the vomsdir lists vo1's server only, so vo2's AC
/// is refused for vo2 alone.
#[test]
fn voms_acs_of_several_vos_are_verified_each_on_its_own() {
    let mut g = Grid::new();
    let server = g.ca.issue_server(&["voms.example.org"], 5).unwrap();
    let (_, sc) = x509_parser::parse_x509_certificate(&server.cert_der).unwrap();
    let lsc = format!(
        "{}\n{}\n",
        slash_dn(sc.subject()).unwrap(),
        slash_dn(sc.issuer()).unwrap()
    );
    let mut dir = VomsDir::new();
    dir.insert("vo1", "voms.example.org", &lsc).unwrap();
    dir.insert("vo3", "voms.example.org", &lsc).unwrap();
    g.trust.set_vomsdir(dir);
    let (_, ee) = x509_parser::parse_x509_certificate(&g.user.cert_der).unwrap();
    let key = ibp_auth::keys::SigningKey::from_pkcs8(&server.key_pkcs8).unwrap();
    let ac = |vo: &str, fqans: &[String]| {
        voms_extension(
            &AcRequest {
                holder_issuer: ee.issuer().as_raw(),
                holder_serial: ee.raw_serial(),
                signer_cert: &server.cert_der,
                intermediates: &[],
                vo,
                host: "voms.example.org",
                port: 15000,
                fqans,
                serial: &[9],
                not_before: g.now - 60,
                not_after: g.now + 3600,
            },
            &key,
        )
        .unwrap()
    };
    let merged = ibp_auth::voms::issue::merge_extensions(&[
        ac("vo1", &["/vo1".into(), "/vo1/admins".into()]),
        ac("vo2", &["/vo2".into()]),
        ac("vo3", &["/vo3".into(), "/vo3/physics".into()]),
    ])
    .unwrap();
    assert_eq!(ibp_auth::voms::parse_extension(&merged).unwrap().len(), 3);
    let p = ProxyCredential::create_with_extensions(
        std::slice::from_ref(&g.user.cert_der),
        &g.user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: None,
            path_len: None,
        },
        &[(VOMS_EXTENSION, &merged)],
    )
    .unwrap();
    let id = verify(&g, &p).unwrap();
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vos(), ["vo1", "vo3"]);
    let in3 = id.for_vo("vo3").unwrap();
    assert_eq!(in3.groups.len(), 1);
    assert_eq!(in3.groups[0].name, "physics");
    assert_eq!(in3.vo_id, id.vo_id, "a VOMS VO ID is the certificate's");
    match id.for_vo("vo2") {
        Err(e @ AuthError::VoRefused { .. }) => {
            assert!(e.to_string().contains("vo2/voms.example.org.lsc"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}
