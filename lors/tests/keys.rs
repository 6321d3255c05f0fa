//! `lors::keys` without a metadata manager: key files, wrapping for
//! recipients and unwrapping one's own key of a `FileVersion`.

use std::os::unix::fs::PermissionsExt;

use lors::crypto::{DataKey, KeyPair, WrapContext};
use lors::keys;
use lors::metadata::{FileVersion, GetAnswer, Whoami};
use lors::Error;
use uuid::Uuid;

fn exnode(file: Option<Uuid>, key_id: Option<&str>) -> exnode::Exnode {
    exnode::Exnode {
        file,
        version: 2,
        size: 0,
        filename: None,
        block_size: None,
        encryption: key_id.map(|k| exnode::Encryption {
            cipher: exnode::Cipher::Aes128Ctr,
            key_id: k.to_owned(),
            iv: exnode::IvDerivation::UuidBlock,
        }),
        ec_groups: vec![],
        mappings: vec![],
        metadata: vec![],
    }
}

fn version(file: Uuid, key_id: &str, wrapped: Option<String>) -> FileVersion {
    FileVersion {
        answer: GetAnswer {
            path: "/vo1/f".into(),
            id: file.to_string(),
            version: 2,
            current_version: 2,
            size: 0,
            stored: 0,
            exnode: String::new(),
            key_id: Some(key_id.to_owned()),
            wrapped_key: wrapped,
            ticket: String::new(),
            ticket_not_after: 0,
            rights: "r".into(),
        },
        exnode: exnode(Some(file), Some(key_id)),
    }
}

fn whoami(public_key: Option<String>) -> Whoami {
    Whoami {
        vo: "vo1".into(),
        vo_id: "u1".into(),
        principal: "user:u1@vo1".into(),
        groups: vec![],
        subject: "CN=u1".into(),
        admin: false,
        public_key,
        credential_not_after: 0,
        display_name: None,
        other_vos: vec![],
    }
}

#[test]
fn wrap_for_recipients_and_unwrap_mine() {
    let me = KeyPair::generate().unwrap();
    let escrow = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let file = Uuid::new_v4();
    let key = DataKey::generate().unwrap();
    let ctx = WrapContext { file, key_id: "k1" };
    let recipients = vec![
        ("user:u1@vo1".to_owned(), *me.public()),
        ("escrow:vo1".to_owned(), *escrow.public()),
    ];
    let wrapped = keys::wrap_for(&key, &ctx, &recipients).unwrap();
    assert_eq!(wrapped.len(), 2);
    assert_eq!(wrapped[0].recipient, "user:u1@vo1");
    assert_eq!(wrapped[1].recipient, "escrow:vo1");
    assert_ne!(wrapped[0].wrapped, wrapped[1].wrapped);

    // The writer's own key back.
    let fv = version(file, "k1", Some(wrapped[0].wrapped.clone()));
    assert_eq!(keys::unwrap_mine(&me, &fv).unwrap(), key);
    // The escrow key's wrap opens with the escrow pair.
    let fv_escrow = version(file, "k1", Some(wrapped[1].wrapped.clone()));
    assert_eq!(keys::unwrap_mine(&escrow, &fv_escrow).unwrap(), key);

    // Another key file: a data error pointing at the key.
    match keys::unwrap_mine(&other, &fv) {
        Err(Error::Data(m)) => assert!(m.contains("another key"), "{m}"),
        r => panic!("{r:?}"),
    }
    // Another file or key id: refused.
    let moved = version(Uuid::new_v4(), "k1", Some(wrapped[0].wrapped.clone()));
    assert!(matches!(
        keys::unwrap_mine(&me, &moved),
        Err(Error::Data(_))
    ));
    let rekeyed = version(file, "k2", Some(wrapped[0].wrapped.clone()));
    assert!(matches!(
        keys::unwrap_mine(&me, &rekeyed),
        Err(Error::Data(_))
    ));
    // No wrapped key for the caller: refused, with what to do.
    match keys::unwrap_mine(&me, &version(file, "k1", None)) {
        Err(Error::Forbidden(m)) => assert!(m.contains("lors share"), "{m}"),
        r => panic!("{r:?}"),
    }
    // Garbage from the server.
    let bad = version(file, "k1", Some("x25519-v1 !!! ???".into()));
    assert!(matches!(keys::unwrap_mine(&me, &bad), Err(Error::Data(_))));
    // The manager's key id must match the exNode's.
    let mut odd = fv.clone();
    odd.answer.key_id = Some("other".into());
    assert!(matches!(keys::unwrap_mine(&me, &odd), Err(Error::Data(_))));
    // Not encrypted.
    let mut plain = fv.clone();
    plain.exnode = exnode(Some(file), None);
    assert!(matches!(
        keys::unwrap_mine(&me, &plain),
        Err(Error::Usage(_))
    ));
    // No UUID in the exNode: the manager's file id is used.
    let mut legacy = fv.clone();
    legacy.exnode = exnode(None, Some("k1"));
    assert_eq!(keys::unwrap_mine(&me, &legacy).unwrap(), key);
}

#[test]
fn registered_key_check() {
    let me = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    assert!(keys::check_registered(&me, &whoami(Some(me.public().to_text()))).is_ok());
    for w in [
        whoami(None),
        whoami(Some(other.public().to_text())),
        whoami(Some("garbage".into())),
    ] {
        match keys::check_registered(&me, &w) {
            Err(Error::Usage(m)) => assert!(m.contains("lors keys init"), "{m}"),
            r => panic!("{r:?}"),
        }
    }
}

#[test]
fn key_file_made_then_kept_then_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/key.pem");
    // Missing: a clear pointer at `lors keys init`.
    match keys::load(&path) {
        Err(Error::Usage(m)) => assert!(m.contains("lors keys init"), "{m}"),
        r => panic!("{r:?}"),
    }
    let first = keys::prepare_key_file(&path, false).unwrap();
    assert!(first.created && first.previous_file.is_none());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let parent = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(parent, 0o700);
    assert_eq!(keys::load(&path).unwrap().public(), first.pair.public());

    // Again without force: the same key, nothing written.
    let again = keys::prepare_key_file(&path, false).unwrap();
    assert!(!again.created);
    assert_eq!(again.pair.public(), first.pair.public());

    // With force: a new key, the old file kept aside.
    let forced = keys::prepare_key_file(&path, true).unwrap();
    assert!(forced.created);
    assert_ne!(forced.pair.public(), first.pair.public());
    let old = forced.previous_file.unwrap();
    assert_eq!(keys::load(&old).unwrap().public(), first.pair.public());
    assert_eq!(keys::load(&path).unwrap().public(), forced.pair.public());
}

#[test]
fn key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    keys::prepare_key_file(&path, false).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    match keys::load(&path) {
        Err(Error::Local(m)) => assert!(m.contains("chmod 600"), "{m}"),
        r => panic!("{r:?}"),
    }
    // Nor is it silently replaced or re-registered.
    assert!(keys::prepare_key_file(&path, false).is_err());
    // Something else than a key.
    std::fs::write(&path, "not a key").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(keys::load(&path), Err(Error::Local(_))));
}

#[test]
fn default_key_path_is_a_pem_file() {
    let p = keys::default_key_path();
    assert!(p.extension().is_some_and(|e| e == "pem"), "{}", p.display());
}
