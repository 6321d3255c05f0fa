//! `lors::config`: file and environment layers, precedence, messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lors::config::{Config, Ec};
use lors::depots::{Location, Near, Reliability};
use lors::Error;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

const FILE: &str = "/etc/lors/config.toml";

fn from_file(text: &str) -> Result<Config, Error> {
    Config::from_sources(Some((Path::new(FILE), text)), no_env)
}

fn usage_message(r: Result<Config, Error>) -> String {
    match r {
        Err(Error::Usage(m)) => m,
        Err(e) => panic!("not a usage error: {e:?}"),
        Ok(c) => panic!("accepted: {c:?}"),
    }
}

const FULL: &str = r#"
# every key
lbone = "https://lbone.example.org:6767"
metadata = "https://mdm.example.org:6780"
ca = "https://ca.example.org:8443"
trust_dir = "trust"
vo = "vo1"
proxy = "/tmp/my-proxy"
key_file = "keys/key.pem"
block_size = "4MiB"
copies = 2
ec = "4+2"
threads = 8
duration = "7d"
location = "49.19,16.61"
security = "full"
reliability = "soft"
"#;

#[test]
fn every_key_parses() {
    let c = from_file(FULL).unwrap();
    assert_eq!(c.lbone.as_deref(), Some("https://lbone.example.org:6767"));
    assert_eq!(c.metadata.as_deref(), Some("https://mdm.example.org:6780"));
    assert_eq!(c.ca.as_deref(), Some("https://ca.example.org:8443"));
    // Relative to the file's directory.
    assert_eq!(c.trust_dir, Some(PathBuf::from("/etc/lors/trust")));
    assert_eq!(c.key_file, Some(PathBuf::from("/etc/lors/keys/key.pem")));
    assert_eq!(c.proxy, Some(PathBuf::from("/tmp/my-proxy")));
    assert_eq!(c.vo.as_deref(), Some("vo1"));
    assert_eq!(c.block_size, Some(4 << 20));
    assert_eq!(c.copies, Some(2));
    assert_eq!(c.ec, Some(Ec { k: 4, m: 2 }));
    assert_eq!(c.threads, Some(8));
    assert_eq!(c.duration, Some(7 * 86_400));
    assert_eq!(
        c.location,
        Some(Near::Location(Location {
            lat: 49.19,
            lon: 16.61
        }))
    );
    assert_eq!(c.security, Some(exnode::Security::Full));
    assert_eq!(c.reliability, Some(Reliability::Soft));
    assert_eq!(c.file, Some(PathBuf::from(FILE)));
}

#[test]
fn nothing_set_is_all_none() {
    let c = Config::from_sources(None, no_env).unwrap();
    assert_eq!(c, Config::default());
    let c = from_file("").unwrap();
    assert!(c.metadata.is_none() && c.copies.is_none());
    // Numbers may be strings, sizes integers.
    let c = from_file("copies = \"3\"\nblock_size = 65536\nduration = 3600\n").unwrap();
    assert_eq!(
        (c.copies, c.block_size, c.duration),
        (Some(3), Some(65536), Some(3600))
    );
    // A place name.
    let c = from_file("location = \"Brno, CZ\"\n").unwrap();
    assert_eq!(c.location, Some(Near::Place("Brno, CZ".into())));
}

#[test]
fn precedence_flag_env_file_default() {
    let text = "metadata = \"https://file.example:1\"\ncopies = 2\ntrust_dir = \"/file/trust\"\n";
    let file = Some((Path::new(FILE), text));
    // File only.
    let c = Config::from_sources(file, no_env).unwrap();
    assert_eq!(c.metadata.as_deref(), Some("https://file.example:1"));
    assert_eq!(c.copies, Some(2));
    // The environment beats the file; an empty variable counts as unset.
    let c = Config::from_sources(
        file,
        env(&[
            ("LORS_METADATA_URL", "https://env.example:2"),
            ("LORS_COPIES", "5"),
            ("LORS_TRUST_DIR", ""),
        ]),
    )
    .unwrap();
    assert_eq!(c.metadata.as_deref(), Some("https://env.example:2"));
    assert_eq!(c.copies, Some(5));
    assert_eq!(c.trust_dir, Some(PathBuf::from("/file/trust")));
    // A flag beats both (the commands apply `flag.or(config)`).
    let flag = Some("https://flag.example:3".to_owned());
    assert_eq!(
        flag.or(c.metadata.clone()).as_deref(),
        Some("https://flag.example:3")
    );
    let no_flag: Option<String> = None;
    assert_eq!(
        no_flag.or(c.metadata).as_deref(),
        Some("https://env.example:2")
    );
    // Default last.
    let c = Config::from_sources(None, no_env).unwrap();
    assert_eq!(c.threads.unwrap_or(4), 4);
}

#[test]
fn every_environment_variable() {
    let c = Config::from_sources(
        None,
        env(&[
            ("LORS_LBONE_URL", "https://l:1"),
            ("LORS_METADATA_URL", "https://m:2"),
            ("LORS_CA_URL", "https://c:3"),
            ("LORS_TRUST_DIR", "/t"),
            ("LORS_VO", "vo2"),
            ("X509_USER_PROXY", "/p"),
            ("LORS_KEY_FILE", "k.pem"),
            ("LORS_BLOCK_SIZE", "1MiB"),
            ("LORS_COPIES", "3"),
            ("LORS_EC", "6+3"),
            ("LORS_THREADS", "2"),
            ("LORS_DURATION", "24h"),
            ("LORS_LOCATION", "Brno"),
            ("LORS_SECURITY", "crypto"),
            ("LORS_RELIABILITY", "hard"),
        ]),
    )
    .unwrap();
    assert_eq!(c.lbone.as_deref(), Some("https://l:1"));
    assert_eq!(c.metadata.as_deref(), Some("https://m:2"));
    assert_eq!(c.ca.as_deref(), Some("https://c:3"));
    assert_eq!(c.trust_dir, Some(PathBuf::from("/t")));
    assert_eq!(c.vo.as_deref(), Some("vo2"));
    assert_eq!(c.proxy, Some(PathBuf::from("/p")));
    assert_eq!(c.proxy_path(), PathBuf::from("/p"));
    // Environment paths are taken as given.
    assert_eq!(c.key_file, Some(PathBuf::from("k.pem")));
    assert_eq!(c.block_size, Some(1 << 20));
    assert_eq!(c.copies, Some(3));
    assert_eq!(c.ec, Some(Ec { k: 6, m: 3 }));
    assert_eq!(c.threads, Some(2));
    assert_eq!(c.duration, Some(86_400));
    assert_eq!(c.location, Some(Near::Place("Brno".into())));
    assert_eq!(c.security, Some(exnode::Security::Crypto));
    assert_eq!(c.reliability, Some(Reliability::Hard));
    assert!(c.file.is_none());
}

#[test]
fn malformed_file_names_file_and_line() {
    let m = usage_message(from_file("vo = \"vo1\"\n\ncopies = = 2\n"));
    assert!(m.starts_with(&format!("{FILE}:3:")), "{m}");
    let m = usage_message(from_file("vo = \"vo1\"\nmetadata = \"https://m:1\n"));
    assert!(m.starts_with(&format!("{FILE}:2:")), "{m}");
}

#[test]
fn unknown_keys_are_refused() {
    let m = usage_message(from_file("vo = \"vo1\"\nmetdata = \"https://m:1\"\n"));
    assert!(m.starts_with(&format!("{FILE}:2:")), "{m}");
    assert!(m.contains("metdata"), "{m}");
    // Tables are not keys of ours either.
    let m = usage_message(from_file("[metadata]\nurl = \"https://m:1\"\n"));
    assert!(m.contains(FILE), "{m}");
}

#[test]
fn bad_values_in_the_file() {
    let cases: &[(&str, &str)] = &[
        ("lbone = \"http://l:1\"", "lbone"),
        ("metadata = \"nonsense\"", "metadata"),
        ("ca = \"https://\"", "ca"),
        ("trust_dir = \"\"", "trust_dir"),
        ("vo = \"a/b\"", "vo"),
        ("proxy = 5", ""),
        ("key_file = \"\"", "key_file"),
        ("block_size = \"4XB\"", "block_size"),
        ("block_size = 0", "block_size"),
        ("block_size = \"65GiB\"", "block_size"),
        ("copies = 0", "copies"),
        ("copies = \"two\"", "copies"),
        ("copies = -1", "copies"),
        ("ec = \"4\"", "ec"),
        ("ec = \"0+2\"", "ec"),
        ("ec = \"4+0\"", "ec"),
        ("ec = \"200+100\"", "ec"),
        ("threads = 0", "threads"),
        ("duration = \"7x\"", "duration"),
        ("duration = 0", "duration"),
        ("location = \"95,0\"", "location"),
        ("security = \"strong\"", "security"),
        ("reliability = \"maybe\"", "reliability"),
    ];
    for (line, key) in cases {
        let text = format!("# comment\n{line}\n");
        let m = usage_message(from_file(&text));
        assert!(m.starts_with(&format!("{FILE}:2:")), "{line}: {m}");
        assert!(m.contains(key), "{line}: {m}");
    }
}

#[test]
fn bad_values_in_the_environment() {
    let cases: &[(&str, &str)] = &[
        ("LORS_LBONE_URL", "ftp://x"),
        ("LORS_METADATA_URL", "mdm"),
        ("LORS_CA_URL", "x"),
        ("LORS_VO", "a b"),
        ("LORS_BLOCK_SIZE", "big"),
        ("LORS_COPIES", "0"),
        ("LORS_EC", "4-2"),
        ("LORS_THREADS", "many"),
        ("LORS_DURATION", "forever"),
        ("LORS_LOCATION", "0,200"),
        ("LORS_SECURITY", "none"),
        ("LORS_RELIABILITY", "firm"),
    ];
    for (name, value) in cases {
        let m = usage_message(Config::from_sources(None, env(&[(name, value)])));
        assert!(m.starts_with(&format!("${name}:")), "{name}={value}: {m}");
    }
    // A bad environment value is refused even when the file is fine.
    let m = usage_message(Config::from_sources(
        Some((Path::new(FILE), "copies = 2\n")),
        env(&[("LORS_COPIES", "x")]),
    ));
    assert!(m.contains("LORS_COPIES"), "{m}");
}

#[test]
fn ec_text() {
    assert_eq!("4+2".parse::<Ec>().unwrap().to_string(), "4+2");
    assert_eq!(" 10 + 4 ".parse::<Ec>(), Ok(Ec { k: 10, m: 4 }));
    assert!("128+128".parse::<Ec>().is_ok());
    assert!("129+128".parse::<Ec>().is_err());
    assert!("+".parse::<Ec>().is_err());
}

#[test]
fn default_path_is_under_the_config_dir() {
    // Whatever the environment, the default file is config.toml in a
    // `lors` directory.
    if let Some(p) = lors::config::default_path() {
        assert!(p.ends_with("lors/config.toml"), "{}", p.display());
    }
}

/// `Config::load` with `$LORS_CONFIG` (the only test here that changes the
/// environment; the others do not read these variables).
#[test]
fn load_reads_lors_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "vo = \"vo9\"\nthreads = 3\n").unwrap();
    std::env::set_var("LORS_CONFIG", &path);
    std::env::set_var("LORS_THREADS", "7");
    let c = Config::load();
    std::env::set_var("LORS_CONFIG", dir.path().join("missing.toml"));
    let missing = Config::load();
    std::env::remove_var("LORS_CONFIG");
    std::env::remove_var("LORS_THREADS");
    let c = c.unwrap();
    assert_eq!(c.vo.as_deref(), Some("vo9"));
    assert_eq!(c.threads, Some(7));
    assert_eq!(c.file.as_deref(), Some(path.as_path()));
    let m = usage_message(missing);
    assert!(
        m.contains("missing.toml") && m.contains("LORS_CONFIG"),
        "{m}"
    );
}
