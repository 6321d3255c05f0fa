//! The secure port (IBP_auth): TLS 1.3 with a proxy chain carrying VO
//! attributes, AUTH with an L-Bone depot grant, VO policy, file-bound
//! blocks and file tickets, against real depot processes with a PKI minted
//! here.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{DepotBuilder, DepotProc};
use ibp_auth::keys::{ed25519_public, format_public_key, generate_ed25519};
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::tokens::{DepotGrant, FileTicket};
use ibp_auth::{unix_now, ProxyCredential, TrustStore};
use ibp_depot_client::{ClientError, DataClient, SecureClient};
use ibp_proto::{Expect, IbpError, Reliability, Rid};
use ibp_testkit::clock::ProcessClock;
use ibp_testkit::pki::{pem_of, write, Pki};
use ring::signature::Ed25519KeyPair;
use tempfile::TempDir;

const FILE: &str = "6f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0";
const OTHER_FILE: &str = "00000000-1111-4222-8333-444444444444";

/// A CA, an AA for vo1 and vo2, an L-Bone and a metadata-manager key, the
/// depot's certificate, and a depot configuration.
struct Grid {
    dir: TempDir,
    pki: Pki,
    lbone: Ed25519KeyPair,
    mdm: Ed25519KeyPair,
    /// What clients trust (the CA).
    client_trust: TrustStore,
}

impl Grid {
    fn new() -> Grid {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["vo1", "vo2"]);
        let server = pki
            .ca
            .issue_server(&["localhost", "127.0.0.1"], 30)
            .unwrap();
        let lbone_key = generate_ed25519().unwrap();
        let mdm_key = generate_ed25519().unwrap();
        let trust = dir.path().join("trust");
        pki.write_trust(&trust, &["vo1", "vo2"]);
        write(
            &trust.join("lbone/lbone.pub"),
            &format_public_key(&ed25519_public(&lbone_key).unwrap()),
        );
        write(
            &trust.join("metadata/mdm.pub"),
            &format_public_key(&ed25519_public(&mdm_key).unwrap()),
        );
        write(
            &dir.path().join("depot.pem"),
            &pem_of("CERTIFICATE", &server.cert_der),
        );
        ibp_auth::keys::write_secret(
            &dir.path().join("depot.key"),
            pem_of("PRIVATE KEY", &server.key_pkcs8).as_bytes(),
        )
        .unwrap();
        let mut client_trust = TrustStore::new();
        client_trust.add_ca(pki.ca.cert_der.clone()).unwrap();
        Grid {
            dir,
            pki,
            lbone: Ed25519KeyPair::from_pkcs8(&lbone_key).unwrap(),
            mdm: Ed25519KeyPair::from_pkcs8(&mdm_key).unwrap(),
            client_trust,
        }
    }

    /// Writes a depot configuration (`top` goes before the tables) that
    /// serves vo1 only.
    fn config(&self, top: &str) -> PathBuf {
        self.config_with(top, "")
    }

    /// [`config`](Self::config) with `tail` after vo1's settings (more
    /// `[[vo]]` keys, then other tables).
    fn config_with(&self, top: &str, tail: &str) -> PathBuf {
        let d = self.dir.path();
        let text = format!(
            "{top}\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrust_dir = \"{}\"\n\n[[vo]]\nname = \"vo1\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n{tail}\n",
            d.join("depot.pem").display(),
            d.join("depot.key").display(),
            d.join("trust").display(),
        );
        let path = d.join(format!("depot-{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn depot_builder(&self, top: &str) -> DepotBuilder {
        DepotBuilder::new()
            .arg("--config")
            .arg(self.config(top))
            .tls()
    }

    fn depot(&self) -> DepotProc {
        self.depot_builder("").spawn()
    }

    /// A configuration whose `[[vo]]` tables are `vos` exactly (none
    /// implied), for restarts that change which VOs are served.
    fn config_vos(&self, vos: &str) -> PathBuf {
        let d = self.dir.path();
        let text = format!(
            "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrust_dir = \"{}\"\n\n{vos}\n",
            d.join("depot.pem").display(),
            d.join("depot.key").display(),
            d.join("trust").display(),
        );
        let path = d.join(format!("depot-vos-{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A user of `vo` with a proxy carrying the AA-signed attributes.
    fn user(&self, name: &str, vo: &str, vo_id: &str) -> ProxyCredential {
        self.user_in(name, vo, vo_id, &[])
    }

    /// [`user`](Self::user) with VO groups (names) in the attributes.
    fn user_in(&self, name: &str, vo: &str, vo_id: &str, groups: &[&str]) -> ProxyCredential {
        let ids: Vec<String> = groups.iter().map(|g| format!("{vo}:g:{g}")).collect();
        let groups: Vec<(&str, &str)> = ids
            .iter()
            .map(String::as_str)
            .zip(groups.iter().copied())
            .collect();
        self.pki
            .member(name, vo)
            .vo_id(vo_id)
            .groups(&groups)
            .attributes_valid(-60, 3600)
            .lifetimes(12 * 3600, 3600)
            .proxy()
    }

    fn grant_with(
        &self,
        f: impl FnOnce(&mut DepotGrant),
        depot: &DepotProc,
        holder: &ProxyCredential,
        vo: &str,
        vo_id: &str,
    ) -> String {
        let now = unix_now();
        let mut g = DepotGrant {
            depot: format!("127.0.0.1:{}", tls_port(depot)),
            vo: vo.into(),
            vo_id: vo_id.into(),
            holder: holder.key_hash().unwrap(),
            issued: now,
            not_after: now + 600,
        };
        f(&mut g);
        g.sign(&self.lbone)
    }

    fn grant(&self, depot: &DepotProc, holder: &ProxyCredential) -> String {
        self.grant_with(|_| {}, depot, holder, "vo1", "vo1:0001")
    }

    fn ticket_with(&self, f: impl FnOnce(&mut FileTicket), holder: &ProxyCredential) -> String {
        let now = unix_now();
        let mut t = FileTicket {
            file: FILE.into(),
            vo: "vo1".into(),
            vo_id: "vo1:0001".into(),
            holder: holder.key_hash().unwrap(),
            issued: now,
            not_after: now + 600,
        };
        f(&mut t);
        t.sign(&self.mdm)
    }

    fn ticket(&self, holder: &ProxyCredential) -> String {
        self.ticket_with(|_| {}, holder)
    }

    async fn connect(&self, depot: &DepotProc, cred: &ProxyCredential) -> SecureClient {
        let mut c = SecureClient::connect(
            &format!("127.0.0.1:{}", tls_port(depot)),
            "127.0.0.1",
            &self.client_trust,
            cred,
        )
        .await
        .unwrap();
        c.set_timeout(Duration::from_secs(10));
        c
    }

    /// Connected and authenticated as `cred` (vo1).
    async fn session(&self, depot: &DepotProc, cred: &ProxyCredential) -> SecureClient {
        let mut c = self.connect(depot, cred).await;
        c.auth(&self.grant(depot, cred)).await.unwrap();
        c
    }
}

fn tls_port(d: &DepotProc) -> u16 {
    d.tls_addr.expect("depot serves a TLS port").port()
}

fn alice(g: &Grid) -> ProxyCredential {
    g.user("Alice", "vo1", "vo1:0001")
}

/// The error of a refused request: the code, and the reason when one was given.
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (IbpError, String) {
    match r {
        Err(ClientError::Refused { error, reason }) => (error, reason),
        Err(ClientError::Ibp(e)) => (e, String::new()),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// AUTH with `grant` is refused with -12 and a reason containing `why`,
/// and the connection is closed.
async fn auth_refused(g: &Grid, depot: &DepotProc, cred: &ProxyCredential, grant: &str, why: &str) {
    let mut c = g.connect(depot, cred).await;
    let (e, reason) = refused(c.auth(grant).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(
        reason.contains(why),
        "reason {reason:?} does not say {why:?}"
    );
    // The client does not reconnect; the depot closed the session.
    assert!(c.status(Rid(0)).await.is_err());
}

#[tokio::test]
async fn happy_path_allocate_store_load_with_ticket() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let mut c = g.session(&depot, &a).await;
    assert_eq!(
        c.cipher_suite(),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 3 << 20)
        .await
        .unwrap();
    // Capabilities handed out on the secure port name the secure port.
    assert_eq!(caps.read.port, tls_port(&depot));
    let data: Vec<u8> = (0..(3u32 << 20) - 5).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        c.store(&caps.write, FILE, &data[..1 << 20]).await.unwrap(),
        1 << 20
    );
    assert_eq!(
        c.store(&caps.write, FILE, &data[1 << 20..]).await.unwrap(),
        (data.len() - (1 << 20)) as u64
    );
    let got = c
        .load(&caps.read, 0, data.len() as u64, Some(&g.ticket(&a)))
        .await
        .unwrap();
    assert!(got == data, "loaded bytes differ");
    let small = c
        .load(&caps.read, 10, 20, Some(&g.ticket(&a)))
        .await
        .unwrap();
    assert_eq!(small, data[10..30]);
    // WRITE with the same UUID is fine.
    assert_eq!(c.write_at(&caps.write, 0, FILE, b"xyz").await.unwrap(), 3);
    let p = c.probe(&caps.manage).await.unwrap();
    assert_eq!(p.size, data.len() as u64);
    let st = c.status(Rid(0)).await.unwrap();
    assert!(st.total_used >= 3 << 20);
}

#[tokio::test]
async fn command_before_auth_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let mut c = g.connect(&depot, &a).await;
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 1024).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("AUTH"), "{reason}");
    assert!(c.status(Rid(0)).await.is_err(), "connection must be closed");
    // STATUS is the exception (tests/secure_status.rs): a verified peer
    // may ask it before AUTH.
    let mut c = g.connect(&depot, &a).await;
    assert!(c.status(Rid(0)).await.is_ok());
    // Nor are legacy request lines.
    let mut c = g.connect(&depot, &a).await;
    let (e, _) = refused(c.raw("1 4 0 1 ibp 30\n", Expect::Payload).await);
    assert_eq!(e, IbpError::ProtocolVersion);
}

#[tokio::test]
async fn grant_for_another_depot_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let grant = g.grant_with(
        |gr| gr.depot = "127.0.0.1:1".into(),
        &depot,
        &a,
        "vo1",
        "vo1:0001",
    );
    auth_refused(&g, &depot, &a, &grant, "depot").await;
}

#[tokio::test]
async fn grant_bound_to_another_holder_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    // Another proxy of the same user (same VO ID, another key).
    let other = alice(&g);
    let grant = g.grant(&depot, &other);
    auth_refused(&g, &depot, &a, &grant, "grant refused").await;
}

#[tokio::test]
async fn expired_grant_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let now = unix_now();
    let grant = g.grant_with(
        |gr| {
            gr.issued = now - 7200;
            gr.not_after = now - 3600;
        },
        &depot,
        &a,
        "vo1",
        "vo1:0001",
    );
    auth_refused(&g, &depot, &a, &grant, "expired").await;
}

#[tokio::test]
async fn badly_signed_grant_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let grant = g.grant(&depot, &a);
    let mut bytes = grant.into_bytes();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    auth_refused(&g, &depot, &a, &tampered, "signature").await;
    // A grant signed by a key the depot does not trust.
    let rogue = Ed25519KeyPair::from_pkcs8(&generate_ed25519().unwrap()).unwrap();
    let now = unix_now();
    let rogue_grant = DepotGrant {
        depot: format!("127.0.0.1:{}", tls_port(&depot)),
        vo: "vo1".into(),
        vo_id: "vo1:0001".into(),
        holder: a.key_hash().unwrap(),
        issued: now,
        not_after: now + 600,
    }
    .sign(&rogue);
    auth_refused(&g, &depot, &a, &rogue_grant, "grant refused").await;
}

#[tokio::test]
async fn vo_not_served_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let bob = g.user("Bob", "vo2", "vo2:0007");
    let grant = g.grant_with(|_| {}, &depot, &bob, "vo2", "vo2:0007");
    auth_refused(&g, &depot, &bob, &grant, "not served").await;
}

#[tokio::test]
async fn grant_for_another_vo_identity_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let grant = g.grant_with(|_| {}, &depot, &a, "vo1", "vo1:9999");
    auth_refused(&g, &depot, &a, &grant, "vo1:9999").await;
}

#[tokio::test]
async fn vo_limits_on_allocate() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let mut c = g.session(&depot, &a).await;
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 5 << 20).await);
    assert_eq!(e, IbpError::WouldExceedLimit);
    assert!(reason.contains("max_size"), "{reason}");
    let mut c = g.session(&depot, &a).await;
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 7200, 1024).await);
    assert_eq!(e, IbpError::LongDuration);
    assert!(reason.contains("max_duration"), "{reason}");
    // -1 means the VO's maximum.
    let mut c = g.session(&depot, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, -1, 1024)
        .await
        .unwrap();
    let p = c.probe(&caps.manage).await.unwrap();
    assert!(p.seconds_left <= 3600 && p.seconds_left > 3500, "{p:?}");
}

#[tokio::test]
async fn second_store_with_another_uuid_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let mut c = g.session(&depot, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 1024)
        .await
        .unwrap();
    c.store(&caps.write, FILE, b"first").await.unwrap();
    let (e, reason) = refused(c.store(&caps.write, OTHER_FILE, b"second").await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("another file"), "{reason}");
    let mut c = g.session(&depot, &a).await;
    let (e, _) = refused(c.write_at(&caps.write, 0, OTHER_FILE, b"x").await);
    assert_eq!(e, IbpError::CapAccessDenied);
    // Nothing of the refused writes landed.
    let mut c = g.session(&depot, &a).await;
    assert_eq!(c.probe(&caps.manage).await.unwrap().size, 5);
}

/// A session holding an allocation bound to FILE with "hello" in it.
async fn stored(g: &Grid, depot: &DepotProc, a: &ProxyCredential) -> ibp_depot_client::Caps {
    let mut c = g.session(depot, a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 1024)
        .await
        .unwrap();
    c.store(&caps.write, FILE, b"hello").await.unwrap();
    caps
}

async fn load_refused(
    g: &Grid,
    depot: &DepotProc,
    a: &ProxyCredential,
    caps: &ibp_depot_client::Caps,
    ticket: Option<&str>,
    why: &str,
) {
    let c = g.session(depot, a).await;
    load_refused_on(c, caps, ticket, why).await;
}

/// LOAD of `caps`' "hello" on `c` is refused with `-12`, saying `why`.
async fn load_refused_on(
    mut c: SecureClient,
    caps: &ibp_depot_client::Caps,
    ticket: Option<&str>,
    why: &str,
) {
    let (e, reason) = refused(c.load(&caps.read, 0, 5, ticket).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(
        reason.contains(why),
        "reason {reason:?} does not say {why:?}"
    );
}

#[tokio::test]
async fn expired_ticket_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let now = unix_now();
    let t = g.ticket_with(
        |t| {
            t.issued = now - 7200;
            t.not_after = now - 3600;
        },
        &a,
    );
    load_refused(&g, &depot, &a, &caps, Some(&t), "expired").await;
}

#[tokio::test]
async fn ticket_for_another_file_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let t = g.ticket_with(|t| t.file = OTHER_FILE.into(), &a);
    load_refused(&g, &depot, &a, &caps, Some(&t), "file").await;
}

#[tokio::test]
async fn ticket_of_another_holder_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let other = alice(&g);
    load_refused(
        &g,
        &depot,
        &a,
        &caps,
        Some(&g.ticket(&other)),
        "ticket refused",
    )
    .await;
}

#[tokio::test]
async fn ticket_from_untrusted_signer_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    // Signed by the L-Bone key: trusted for grants, not for tickets.
    let now = unix_now();
    let t = FileTicket {
        file: FILE.into(),
        vo: "vo1".into(),
        vo_id: "vo1:0001".into(),
        holder: a.key_hash().unwrap(),
        issued: now,
        not_after: now + 600,
    }
    .sign(&g.lbone);
    load_refused(&g, &depot, &a, &caps, Some(&t), "ticket refused").await;
}

#[tokio::test]
async fn missing_ticket_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    load_refused(&g, &depot, &a, &caps, None, "needs a file ticket").await;
}

/// LOAD without AUTH: the ticket alone authorizes it (reads work while the
/// L-Bone is down); nothing else is allowed on such a connection.
#[tokio::test]
async fn load_with_ticket_needs_no_auth() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let mut c = g.connect(&depot, &a).await;
    let data = c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap();
    assert_eq!(data, b"hello");
    let data = c.load(&caps.read, 1, 3, Some(&g.ticket(&a))).await.unwrap();
    assert_eq!(data, b"ell");
    // A PROBE or an ALLOCATE still needs a session.
    let (e, reason) = refused(c.probe(&caps.manage).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("before AUTH"), "{reason}");
}

async fn load_refused_no_auth(
    g: &Grid,
    depot: &DepotProc,
    a: &ProxyCredential,
    caps: &ibp_depot_client::Caps,
    ticket: Option<&str>,
    why: &str,
) {
    load_refused_on(g.connect(depot, a).await, caps, ticket, why).await;
}

#[tokio::test]
async fn load_without_auth_checks_the_ticket() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    load_refused_no_auth(&g, &depot, &a, &caps, None, "needs a file ticket").await;
    let other = alice(&g);
    let t = g.ticket(&other);
    load_refused_no_auth(&g, &depot, &a, &caps, Some(&t), "ticket refused").await;
    let t = g.ticket_with(|t| t.file = OTHER_FILE.into(), &a);
    load_refused_no_auth(&g, &depot, &a, &caps, Some(&t), "file").await;
    let now = unix_now();
    let t = g.ticket_with(
        |t| {
            t.issued = now - 7200;
            t.not_after = now - 3600;
        },
        &a,
    );
    load_refused_no_auth(&g, &depot, &a, &caps, Some(&t), "expired").await;
    // Bound to the right key but naming another member.
    let t = g.ticket_with(|t| t.vo_id = "vo1:0002".into(), &a);
    load_refused_no_auth(&g, &depot, &a, &caps, Some(&t), "is for").await;
}

#[tokio::test]
async fn load_of_unbound_allocation_is_refused() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let mut c = g.session(&depot, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 1024)
        .await
        .unwrap();
    load_refused(&g, &depot, &a, &caps, Some(&g.ticket(&a)), "not bound").await;
}

#[tokio::test]
async fn session_allocation_is_invisible_on_the_legacy_port() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    // Same key and typekeys, on the legacy port.
    for (line, what) in [
        (common::load_line(&caps.read, 0, 5), "LOAD"),
        (common::probe_line(&caps.manage), "PROBE"),
        (common::store_line(&caps.write, 3), "STORE"),
    ] {
        let mut c = depot.connect();
        assert_eq!(c.request(&line), " -4 \n", "{what}");
    }
    // And a legacy allocation is invisible on the secure port.
    let legacy = depot.allocate(600, 1024);
    let mut c = g.session(&depot, &a).await;
    let caps2 = ibp_depot_client::Caps {
        read: legacy.read.clone(),
        write: legacy.write.clone(),
        manage: legacy.manage.clone(),
    };
    assert_eq!(
        refused(c.probe(&caps2.manage).await).0,
        IbpError::CapNotFound
    );
}

#[tokio::test]
async fn legacy_false_serves_no_legacy_port() {
    let g = Grid::new();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let depot = g
        .depot_builder("legacy = false")
        .listen(&format!("127.0.0.1:{port}"))
        .spawn();
    // The first line names the TLS port.
    assert_eq!(depot.addr, depot.tls_addr.unwrap());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let mut c = g.session(&depot, &a).await;
    assert_eq!(
        c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn restart_keeps_owner_and_uuid_binding() {
    let g = Grid::new();
    let data = tempfile::tempdir().unwrap();
    let builder = g.depot_builder("").data(data.path());
    let mut depot = builder.spawn();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    depot.kill_now();
    let depot = builder.spawn();
    // Still owned: invisible on the legacy port.
    let mut c = depot.connect();
    assert_eq!(c.request(&common::load_line(&caps.read, 0, 5)), " -4 \n");
    // Still bound: another UUID is refused, the ticket for FILE reads.
    let mut s = g.session(&depot, &a).await;
    let (e, _) = refused(s.store(&caps.write, OTHER_FILE, b"x").await);
    assert_eq!(e, IbpError::CapAccessDenied);
    let mut s = g.session(&depot, &a).await;
    assert_eq!(
        s.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn session_ends_with_its_grant() {
    let g = Grid::new();
    let clock = ProcessClock::new();
    let depot = g.depot_builder("").clock(&clock).spawn();
    let a = alice(&g);
    let now = unix_now();
    let grant = g.grant_with(|gr| gr.not_after = now + 60, &depot, &a, "vo1", "vo1:0001");
    let caps = stored(&g, &depot, &a).await;
    let mut c = g.connect(&depot, &a).await;
    c.auth(&grant).await.unwrap();
    // Past the grant and the depot's 120 s clock-skew allowance.
    clock.advance(60 + 120 + 10);
    // A LOAD's ticket is its own authorization, session or not.
    let data = c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap();
    assert_eq!(data, b"hello");
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 1024).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn proxy_without_vo_attributes_is_refused_at_auth() {
    let g = Grid::new();
    let depot = g.depot();
    let user = g.pki.ca.issue_user("Test Grid", "Carol", 3600).unwrap();
    let plain = ProxyCredential::create(
        std::slice::from_ref(&user.cert_der),
        &user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: None,
            path_len: None,
        },
    )
    .unwrap();
    let grant = g.grant(&depot, &plain);
    auth_refused(&g, &depot, &plain, &grant, "credential refused").await;
}

#[tokio::test]
async fn secure_lines_may_exceed_the_legacy_limit() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    // A 4096-character token makes the AUTH line longer than the legacy
    // port's 4096-byte limit: it is parsed (and refused as a grant), not
    // rejected as a malformed line.
    let token = format!("{}.{}", "A".repeat(4000), "B".repeat(95));
    assert_eq!(token.len(), 4096);
    let mut c = g.connect(&depot, &a).await;
    let line = format!("2 20 {token} 300\n");
    assert!(line.len() > ibp_proto::MAX_LINE);
    let (e, reason) = refused(c.raw(&line, Expect::Ok).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(reason.contains("grant refused"), "{reason}");
    // Past the secure limit the line is malformed (-21).
    let mut c = g.connect(&depot, &a).await;
    let line = format!("2 20 {}.B 300\n", "A".repeat(ibp_proto::MAX_SECURE_LINE));
    let (e, _) = refused(c.raw(&line, Expect::Ok).await);
    assert_eq!(e, IbpError::BadFormat);
}

/// Quotas: per VO, per user by default and per user by override; two
/// concurrent allocations that together exceed the VO quota: exactly one
/// succeeds; usage survives a restart and is given back on delete.
#[tokio::test]
async fn vo_and_user_quotas() {
    let g = Grid::new();
    let data = tempfile::tempdir().unwrap();
    let tail = "quota = \"3MiB\"\nuser_quota = \"512KiB\"\n[[user]]\nvo = \"vo1\"\nvo_id = \"vo1:0001\"\nquota = \"3MiB\"\n";
    let builder = DepotBuilder::new()
        .data(data.path())
        .arg("--config")
        .arg(g.config_with("", tail))
        .tls();
    let mut depot = builder.spawn();
    let a = alice(&g);
    // Bob has the VO's default user quota.
    let bob = g.user("Bob", "vo1", "vo1:0002");
    let mut c = g.connect(&depot, &bob).await;
    // QUOTA needs a session (it answers the session's owner).
    let (e, reason) = refused(c.quota().await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("QUOTA before AUTH"), "{reason}");
    let mut c = g.connect(&depot, &bob).await;
    c.auth(&g.grant_with(|_| {}, &depot, &bob, "vo1", "vo1:0002"))
        .await
        .unwrap();
    let q = c.quota().await.unwrap();
    assert_eq!(
        (q.vo_used, q.vo_limit, q.user_used, q.user_limit),
        (0, Some(3 << 20), 0, Some(512 << 10)),
        "the VO's quota and Bob's default one"
    );
    c.allocate(Rid(0), Reliability::Hard, 600, 512 << 10)
        .await
        .unwrap();
    let q = c.quota().await.unwrap();
    assert_eq!(
        (q.vo_used, q.user_used, q.remaining()),
        (512 << 10, 512 << 10, Some(0))
    );
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 1).await);
    assert_eq!(e, IbpError::WouldExceedLimit);
    assert!(reason.starts_with("user quota exceeded"), "{reason}");
    // Alice may use 3 MiB, but Bob holds 512 KiB of the VO's 3 MiB: of two
    // concurrent 2 MiB allocations exactly one fits.
    let mut c1 = g.session(&depot, &a).await;
    let mut c2 = g.session(&depot, &a).await;
    let (r1, r2) = tokio::join!(
        c1.allocate(Rid(0), Reliability::Hard, 600, 2 << 20),
        c2.allocate(Rid(0), Reliability::Hard, 600, 2 << 20)
    );
    let (won, lost) = match (r1, r2) {
        (Ok(caps), Err(e)) | (Err(e), Ok(caps)) => (caps, Err::<(), _>(e)),
        other => panic!("expected exactly one success: {other:?}"),
    };
    let (e, reason) = refused(lost);
    assert_eq!(e, IbpError::WouldExceedLimit);
    assert!(reason.starts_with("vo quota exceeded"), "{reason}");
    // The usage is recomputed from the journal on restart.
    depot.sigterm();
    depot.wait_exit(Duration::from_secs(10));
    let depot = builder.spawn();
    let mut c = g.session(&depot, &a).await;
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 1 << 20).await);
    assert_eq!(e, IbpError::WouldExceedLimit);
    assert!(reason.starts_with("vo quota exceeded"), "{reason}");
    let mut c = g.session(&depot, &a).await;
    c.allocate(Rid(0), Reliability::Hard, 600, 512 << 10)
        .await
        .unwrap();
    // Alice's override, and what she and the VO use (Bob's 512 KiB too).
    let q = c.quota().await.unwrap();
    assert_eq!(
        (
            q.vo_used,
            q.vo_limit,
            q.user_used,
            q.user_limit,
            q.remaining()
        ),
        (3 << 20, Some(3 << 20), 5 << 19, Some(3 << 20), Some(0))
    );
    // Deleting the 2 MiB allocation gives its bytes back.
    c.decr(&won.manage, 1).await.unwrap();
    let big = c
        .allocate(Rid(0), Reliability::Hard, 600, 2 << 20)
        .await
        .unwrap();
    // Growing an allocation with MANAGE CHNG counts against the quota too.
    let (e, reason) = refused(
        c.change(
            &big.manage,
            ibp_proto::Attributes {
                max_size: 4 << 20,
                duration: 0,
                reliability: 0,
            },
        )
        .await,
    );
    assert_eq!(e, IbpError::WouldExceedLimit);
    assert!(reason.starts_with("vo quota exceeded"), "{reason}");
}

/// A depot with its own certificate (serverAuth and clientAuth, as a depot
/// that is the source of a secure COPY needs), and its key hash.
fn host_depot(g: &Grid, name: &str) -> (DepotProc, [u8; 32], ProxyCredential) {
    host_depot_with(g, name, "", false)
}

/// [`host_depot`] with `top` at the top of its configuration, and a
/// metrics endpoint when `metrics`.
fn host_depot_with(
    g: &Grid,
    name: &str,
    top: &str,
    metrics: bool,
) -> (DepotProc, [u8; 32], ProxyCredential) {
    let d = g.dir.path();
    let (cert_path, key_path) = (d.join(format!("{name}.pem")), d.join(format!("{name}.key")));
    let (cert, key) = g
        .pki
        .service(&format!("depot {name}"), &["localhost", "127.0.0.1"]);
    write(&cert_path, &pem_of("CERTIFICATE", &cert));
    ibp_auth::keys::write_secret(&key_path, pem_of("PRIVATE KEY", &key).as_bytes()).unwrap();
    let text = format!(
        "{top}\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrust_dir = \"{}\"\n\n[[vo]]\nname = \"vo1\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n",
        cert_path.display(),
        key_path.display(),
        d.join("trust").display(),
    );
    let cfg = d.join(format!("{name}.toml"));
    std::fs::write(&cfg, text).unwrap();
    let mut b = DepotBuilder::new().arg("--config").arg(cfg).tls();
    if metrics {
        b = b.metrics();
    }
    let depot = b.spawn();
    let cred = ProxyCredential {
        chain: vec![cert],
        key_pkcs8: key,
    };
    let hash = cred.key_hash().unwrap();
    (depot, hash, cred)
}

/// Secure COPY: the source depot authenticates at the target with its own
/// certificate and a grant for the target bound to its key; the copy is
/// bound to the same file UUID and loadable there with a ticket.
#[tokio::test]
async fn secure_copy_between_depots() {
    let g = Grid::new();
    let (src, src_key, src_cred) = host_depot(&g, "src");
    let (dst, _, _) = host_depot(&g, "dst");
    let a = alice(&g);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut c = g.session(&src, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
        .await
        .unwrap();
    c.store(&caps.write, FILE, &data).await.unwrap();
    let mut t = g.session(&dst, &a).await;
    let target = t
        .allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
        .await
        .unwrap();
    let delegated = g.grant_with(|gr| gr.holder = src_key, &dst, &a, "vo1", "vo1:0001");
    let n = c
        .copy(
            &caps.read,
            &target.write,
            0,
            data.len() as u64,
            &delegated,
            FILE,
        )
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    let got = t
        .load(&target.read, 0, data.len() as u64, Some(&g.ticket(&a)))
        .await
        .unwrap();
    assert!(got == data, "copied bytes differ");
    // The copy is bound to the same file.
    let (e, reason) = refused(t.store(&target.write, OTHER_FILE, b"x").await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");

    // A grant bound to another key (the user's own) is refused by the target.
    let mut t = g.session(&dst, &a).await;
    let target2 = t
        .allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
        .await
        .unwrap();
    let own = g.grant(&dst, &a);
    let (e, reason) = refused(c.copy(&caps.read, &target2.write, 0, 10, &own, FILE).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(reason.contains("target depot"), "{reason}");
    assert!(reason.contains("grant refused"), "{reason}");
    // The source allocation must be bound to the UUID given.
    let mut c = g.session(&src, &a).await;
    let (e, reason) = refused(
        c.copy(&caps.read, &target2.write, 0, 10, &delegated, OTHER_FILE)
            .await,
    );
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(reason.contains("not bound"), "{reason}");

    // A delegated session may only STORE and WRITE.
    let mut as_depot = g.connect(&dst, &src_cred).await;
    as_depot.auth(&delegated).await.unwrap();
    let (e, reason) = refused(as_depot.allocate(Rid(0), Reliability::Hard, 600, 10).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(reason.contains("delegated"), "{reason}");
    // A plain certificate without a grant bound to its key gets nowhere.
    let mut as_depot = g.connect(&dst, &src_cred).await;
    let (e, _) = refused(as_depot.auth(&own).await);
    assert_eq!(e, IbpError::CapAccessDenied);

    // A legacy-port COPY cannot reach a secure allocation: not through the
    // legacy port (owned allocations do not exist there) ...
    let mut l = ibp_depot_client::IbpClient::connect(&src.addr.to_string())
        .await
        .unwrap();
    l.set_timeout(Duration::from_secs(10));
    let lcaps = l
        .allocate(Rid(0), Reliability::Hard, 600, 1024)
        .await
        .unwrap();
    l.store(&lcaps.write, b"legacy").await.unwrap();
    let mut via_legacy = target2.write.clone();
    via_legacy.port = dst.addr.port();
    let r = l.copy(&lcaps.read, &via_legacy, 0, 6).await;
    assert_eq!(r.unwrap_err().ibp(), Some(IbpError::CapNotFound));
    // ... nor through the secure port, which speaks only TLS.
    let r = l.copy(&lcaps.read, &target2.write, 0, 6).await;
    assert!(r.is_err(), "{r:?}");
    let mut t = g.session(&dst, &a).await;
    assert_eq!(t.probe(&target2.manage).await.unwrap().size, 0);
}

/// A secure COPY whose target never answers (a firewall, a hung host: the
/// port takes the TCP connection and says nothing) fails once the
/// source's `io_timeout` (here 2 s; 10 s at most) has passed, not after
/// the client library's 60 s: the client, which then sends the replica
/// itself, waits that much less. The source serves on.
#[tokio::test]
async fn a_secure_copy_to_a_silent_target_fails_within_the_io_timeout() {
    let g = Grid::new();
    let (src, src_key, _) = host_depot_with(&g, "src", "io_timeout = 2", false);
    let (dst, _, _) = host_depot(&g, "dst");
    let a = alice(&g);
    let mut c = g.session(&src, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
        .await
        .unwrap();
    c.store(&caps.write, FILE, b"replica").await.unwrap();
    let mut t = g.session(&dst, &a).await;
    let target = t
        .allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
        .await
        .unwrap();
    let delegated = g.grant_with(|gr| gr.holder = src_key, &dst, &a, "vo1", "vo1:0001");

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut to_silent = target.write.clone();
    to_silent.port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let r = c.copy(&caps.read, &to_silent, 0, 7, &delegated, FILE).await;
    let took = started.elapsed();
    assert_eq!(r.unwrap_err().ibp(), Some(IbpError::Connection));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(30),
        "the COPY gave up after {took:?}"
    );

    // The same COPY to the real target, on a new session.
    let mut c = g.session(&src, &a).await;
    let n = c
        .copy(&caps.read, &target.write, 0, 7, &delegated, FILE)
        .await
        .unwrap();
    assert_eq!(n, 7);
    let got = t
        .load(&target.read, 0, 7, Some(&g.ticket(&a)))
        .await
        .unwrap();
    assert_eq!(got, b"replica");
    drop(silent);
}

/// A sample of the depot's `/metrics`.
fn metric(d: &DepotProc, name: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = d.metrics.expect("the depot serves metrics");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The source of secure COPYs keeps its session to the target for the
/// next COPY with the same grant, never for another grant, and replaces
/// one the target has closed meanwhile (the COPY still succeeds, nothing
/// stored twice).
#[tokio::test]
async fn secure_copy_sessions_are_kept_per_grant() {
    let g = Grid::new();
    let (src, src_key, _) = host_depot_with(&g, "src", "", true);
    // The target closes idle connections after a second.
    let (dst, _, _) = host_depot_with(&g, "dst", "idle_timeout = \"1s\"", true);
    let a = alice(&g);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let mut c = g.session(&src, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
        .await
        .unwrap();
    c.store(&caps.write, FILE, &data).await.unwrap();
    let mut targets = Vec::new();
    {
        let mut t = g.session(&dst, &a).await;
        for _ in 0..4 {
            targets.push(
                t.allocate(Rid(0), Reliability::Hard, 600, 1 << 20)
                    .await
                    .unwrap(),
            );
        }
    }
    let one = g.grant_with(|gr| gr.holder = src_key, &dst, &a, "vo1", "vo1:0001");
    let other = g.grant_with(
        |gr| {
            gr.holder = src_key;
            gr.not_after -= 1;
        },
        &dst,
        &a,
        "vo1",
        "vo1:0001",
    );
    assert_ne!(one, other);
    let counts = || {
        (
            metric(&src, "ibp_copy_sessions_opened_total"),
            metric(&src, "ibp_copy_sessions_reused_total"),
        )
    };
    let len = data.len() as u64;
    for (i, grant, want, why) in [
        (0, &one, (1, 0), "the first COPY opens a session"),
        (1, &one, (1, 1), "the same grant reuses it"),
        (2, &other, (2, 1), "another grant never does"),
    ] {
        let n = c.copy(&caps.read, &targets[i].write, 0, len, grant, FILE);
        assert_eq!(n.await.unwrap(), len, "{why}");
        assert_eq!(counts(), want, "{why}");
    }
    // The target closes the kept sessions (idle for a second): the next
    // COPY with the first grant opens a new one and succeeds.
    assert!(
        common::wait_until(Duration::from_secs(30), || metric(
            &dst,
            "ibp_connections_open"
        ) == 0),
        "the target closes idle sessions"
    );
    assert_eq!(
        c.copy(&caps.read, &targets[3].write, 0, len, &one, FILE)
            .await
            .unwrap(),
        len
    );
    assert_eq!(counts(), (3, 1), "a closed session is replaced");
    let mut t = g.session(&dst, &a).await;
    for target in &targets {
        let got = t
            .load(&target.read, 0, len, Some(&g.ticket(&a)))
            .await
            .unwrap();
        assert!(got == data, "each copy holds the bytes once");
        assert_eq!(t.probe(&target.manage).await.unwrap().size, len);
    }
}

fn crypto_depot(g: &Grid) -> DepotProc {
    g.depot_builder("data_listen = \"127.0.0.1:0\"")
        .data_port()
        .spawn()
}

fn data_addr(d: &DepotProc) -> String {
    d.data_addr.expect("depot serves a data port").to_string()
}

/// The crypto level: ALLOCATE on the TLS connection, STORE and LOAD on a
/// plain data connection with sealed request lines.
#[tokio::test]
async fn crypto_level_store_and_load() {
    let g = Grid::new();
    let depot = crypto_depot(&g);
    let a = alice(&g);
    let mut c = g.session(&depot, &a).await;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 600, 3 << 20)
        .await
        .unwrap();
    let cs = c.open_crypto().await.unwrap();
    // The CRYPTO reply names the data port (v3.1).
    let announced = cs.data_port.expect("the CRYPTO reply names the data port");
    assert_eq!(
        format!("127.0.0.1:{announced}"),
        data_addr(&depot),
        "announced data port"
    );
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    d.set_timeout(Duration::from_secs(10));
    let data: Vec<u8> = (0..(3u32 << 20) - 7)
        .map(|i| (i * 11 % 253) as u8)
        .collect();
    assert_eq!(
        d.store(&caps.write, FILE, &data[..1 << 20]).await.unwrap(),
        1 << 20
    );
    assert_eq!(
        d.store(&caps.write, FILE, &data[1 << 20..]).await.unwrap(),
        (data.len() - (1 << 20)) as u64
    );
    let got = d
        .load(&caps.read, 0, data.len() as u64, &g.ticket(&a))
        .await
        .unwrap();
    assert!(got == data, "loaded bytes differ");
    // A second data connection of the same session; the TLS one still works.
    let mut d2 = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    assert_eq!(
        d2.load(&caps.read, 5, 10, &g.ticket(&a)).await.unwrap(),
        data[5..15]
    );
    assert_eq!(c.probe(&caps.manage).await.unwrap().size, data.len() as u64);
    // The data port is bound to file tickets like the TLS port.
    let (e, _) = refused(d2.load(&caps.read, 0, 5, &g.ticket(&alice(&g))).await);
    assert_eq!(e, IbpError::CapAccessDenied);
}

fn load_line(cap: &ibp_proto::Capability, ticket: &str) -> String {
    ibp_proto::SecureRequest::Load(ibp_proto::SecureLoad {
        load: ibp_proto::Load {
            cap: cap.cap.clone(),
            offset: 0,
            size: 0,
            timeout: 30,
        },
        ticket: Some(ticket.to_owned()),
    })
    .encode()
}

#[tokio::test]
async fn crypto_level_refuses_replayed_and_tampered_requests() {
    let g = Grid::new();
    let depot = crypto_depot(&g);
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let mut c = g.session(&depot, &a).await;
    let cs = c.open_crypto().await.unwrap();
    let ticket = g.ticket(&a);
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    let sealed = d.seal(&load_line(&caps.read, &ticket));
    assert_eq!(
        d.raw_sealed(&sealed, Expect::Payload).await.unwrap(),
        ibp_proto::Reply::Payload(0)
    );
    // The same sealed line again: refused, and the connection closes.
    let (e, reason) = refused(d.raw_sealed(&sealed, Expect::Payload).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("replayed"), "{reason}");
    // Replayed on another data connection of the same session.
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    let (e, reason) = refused(d.raw_sealed(&sealed, Expect::Payload).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("replayed"), "{reason}");
    // One flipped character of the sealed text.
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    let good = d.seal(&load_line(&caps.read, &ticket));
    let i = good.len() / 2;
    let flipped = if &good[i..i + 1] == "A" { "B" } else { "A" };
    let bad = format!("{}{}{}", &good[..i], flipped, &good[i + 1..]);
    let (e, reason) = refused(d.raw_sealed(&bad, Expect::Payload).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("MAC"), "{reason}");
    // The outer command is covered by the MAC too.
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    let good = d.seal(&load_line(&caps.read, &ticket));
    let relabeled = good.replacen("3 8 ", "3 2 ", 1);
    let (e, reason) = refused(d.raw_sealed(&relabeled, Expect::Ok).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("MAC"), "{reason}");
    // An unsealed v2 line is no request on the data port.
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    let (e, _) = refused(
        d.raw_sealed(&load_line(&caps.read, &ticket), Expect::Payload)
            .await,
    );
    assert_eq!(e, IbpError::BadFormat);
}

#[tokio::test]
async fn crypto_level_unknown_and_ended_sessions() {
    let g = Grid::new();
    let clock = ProcessClock::new();
    let depot = g
        .depot_builder("data_listen = \"127.0.0.1:0\"")
        .data_port()
        .clock(&clock)
        .spawn();
    let a = alice(&g);
    let mut c = g.session(&depot, &a).await;
    let cs = c.open_crypto().await.unwrap();
    let mut bogus = cs.clone();
    bogus.id[0] ^= 0xff;
    let r = DataClient::connect(&data_addr(&depot), &bogus).await;
    let (e, reason) = refused(r.map(drop));
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("unknown crypto session"), "{reason}");
    // CRYPTO needs AUTH first.
    let mut fresh = g.connect(&depot, &a).await;
    let (e, _) = refused(fresh.open_crypto().await.map(drop));
    assert_eq!(e, IbpError::CapAccessDenied);
    // The session ends with its TLS connection.
    drop(c);
    // The depot notices the closed connection at once, but not before
    // this task sends: wait (bounded) until the session is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let e = loop {
        match DataClient::connect(&data_addr(&depot), &cs).await {
            Err(e) => break refused::<()>(Err(e)).0,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(_) => panic!("the crypto session outlived its TLS connection"),
        }
    };
    assert_eq!(e, IbpError::CapAccessDenied);
    // ... and with its grant.
    let now = unix_now();
    let grant = g.grant_with(|gr| gr.not_after = now + 60, &depot, &a, "vo1", "vo1:0001");
    let mut c = g.connect(&depot, &a).await;
    c.auth(&grant).await.unwrap();
    let cs = c.open_crypto().await.unwrap();
    let mut d = DataClient::connect(&data_addr(&depot), &cs).await.unwrap();
    // Past the grant and the depot's 120 s clock-skew allowance.
    clock.advance(60 + 120 + 10);
    let (e, reason) = refused(DataClient::connect(&data_addr(&depot), &cs).await.map(drop));
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("ended"), "{reason}");
    // A data connection joined before refuses further requests too.
    let caps_read = {
        let mut s = g.session(&depot, &a).await;
        s.allocate(Rid(0), Reliability::Hard, 600, 10)
            .await
            .unwrap()
            .read
    };
    let (e, reason) = refused(d.load(&caps_read, 0, 0, &g.ticket(&a)).await);
    assert_eq!(e, IbpError::CapAccessDenied);
    assert!(reason.contains("ended"), "{reason}");
}

/// A `tls_key` that group or others may read: `ibp-depot serve` refuses to
/// start, before printing any listening line, and says which file and how to
/// fix it. Back to 0600, the same configuration starts.
#[test]
fn tls_key_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let g = Grid::new();
    let key = g.dir.path().join("depot.key");
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode_of(&key),
        0o600,
        "the fixture writes the key owner-only"
    );
    let cfg = g.config("");
    let data = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let (status, stdout, stderr) = common::run_to_exit(&[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data".as_ref(),
            data.path().as_os_str(),
            "--config".as_ref(),
            cfg.as_os_str(),
        ]);
        assert!(
            !status.success(),
            "started with a {mode:03o} key: {status:?}"
        );
        assert!(stdout.is_empty(), "printed {stdout:?} before failing");
        assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(&format!("mode {mode:03o}")), "{stderr}");
        assert!(stderr.contains("chmod 600"), "{stderr}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = g.depot();
    assert!(tls_port(&d) > 0);
}

// ---- Issue 14: a reader cannot destroy data; the MANAGE rule on the
// ---- secure port (MANAGE capability and the owner's session, or a VO admin).

/// A VO member: the credential and the VO and VO ID its grants name.
struct Member {
    cred: ProxyCredential,
    vo: &'static str,
    vo_id: &'static str,
}

fn member(g: &Grid, name: &str, vo: &'static str, vo_id: &'static str, groups: &[&str]) -> Member {
    Member {
        cred: g.user_in(name, vo, vo_id, groups),
        vo,
        vo_id,
    }
}

/// `op` on `cap` in a fresh session of `who` is refused with `code` and a
/// reason containing `why`.
async fn manage_refused(
    g: &Grid,
    depot: &DepotProc,
    who: &Member,
    op: &str,
    cap: &ibp_proto::Capability,
    code: IbpError,
    why: &str,
) {
    let mut c = g.connect(depot, &who.cred).await;
    c.auth(&g.grant_with(|_| {}, depot, &who.cred, who.vo, who.vo_id))
        .await
        .unwrap();
    let r = match op {
        "DECR" => c.decr(cap, 1).await,
        "INCR" => {
            // The secure form of the legacy line: version 2.
            let line = format!("2{}", &common::incr_line(cap, 1)[1..]);
            c.raw(&line, Expect::Ok).await.map(drop)
        }
        "DECR2" => c.decr(cap, 2).await,
        "CHNG" => {
            c.change(
                cap,
                ibp_proto::Attributes {
                    max_size: 0,
                    duration: 60,
                    reliability: 0,
                },
            )
            .await
        }
        other => panic!("unknown op {other}"),
    };
    let (e, reason) = refused(r);
    assert_eq!(e, code, "{op} by {}/{}: {reason}", who.vo, who.vo_id);
    assert!(
        reason.contains(why),
        "{op}: reason {reason:?} does not say {why:?}"
    );
}

/// A reader (Bob, whom Alice's file was shared with, or Alice herself on her
/// READ capability) sends DECR on the READ capability: refused with -10
/// (IBP_E_INVALID_MANAGE_CAP); the allocation and its bytes stay, and the
/// owner still downloads them. The same on the legacy port is in
/// tests/commands.rs.
#[tokio::test]
async fn reader_cannot_decr_away_an_allocation() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let alice_m = Member {
        cred: a.clone(),
        vo: "vo1",
        vo_id: "vo1:0001",
    };
    let bob = member(&g, "Bob", "vo1", "vo1:0002", &[]);
    for _ in 0..2 {
        manage_refused(
            &g,
            &depot,
            &bob,
            "DECR",
            &caps.read,
            IbpError::InvalidManageCap,
            "needs the MANAGE capability",
        )
        .await;
    }
    manage_refused(
        &g,
        &depot,
        &alice_m,
        "DECR",
        &caps.read,
        IbpError::InvalidManageCap,
        "not the READ capability",
    )
    .await;
    manage_refused(
        &g,
        &depot,
        &alice_m,
        "DECR2",
        &caps.write,
        IbpError::InvalidManageCap,
        "not the WRITE capability",
    )
    .await;
    let mut c = g.session(&depot, &a).await;
    let p = c.probe(&caps.read).await.unwrap();
    assert_eq!((p.read_refs, p.write_refs, p.size), (1, 1, 5));
    let mut c = g.connect(&depot, &a).await;
    assert_eq!(
        c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap(),
        b"hello"
    );
}

/// INCR on the READ capability would pin the allocation (the owner's DECR
/// would then leave it allocated): refused with -10; the owner's one DECR
/// with the MANAGE capability deletes it.
#[tokio::test]
async fn reader_cannot_pin_an_allocation() {
    let g = Grid::new();
    let depot = g.depot();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let bob = member(&g, "Bob", "vo1", "vo1:0002", &[]);
    manage_refused(
        &g,
        &depot,
        &bob,
        "INCR",
        &caps.read,
        IbpError::InvalidManageCap,
        "INCR needs the MANAGE capability",
    )
    .await;
    manage_refused(
        &g,
        &depot,
        &bob,
        "CHNG",
        &caps.read,
        IbpError::InvalidManageCap,
        "CHNG needs the MANAGE capability",
    )
    .await;
    let mut c = g.session(&depot, &a).await;
    assert_eq!(c.probe(&caps.manage).await.unwrap().read_refs, 1);
    c.decr(&caps.manage, 1).await.unwrap();
    let (e, _) = refused(c.probe(&caps.manage).await);
    assert_eq!(e, IbpError::CapNotFound, "one DECR by the owner deletes it");
}

/// A leaked MANAGE capability used in the session of another member of
/// the VO, or of a member of another VO served by the same depot: INCR,
/// DECR and CHNG are refused (-12, with the reason); the owner's DECR works.
#[tokio::test]
async fn other_vo_id_with_manage_cap_cannot_decr() {
    let g = Grid::new();
    let cfg = g.config_with(
        "",
        "[[vo]]\nname = \"vo2\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n",
    );
    let depot = DepotBuilder::new().arg("--config").arg(cfg).tls().spawn();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let bob = member(&g, "Bob", "vo1", "vo1:0002", &[]);
    let eve = member(&g, "Eve", "vo2", "vo2:0009", &[]);
    for op in ["DECR", "INCR", "CHNG"] {
        manage_refused(
            &g,
            &depot,
            &bob,
            op,
            &caps.manage,
            IbpError::CapAccessDenied,
            "belongs to another VO identity",
        )
        .await;
        manage_refused(
            &g,
            &depot,
            &eve,
            op,
            &caps.manage,
            IbpError::CapAccessDenied,
            "belongs to another VO identity",
        )
        .await;
    }
    // PROBE stays open to any capability holder.
    let mut c = g.connect(&depot, &bob.cred).await;
    c.auth(&g.grant_with(|_| {}, &depot, &bob.cred, "vo1", "vo1:0002"))
        .await
        .unwrap();
    let p = c.probe(&caps.manage).await.unwrap();
    assert_eq!((p.read_refs, p.size), (1, 5));
    // Nothing changed: the owner reads, then releases.
    let mut c = g.session(&depot, &a).await;
    assert_eq!(
        c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap(),
        b"hello"
    );
    c.decr(&caps.manage, 1).await.unwrap();
    let (e, _) = refused(c.probe(&caps.manage).await);
    assert_eq!(e, IbpError::CapNotFound);
}

/// An admin of the allocation's VO (the `admins` group in the verified
/// attributes, as the L-Bone and the metadata manager decide it) may
/// release a member's allocation; an admin of another VO may not, nor a
/// member of a group with another name.
#[tokio::test]
async fn vo_admin_may_release_a_members_allocation() {
    let g = Grid::new();
    let cfg = g.config_with(
        "",
        "[[vo]]\nname = \"vo2\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n",
    );
    let depot = DepotBuilder::new().arg("--config").arg(cfg).tls().spawn();
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    let other_admin = member(&g, "Mallory", "vo2", "vo2:0001", &["admins"]);
    manage_refused(
        &g,
        &depot,
        &other_admin,
        "DECR",
        &caps.manage,
        IbpError::CapAccessDenied,
        "admins",
    )
    .await;
    let staff = member(&g, "Sam", "vo1", "vo1:0005", &["staff"]);
    manage_refused(
        &g,
        &depot,
        &staff,
        "DECR",
        &caps.manage,
        IbpError::CapAccessDenied,
        "admins",
    )
    .await;
    // Not even an admin may use a READ capability.
    let admin = member(&g, "Carol", "vo1", "vo1:0003", &["staff", "admins"]);
    manage_refused(
        &g,
        &depot,
        &admin,
        "DECR",
        &caps.read,
        IbpError::InvalidManageCap,
        "MANAGE",
    )
    .await;
    let mut c = g.connect(&depot, &admin.cred).await;
    c.auth(&g.grant_with(|_| {}, &depot, &admin.cred, "vo1", "vo1:0003"))
        .await
        .unwrap();
    c.decr(&caps.manage, 1).await.unwrap();
    let (e, _) = refused(c.probe(&caps.manage).await);
    assert_eq!(e, IbpError::CapNotFound);
}

// ---- Issue 14: the depot's own [[vo]] policy holds for ticketed reads.

/// A depot restarted without vo1's `[[vo]]` table no longer serves vo1's
/// allocations, even to a LOAD with a valid file ticket (no AUTH needed,
/// protocol v3.2). Restarted with `allocate = false` for vo1 (a grace
/// period), it serves the read and a release, and refuses ALLOCATE and a
/// CHNG that extends.
#[tokio::test]
async fn ticketed_load_of_a_vo_no_longer_served_is_refused() {
    let g = Grid::new();
    let data = tempfile::tempdir().unwrap();
    let vo1 = "[[vo]]\nname = \"vo1\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n";
    let vo2 = "[[vo]]\nname = \"vo2\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n";
    let start = |vos: &str| {
        DepotBuilder::new()
            .data(data.path())
            .arg("--config")
            .arg(g.config_vos(vos))
            .tls()
            .spawn()
    };
    let mut depot = start(vo1);
    let a = alice(&g);
    let caps = stored(&g, &depot, &a).await;
    depot.kill_now();

    let mut depot = start(vo2);
    let mut c = g.connect(&depot, &a).await;
    let (e, reason) = refused(c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(reason.contains("VO vo1 is not served"), "{reason}");
    depot.kill_now();

    let retiring = format!("{vo1}allocate = false\n");
    let depot = start(&retiring);
    let mut c = g.connect(&depot, &a).await;
    assert_eq!(
        c.load(&caps.read, 0, 5, Some(&g.ticket(&a))).await.unwrap(),
        b"hello"
    );
    let mut c = g.session(&depot, &a).await;
    let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 1024).await);
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    assert!(reason.contains("allocate = false"), "{reason}");
    let mut c = g.session(&depot, &a).await;
    let (e, reason) = refused(
        c.change(
            &caps.manage,
            ibp_proto::Attributes {
                max_size: 0,
                duration: 3000,
                reliability: 0,
            },
        )
        .await,
    );
    assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    let mut c = g.session(&depot, &a).await;
    c.decr(&caps.manage, 1).await.unwrap();
    let (e, _) = refused(c.probe(&caps.manage).await);
    assert_eq!(e, IbpError::CapNotFound);
}

// ---- Issue 14: unauthenticated clients cannot take a depot's capacity.

/// The attack line `1 1 0 2 1 2592000 <all free bytes> 10` on the legacy
/// port is refused with -19 (IBP_E_WOULD_EXCEED_LIMIT, what a full IBP 1.4
/// depot answers); nothing is reserved, a legacy allocation within the
/// legacy budget still works, and a VO session still allocates. Legacy
/// HARD allocations never reclaim a session's SOFT one.
#[tokio::test]
async fn one_legacy_allocate_cannot_take_the_depot() {
    let g = Grid::new();
    let depot = g
        .depot_builder("")
        .args(["--hard-size", "40MiB", "--max-duration", "30d"])
        .spawn();
    let status = |d: &DepotProc| {
        let mut c = d.connect();
        let h = c.request("1 4 0 1 ibp 10\n");
        let n: usize = h.trim().strip_prefix("1 ").unwrap().trim().parse().unwrap();
        String::from_utf8(c.read_exact(n)).unwrap()
    };
    let body = status(&depot);
    let all = 40u64 << 20;
    let mut c = depot.connect();
    assert_eq!(
        c.request(&format!("1 1 0 2 1 2592000 {all} 10\n")),
        " -19 \n",
        "status was {body:?}"
    );
    c.expect_closed();
    // Nothing was reserved.
    assert_eq!(status(&depot), body);
    // Within the default budget (2% of hard_size per address) it works.
    let small = depot.allocate(2592000, 512 << 10);
    // A VO member still gets the space.
    let a = alice(&g);
    let mut s = g.session(&depot, &a).await;
    for _ in 0..9 {
        s.allocate(Rid(0), Reliability::Hard, 600, 4 << 20)
            .await
            .unwrap();
    }
    let soft = s
        .allocate(Rid(0), Reliability::Soft, 600, 3_407_872)
        .await
        .unwrap();
    // 300000 more HARD bytes fit the legacy budget but not the resource
    // without reclaiming: the legacy port cannot reclaim the session's SOFT
    // bytes for itself.
    let mut c = depot.connect();
    assert_eq!(c.request("1 1 0 2 1 600 300000 10\n"), " -19 \n");
    let mut s = g.session(&depot, &a).await;
    assert_eq!(s.probe(&soft.manage).await.unwrap().max_size, 3_407_872);
    drop(small);
}
