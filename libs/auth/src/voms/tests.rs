use super::issue::{voms_extension, wrap_acs, AcRequest};
use super::*;
use crate::keys::SigningKey;
use crate::pki::{Authority, Issued};

const HOST: &str = "voms.example.org";

struct Fixture {
    ca: Authority,
    voms: Issued,
    user: Issued,
    trust: TrustStore,
    now: i64,
}

fn lsc_for(cert_der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    format!(
        "{}\n{}\n",
        slash_dn(c.subject()).unwrap(),
        slash_dn(c.issuer()).unwrap()
    )
}

fn fixture() -> Fixture {
    let ca = Authority::new_ca("Test Grid", "Test CA", 10).unwrap();
    let voms = ca.issue_server(&[HOST], 5).unwrap();
    let user = ca.issue_user("Test Grid", "Dave", 86_400).unwrap();
    let mut trust = TrustStore::new();
    trust.add_ca(ca.cert_der.clone()).unwrap();
    let mut dir = VomsDir::new();
    dir.insert("vo1", HOST, &lsc_for(&voms.cert_der)).unwrap();
    trust.set_vomsdir(dir);
    Fixture {
        ca,
        voms,
        user,
        trust,
        now: crate::unix_now(),
    }
}

fn fqans(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Fixture {
    /// The extension for the user, signed by the VOMS server, after `edit`.
    fn ext_with<'a>(
        &'a self,
        signer: &'a Issued,
        fq: &[&str],
        edit: impl FnOnce(&mut AcRequest<'a>),
    ) -> Vec<u8> {
        let (_, ee) = x509_parser::parse_x509_certificate(&self.user.cert_der).unwrap();
        let holder_issuer: &'static [u8] = Vec::leak(ee.issuer().as_raw().to_vec());
        let holder_serial: &'static [u8] = Vec::leak(ee.raw_serial().to_vec());
        // Leaked: a test's few bytes, so that `edit` may borrow freely.
        let fq: &'static [String] = Vec::leak(fqans(fq));
        let mut req = AcRequest {
            holder_issuer,
            holder_serial,
            signer_cert: &signer.cert_der,
            intermediates: &[],
            vo: "vo1",
            host: HOST,
            port: 15000,
            fqans: fq,
            serial: &[7],
            not_before: self.now - 60,
            not_after: self.now + 3600,
        };
        edit(&mut req);
        voms_extension(&req, &SigningKey::from_pkcs8(&signer.key_pkcs8).unwrap()).unwrap()
    }

    fn ext(&self, fq: &[&str]) -> Vec<u8> {
        self.ext_with(&self.voms, fq, |_| {})
    }

    fn verify(&self, ext: &[u8]) -> Result<VomsAttributes, AuthError> {
        self.verify_at(ext, self.now)
    }

    fn verify_at(&self, ext: &[u8], now: i64) -> Result<VomsAttributes, AuthError> {
        let (_, ee) = x509_parser::parse_x509_certificate(&self.user.cert_der).unwrap();
        verify(ext, &ee, &self.trust, now)
    }
}

fn untrusted_why(r: Result<VomsAttributes, AuthError>) -> String {
    match r {
        Err(AuthError::UntrustedVomsServer { why, .. }) => why,
        other => panic!("expected an untrusted VOMS server, got {other:?}"),
    }
}

#[test]
fn a_trusted_ac_maps_to_vo_vo_id_and_groups() {
    let f = fixture();
    let ext = f.ext(&[
        "/vo1/Role=NULL/Capability=NULL",
        "/vo1/admins/Role=NULL/Capability=NULL",
        "/vo1/prod/sub/Role=manager/Capability=NULL",
        "/vo1/Role=admin",
        "/vo1/admins",
    ]);
    let a = f.verify(&ext).unwrap();
    assert_eq!(a.vo, "vo1");
    assert_eq!(a.host, HOST);
    let got: Vec<(&str, &str)> = a
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("fqan:admins", "admins"),
            ("fqan:prod:sub", "prod/sub"),
            ("fqan:prod:sub::manager", "prod/sub/Role=manager"),
            ("fqan::admin", "Role=admin"),
        ]
    );
    // The VO ID: stable for the holder, whatever the AC.
    assert!(
        a.vo_id.starts_with("voms:") && a.vo_id.len() == 37,
        "{}",
        a.vo_id
    );
    let again = f.verify(&f.ext(&["/vo1"])).unwrap();
    assert_eq!(again.vo_id, a.vo_id);
    assert!(again.groups.is_empty());
    let (_, ee) = x509_parser::parse_x509_certificate(&f.user.cert_der).unwrap();
    assert_eq!(vo_id_of(&ee).unwrap(), a.vo_id);
    // Another holder, another ID.
    let other = f.ca.issue_user("Test Grid", "Erin", 86_400).unwrap();
    let (_, oe) = x509_parser::parse_x509_certificate(&other.cert_der).unwrap();
    assert_ne!(vo_id_of(&oe).unwrap(), a.vo_id);
}

#[test]
fn refused_without_a_vomsdir() {
    let mut f = fixture();
    let ext = f.ext(&["/vo1"]);
    let mut plain = TrustStore::new();
    plain.add_ca(f.ca.cert_der.clone()).unwrap();
    f.trust = plain;
    let err = f.verify(&ext).unwrap_err();
    assert_eq!(err, AuthError::VomsNotAccepted);
    assert!(err.to_string().contains("no `vomsdir` configured"), "{err}");
}

#[test]
fn refused_without_an_lsc_for_the_vo_or_host() {
    let f = fixture();
    let vo2 = f.ext_with(&f.voms, &["/vo2"], |r| r.vo = "vo2");
    assert!(untrusted_why(f.verify(&vo2)).contains("no vo2/voms.example.org.lsc"));
    let other_host = f.ext_with(&f.voms, &["/vo1"], |r| r.host = "voms.other.org");
    assert!(untrusted_why(f.verify(&other_host)).contains("no vo1/voms.other.org.lsc"));
}

#[test]
fn refused_when_the_lsc_lists_other_dns() {
    let mut f = fixture();
    let mut dir = VomsDir::new();
    dir.insert("vo1", HOST, "/CN=voms.example.org\n/O=Other/CN=Other CA\n")
        .unwrap();
    f.trust.set_vomsdir(dir);
    let why = untrusted_why(f.verify(&f.ext(&["/vo1"])));
    assert!(
        why.contains("not listed in vo1/voms.example.org.lsc"),
        "{why}"
    );
    // The server's own certificate, but signed by another trusted server
    // that the .lsc does not name.
    let f = fixture();
    let other = f.ca.issue_server(&["voms.rogue.org"], 5).unwrap();
    let ext = f.ext_with(&other, &["/vo1"], |_| {});
    assert!(untrusted_why(f.verify(&ext)).contains("not listed"));
}

#[test]
fn refused_when_the_server_chains_to_an_untrusted_ca() {
    let mut f = fixture();
    // A rogue CA issues a certificate with the very DNs the .lsc expects.
    let rogue_ca = Authority::new_ca("Test Grid", "Test CA", 10).unwrap();
    let rogue = rogue_ca.issue_server(&[HOST], 5).unwrap();
    let mut dir = VomsDir::new();
    dir.insert("vo1", HOST, &lsc_for(&rogue.cert_der)).unwrap();
    assert_eq!(lsc_for(&rogue.cert_der), lsc_for(&f.voms.cert_der));
    f.trust.set_vomsdir(dir);
    let ext = f.ext_with(&rogue, &["/vo1"], |_| {});
    let why = untrusted_why(f.verify(&ext));
    assert!(why.contains("does not chain to a trusted CA"), "{why}");
}

#[test]
fn refused_when_expired_or_not_yet_valid() {
    let f = fixture();
    let ext = f.ext_with(&f.voms, &["/vo1"], |r| {
        r.not_before = f.now - 7200;
        r.not_after = f.now - 1000;
    });
    match f.verify(&ext) {
        Err(AuthError::Expired { what, at, .. }) => {
            assert_eq!(what, "VOMS attribute certificate");
            assert_eq!(at, f.now - 1000);
        }
        other => panic!("{other:?}"),
    }
    // Within the skew allowance: still valid.
    let ext = f.ext_with(&f.voms, &["/vo1"], |r| {
        r.not_before = f.now - 600;
        r.not_after = f.now - 60;
    });
    f.verify(&ext).unwrap();
    let ext = f.ext_with(&f.voms, &["/vo1"], |r| {
        r.not_before = f.now + 1000;
        r.not_after = f.now + 7200;
    });
    assert!(matches!(f.verify(&ext), Err(AuthError::NotYetValid { .. })));
    // The service's clock decides: the good AC, an hour and a half later.
    let good = f.ext(&["/vo1"]);
    assert!(matches!(
        f.verify_at(&good, f.now + 5400),
        Err(AuthError::Expired { .. })
    ));
}

#[test]
fn refused_for_another_holder() {
    let f = fixture();
    let other = f.ca.issue_user("Test Grid", "Erin", 86_400).unwrap();
    let (_, oe) = x509_parser::parse_x509_certificate(&other.cert_der).unwrap();
    let serial = oe.raw_serial().to_vec();
    let ext = f.ext_with(&f.voms, &["/vo1"], |r| r.holder_serial = &serial);
    assert_eq!(f.verify(&ext).unwrap_err(), AuthError::WrongHolder);
    // The holder named by its subject, as VOMS writes it: accepted; by
    // another name: refused.
    let (_, ee) = x509_parser::parse_x509_certificate(&f.user.cert_der).unwrap();
    let subject = ee.subject().as_raw().to_vec();
    let ext = f.ext_with(&f.voms, &["/vo1"], |r| r.holder_issuer = &subject);
    f.verify(&ext).unwrap();
    let other_name = oe.subject().as_raw().to_vec();
    let ext = f.ext_with(&f.voms, &["/vo1"], |r| r.holder_issuer = &other_name);
    assert_eq!(f.verify(&ext).unwrap_err(), AuthError::WrongHolder);
}

#[test]
fn refused_with_an_fqan_of_another_vo_or_malformed() {
    let f = fixture();
    for (fq, says) in [
        (vec!["/vo1", "/vo2/admins"], "is for VO \"vo2\""),
        (vec!["/vo2"], "is for VO \"vo2\""),
        (vec!["vo1/admins"], "does not start with /"),
        (vec!["/vo1/g/Capability=x"], "capabilities"),
        (vec!["/vo1/Role=a/Role=b"], "two roles"),
        (vec!["/vo1/Role=a/g"], "a group follows the role"),
        (vec!["/vo1/../g"], "bad group name"),
    ] {
        let ext = f.ext(&fq);
        match f.verify(&ext) {
            Err(AuthError::Voms(m)) => assert!(m.contains(says), "{fq:?}: {m}"),
            other => panic!("{fq:?}: {other:?}"),
        }
    }
}

#[test]
fn refused_with_a_bad_signature() {
    let f = fixture();
    let ext = f.ext(&["/vo1"]);
    let acs = parse_extension(&ext).unwrap();
    // Flip one bit of the signature: find its bytes at the end of the AC.
    let mut der = ext.clone();
    let n = der.len();
    der[n - 5] ^= 1;
    assert_eq!(parse_extension(&der).unwrap()[0].tbs, acs[0].tbs);
    assert_eq!(
        f.verify(&der).unwrap_err(),
        AuthError::BadSignature {
            what: "VOMS attribute certificate"
        }
    );
    // Signed by another key, carrying the trusted server's certificate.
    let (_, rogue_key) = crate::pki::new_csr("rogue").unwrap();
    let impostor = Issued {
        cert_der: f.voms.cert_der.clone(),
        key_pkcs8: rogue_key,
    };
    let ext = f.ext_with(&impostor, &["/vo1"], |_| {});
    assert!(matches!(
        f.verify(&ext),
        Err(AuthError::BadSignature { .. })
    ));
}

#[test]
fn parser_is_strict_and_bounded() {
    let f = fixture();
    let ext = f.ext(&["/vo1"]);
    let ac = parse_extension(&ext).unwrap().remove(0);
    assert_eq!(ac.fqans, ["/vo1"]);
    assert_eq!(ac.policy_authority, "vo1://voms.example.org:15000");
    assert_eq!(ac.certs.len(), 1);
    assert_eq!(ac.certs[0], f.voms.cert_der);
    // Every truncation is refused (and nothing panics).
    for n in 0..ext.len() {
        assert!(parse_extension(&ext[..n]).is_err(), "truncated at {n}");
    }
    // Trailing bytes.
    let mut trailing = ext.clone();
    trailing.push(0);
    assert!(parse_extension(&trailing).is_err());
    // Too large, too many ACs, none.
    assert!(parse_extension(&vec![0x30; ac::MAX_EXTENSION + 1]).is_err());
    let inner = crate::der::sequence_contents(crate::der::sequence_contents(&ext).unwrap())
        .unwrap()
        .to_vec();
    assert!(parse_extension(&wrap_acs(&vec![inner.clone(); ac::MAX_ACS])).is_ok());
    assert!(parse_extension(&wrap_acs(&vec![inner; ac::MAX_ACS + 1])).is_err());
    assert!(parse_extension(&wrap_acs(&[])).is_err());
    // Too many FQANs.
    let many: Vec<String> = (0..=ac::MAX_FQANS).map(|i| format!("/vo1/g{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(parse_extension(&f.ext(&refs)).is_err());
    assert!(parse_extension(&f.ext(&refs[..ac::MAX_FQANS])).is_ok());
    // An FQAN longer than MAX_TEXT, or with a space.
    let long = format!("/vo1/{}", "g".repeat(ac::MAX_TEXT));
    assert!(parse_extension(&f.ext(&[&long])).is_err());
    assert!(parse_extension(&f.ext(&["/vo1/a b"])).is_err());
}

#[test]
fn policy_authority_must_name_vo_host_and_port() {
    assert_eq!(
        policy_authority("vo1://voms.example.org:15000").unwrap(),
        ("vo1".into(), "voms.example.org".into())
    );
    for bad in [
        "vo1://voms.example.org",
        "vo1:/voms:1",
        "../x://h:1",
        "vo1://../etc:1",
        "vo1://h:x",
        "://h:1",
    ] {
        assert!(policy_authority(bad).is_err(), "{bad}");
    }
}

#[test]
fn fqans_for_groups_map_back_to_the_same_groups() {
    let fq = super::issue::fqans_for(
        "vo1",
        &["admins", "a/b", "Role=admin", "with space", "admins"],
    );
    assert_eq!(fq, ["/vo1", "/vo1/admins", "/vo1/a/b", "/vo1/Role=admin"]);
    let names: Vec<String> = groups_of("vo1", &fq)
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["admins", "a/b", "Role=admin"]);
}

/// A bounded stand-in for a fuzzer: every single-byte mutation of a valid
/// extension parses or is refused, and verifies or is refused, without a
/// panic; none of them verifies with other content than the original's.
#[test]
fn single_byte_mutations_never_panic_nor_pass_altered() {
    let f = fixture();
    let ext = f.ext(&["/vo1", "/vo1/admins"]);
    let good = f.verify(&ext).unwrap();
    for i in 0..ext.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut m = ext.clone();
            m[i] ^= x;
            let _ = parse_extension(&m);
            if let Ok(a) = f.verify(&m) {
                assert_eq!(a, good, "byte {i} ^ {x:#x} verified with other content");
            }
        }
    }
}
