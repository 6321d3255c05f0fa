//! The text output of the metadata-manager commands (`--json` prints the
//! answers as they are). Times are local, with their UTC offset; sizes in
//! bytes, or with `-h` in KiB, MiB, ... (powers of 1024, as everywhere in
//! the stack).

use std::fmt::Write as _;

use lors::metadata::{
    Acl, EntryInfo, EntryKind, Health, Members, Retention, Usage, VersionInfo, Versions, Whoami,
};
use lors::names::NameBook;
use lors::release::Removal;

/// The time zone times are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The local zone (`TZ`, else /etc/localtime).
    Local,
    /// A fixed offset (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(chrono::FixedOffset),
}

/// How the text output shows sizes and times, and what "now" is (for
/// expiry marks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Sizes as `1.5 GiB` rather than bytes.
    pub human: bool,
    pub zone: Zone,
    /// Unix seconds.
    pub now: i64,
}

impl Style {
    /// Local time, now.
    pub fn local(human: bool) -> Style {
        Style {
            human,
            zone: Zone::Local,
            now: ibp_auth::unix_now(),
        }
    }

    /// A byte count: bytes, or with `-h` in binary units.
    pub fn size(&self, n: u64) -> String {
        if self.human {
            ibp_service::units::format_size(n)
        } else {
            n.to_string()
        }
    }

    /// `YYYY-MM-DD HH:MM:SS +HH:MM` of Unix seconds in the zone (a time
    /// chrono cannot represent prints as `@<seconds>`).
    pub fn time(&self, t: i64) -> String {
        match self.zone {
            Zone::Local => lors::validity::format_local(t),
            Zone::Fixed(z) => lors::validity::format_in(t, &z),
        }
    }
}

/// What `ls -l` marks a file with: nothing when it is fine.
pub fn mark(h: Option<Health>) -> &'static str {
    match h {
        Some(Health::Expired) => "EXPIRED",
        Some(Health::Damaged) => "DAMAGED",
        Some(Health::Ok) | None => "",
    }
}

/// `ls`: one name a line, directories with a trailing `/`.
pub fn format_short(entries: &[EntryInfo]) -> String {
    let mut out = String::new();
    for e in entries {
        let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
        let _ = writeln!(out, "{}{slash}", e.name());
    }
    out
}

/// `ls -l`: kind, owner, size, version, last change, expiry of the current
/// version (its earliest allocation's), a mark (`EXPIRED`: some range has
/// no live allocation left; `DAMAGED`: some allocation has expired or the
/// exNode cannot be read, `lors repair` may rebuild it), name.
pub fn format_long(entries: &[EntryInfo], st: &Style) -> String {
    let owner = |e: &EntryInfo| e.owner.clone().unwrap_or_else(|| "-".into());
    let expiry = |e: &EntryInfo| e.expires.map_or_else(|| "-".to_owned(), |t| st.time(t));
    let ow = entries.iter().map(|e| owner(e).len()).max().unwrap_or(0);
    let sw = entries
        .iter()
        .map(|e| st.size(e.size).len())
        .max()
        .unwrap_or(0);
    let xw = entries.iter().map(|e| expiry(e).len()).max().unwrap_or(0);
    let mw = entries
        .iter()
        .map(|e| mark(e.health(st.now)).len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for e in entries {
        let (kind, slash) = match e.kind {
            EntryKind::Dir => ('d', "/"),
            EntryKind::File => ('-', ""),
        };
        let version = match e.kind {
            EntryKind::Dir => "-".to_owned(),
            EntryKind::File => format!("v{}", e.version),
        };
        let m = if mw == 0 {
            String::new()
        } else {
            format!("{:<mw$} ", mark(e.health(st.now)))
        };
        let _ = writeln!(
            out,
            "{kind} {:<ow$} {:>sw$} {version:>5} {} {:<xw$} {m}{}{slash}",
            owner(e),
            st.size(e.size),
            st.time(e.updated_at),
            expiry(e),
            e.name(),
        );
    }
    out
}

pub fn format_stat(e: &EntryInfo, st: &Style) -> String {
    let mut out = String::new();
    let kind = match e.kind {
        EntryKind::Dir => "directory",
        EntryKind::File => "file",
    };
    let both = |n: u64| {
        if n < 1024 {
            format!("{n} B")
        } else {
            format!("{n} B ({})", ibp_service::units::format_size(n))
        }
    };
    let _ = writeln!(out, "path      : {}", e.path);
    let _ = writeln!(out, "kind      : {kind}");
    let _ = writeln!(out, "id        : {}", e.id);
    let _ = writeln!(
        out,
        "owner     : {}",
        e.owner.as_deref().unwrap_or("- (VO root)")
    );
    if e.kind == EntryKind::File {
        let _ = writeln!(out, "version   : {}", e.version);
        let _ = writeln!(out, "size      : {}", both(e.size));
        if let Some(n) = e.versions {
            let _ = writeln!(out, "versions  : {n}");
        }
        if let Some(n) = e.stored {
            let _ = writeln!(
                out,
                "stored    : {} (all versions kept, each allocation once, on depots)",
                both(n)
            );
        }
        if let Some(t) = e.expires {
            let m = mark(e.health(st.now));
            let m = if m.is_empty() {
                String::new()
            } else {
                format!(" {m}")
            };
            let _ = writeln!(out, "expires   : {}{m}", st.time(t));
        }
    }
    let _ = writeln!(out, "created   : {}", st.time(e.created_at));
    let _ = writeln!(out, "changed   : {}", st.time(e.updated_at));
    if let Some(r) = &e.rights {
        let _ = writeln!(out, "your rights: {r}");
    }
    out
}

/// Where a retention comes from, in words.
fn retention_words(r: &Retention) -> String {
    let source = if let Some(d) = r.source.strip_prefix("directory ") {
        format!("set on {d}")
    } else if let Some(vo) = r.source.strip_prefix("vo ") {
        format!("VO {vo}'s setting")
    } else {
        "the metadata manager's default".to_owned()
    };
    format!(
        "keeps {} version{} of each file ({source})",
        r.keep,
        if r.keep == 1 { "" } else { "s" }
    )
}

/// `lors versions DIR` (and `--keep`, `--inherit`): a directory's retention.
pub fn format_retention(r: &Retention) -> String {
    format!("{} {}\n", r.path, retention_words(r))
}

/// `lors versions FILE`: every version kept, newest first (`*`: current).
pub fn format_versions(v: &Versions, st: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", v.path, retention_words(&v.retention));
    let _ = write!(out, "{}", version_table(&v.versions, st));
    out
}

/// The versions as a table (also under `lors stat`).
pub fn version_table(list: &[VersionInfo], st: &Style) -> String {
    let expiry = |v: &VersionInfo| {
        let m = mark(Some(Health::at(
            v.expires,
            v.readable_until,
            v.unreadable,
            st.now,
        )));
        let t = v.expires.map_or_else(|| "-".to_owned(), |t| st.time(t));
        if m.is_empty() {
            t
        } else {
            format!("{t} {m}")
        }
    };
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|v| {
            [
                format!("{}{}", if v.current { "*" } else { " " }, v.version),
                st.size(v.size),
                st.size(v.stored),
                st.size(v.exclusive),
                st.time(v.created_at),
                v.created_by.clone(),
                v.key_id.clone().unwrap_or_else(|| "-".into()),
                expiry(v),
            ]
        })
        .collect();
    let head = [
        " version", "size", "stored", "own", "created", "by", "key id", "expires",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, c: [&str; 8]| {
        let _ = writeln!(
            out,
            "{:<w0$} {:>w1$} {:>w2$} {:>w3$}  {:<w4$}  {:<w5$}  {:<w6$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            c[7],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w5 = w[5],
            w6 = w[6],
        );
    };
    line(&mut out, head);
    for r in &rows {
        line(&mut out, r.each_ref().map(String::as_str));
    }
    // Trailing spaces of an empty last column.
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// `acl get`/`set`: in the form `acl set` takes (`default:` marks the
/// default ACL's entries).
/// An ACL in the form `acl set` takes; members whose name `book` knows are
/// shown as `NAME@VO` (which `acl set` takes too).
pub fn format_acl(acl: &Acl, book: &NameBook) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# path: {}", acl.path);
    match acl.owner.as_deref() {
        None => {
            let _ = writeln!(out, "# owner: - (VO root) (all rights)");
        }
        Some(o) => match book.name(o) {
            Some(n) => {
                let _ = writeln!(out, "# owner: {n} ({o}, all rights)");
            }
            None => {
                let _ = writeln!(out, "# owner: {o} (all rights)");
            }
        },
    }
    for e in &acl.access {
        let _ = writeln!(out, "{}={}", book.show(&e.principal), e.rights);
    }
    for e in acl.default.iter().flatten() {
        let _ = writeln!(out, "default:{}={}", book.show(&e.principal), e.rights);
    }
    out
}

/// `usage`; `stored` counts each allocation once, however many kept
/// versions name it.
pub fn format_usage(u: &Usage, st: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "VO {}", u.vo);
    let w = u
        .users
        .iter()
        .map(|r| r.owner.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let unit = if st.human { "" } else { " B" };
    let _ = writeln!(
        out,
        "{:<w$} {:>8} {:>9} {:>16} {:>16} {:>8} {:>12}",
        "owner",
        "files",
        "versions",
        format!("logical{unit}"),
        format!("stored{unit}"),
        "entries",
        format!("exNode{unit}")
    );
    for r in &u.users {
        let _ = writeln!(
            out,
            "{:<w$} {:>8} {:>9} {:>16} {:>16} {:>8} {:>12}",
            r.owner,
            r.files,
            r.versions,
            st.size(r.logical),
            st.size(r.stored),
            r.entries,
            st.size(r.exnode_bytes)
        );
    }
    if let Some(t) = &u.total {
        let (entries, exnode_bytes) = u.users.iter().fold((0u64, 0u64), |(e, b), r| {
            (
                e.saturating_add(r.entries),
                b.saturating_add(r.exnode_bytes),
            )
        });
        let _ = writeln!(
            out,
            "{:<w$} {:>8} {:>9} {:>16} {:>16} {:>8} {:>12}",
            "total",
            t.files,
            t.versions,
            st.size(t.logical),
            st.size(t.stored),
            entries,
            st.size(exnode_bytes)
        );
    }
    if let Some(l) = &u.limits {
        let _ = writeln!(
            out,
            "limits: per owner {} entries, {} exNode bytes; per VO {} entries, {} exNode bytes",
            limit(l.user_entries),
            limit(l.user_exnode_bytes),
            limit(l.vo_entries),
            limit(l.vo_exnode_bytes),
        );
        // An owner's own row against the per-owner limits.
        if let [r] = u.users.as_slice() {
            let _ = writeln!(
                out,
                "{} uses {} entries, {} exNode bytes",
                r.owner,
                of_limit(r.entries, l.user_entries),
                of_limit(r.exnode_bytes, l.user_exnode_bytes),
            );
        }
        if let Some(v) = &u.vo_used {
            let _ = writeln!(
                out,
                "VO {} uses {} entries, {} exNode bytes",
                u.vo,
                of_limit(v.entries, l.vo_entries),
                of_limit(v.exnode_bytes, l.vo_exnode_bytes),
            );
        }
    } else if let Some(v) = &u.vo_used {
        let _ = writeln!(
            out,
            "VO {} uses {} entries, {} exNode bytes",
            u.vo, v.entries, v.exnode_bytes
        );
    }
    out
}

/// A limit, or "unlimited".
fn limit(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

/// `used of limit (p %)`, or just `used` when unlimited.
fn of_limit(used: u64, l: Option<u64>) -> String {
    match l {
        Some(0) => format!("{used} of 0"),
        Some(n) => format!(
            "{used} of {n} ({}%)",
            (u128::from(used) * 100 / u128::from(n)).min(u128::from(u64::MAX))
        ),
        None => used.to_string(),
    }
}

pub fn format_whoami(w: &Whoami, st: &Style) -> String {
    let mut out = String::new();
    let groups = if w.groups.is_empty() {
        "(none)".to_owned()
    } else {
        w.groups
            .iter()
            .map(|g| format!("{} ({})", g.name, g.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "principal : {}", w.principal);
    // The name others can share with (`lors share PATH NAME@VO`), as the
    // metadata manager derives it from the certificate's subject (a
    // pseudonym in a pseudonymous VO), and the display name chosen.
    match metadata_api::names::name_of_subject(&w.subject) {
        Some(n) => {
            let _ = writeln!(out, "name      : {n}@{}", w.vo);
        }
        None => {
            let _ = writeln!(out, "name      : (none: the certificate has no usable CN)");
        }
    }
    match &w.display_name {
        Some(n) => {
            let _ = writeln!(out, "shown as  : {n}@{}", w.vo);
        }
        None => {
            let _ = writeln!(
                out,
                "shown as  : (no display name: lors whoami --set-name NAME)"
            );
        }
    }
    let _ = writeln!(out, "vo        : {}", w.vo);
    let _ = writeln!(out, "vo id     : {}", w.vo_id);
    let _ = writeln!(out, "groups    : {groups}");
    let _ = writeln!(out, "subject   : {}", w.subject);
    let _ = writeln!(out, "vo admin  : {}", if w.admin { "yes" } else { "no" });
    if !w.other_vos.is_empty() {
        let _ = writeln!(
            out,
            "also vos  : {} (the proxy's other VOs; paths there act as you in that VO)",
            w.other_vos.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "public key: {}",
        w.public_key.as_deref().unwrap_or("(none registered)")
    );
    let _ = writeln!(out, "valid     : until {}", st.time(w.credential_not_after));
    out
}

pub fn format_members(m: &Members, st: &Style) -> String {
    let mut out = String::new();
    let w = m
        .members
        .iter()
        .map(|r| r.vo_id.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    for r in &m.members {
        let state = match (&r.removed_at, &r.removed_by) {
            (Some(at), by) => format!(
                "removed {} by {}",
                st.time(*at),
                by.as_deref().unwrap_or("?")
            ),
            (None, _) => "active".to_owned(),
        };
        let key = if r.has_public_key { "key" } else { "no key" };
        let shown = r
            .display_name
            .as_deref()
            .map(|n| format!("  ({n:?})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<w$}  {state:<12}  {key:<6}  since {}  {}{shown}",
            r.vo_id,
            st.time(r.first_seen),
            r.subject
        );
    }
    out
}

/// `rm`'s allocations not freed, one line per depot and error (a depot
/// that is down fails all its allocations alike).
pub fn failure_lines(r: &Removal) -> Vec<String> {
    let mut groups: Vec<((&str, &str), Vec<&str>)> = Vec::new();
    for x in r.releases.iter().filter(|x| !x.freed) {
        let key = (
            x.depot.as_str(),
            x.error.as_deref().unwrap_or("unknown error"),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(&x.allocation),
            None => groups.push((key, vec![&x.allocation])),
        }
    }
    groups
        .into_iter()
        .map(|((depot, why), list)| match list.as_slice() {
            [one] => format!("allocation {one} not freed: {why}"),
            many => format!(
                "{} allocations on {} not freed: {why}",
                many.len(),
                if depot.is_empty() { "?" } else { depot }
            ),
        })
        .collect()
}

/// `rm`: what was deleted and freed (what was not goes to stderr).
pub fn format_removal(r: &Removal) -> String {
    let versions: Vec<String> = r
        .deleted
        .released
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    let ok = r.releases.iter().filter(|x| x.freed).count();
    let mut out = String::new();
    let _ = write!(out, "deleted {}", r.deleted.path);
    if !versions.is_empty() {
        let _ = write!(
            out,
            " (version{} {})",
            if versions.len() == 1 { "" } else { "s" },
            versions.join(", ")
        );
    }
    let _ = write!(out, "; freed {ok} of {} allocation(s)", r.releases.len());
    out.push('\n');
    out
}
