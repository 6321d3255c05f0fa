//! The text output of the metadata-manager commands (`--json` prints the
//! answers as they are).

use std::fmt::Write as _;

use lors::metadata::{Acl, EntryInfo, EntryKind, Members, Usage, Whoami};
use lors::names::NameBook;
use lors::release::Removal;
use lors::validity::format_utc;

/// `ls`: one name a line, directories with a trailing `/`.
pub fn format_short(entries: &[EntryInfo]) -> String {
    let mut out = String::new();
    for e in entries {
        let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
        let _ = writeln!(out, "{}{slash}", e.name());
    }
    out
}

/// `ls -l`: kind, owner, size, version, last change, name.
pub fn format_long(entries: &[EntryInfo]) -> String {
    let owner = |e: &EntryInfo| e.owner.clone().unwrap_or_else(|| "-".into());
    let ow = entries.iter().map(|e| owner(e).len()).max().unwrap_or(0);
    let sw = entries
        .iter()
        .map(|e| e.size.to_string().len())
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
        let _ = writeln!(
            out,
            "{kind} {:<ow$} {:>sw$} {version:>5} {} {}{slash}",
            owner(e),
            e.size,
            format_utc(e.updated_at),
            e.name(),
        );
    }
    out
}

pub fn format_stat(e: &EntryInfo) -> String {
    let mut out = String::new();
    let kind = match e.kind {
        EntryKind::Dir => "directory",
        EntryKind::File => "file",
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
        let _ = writeln!(out, "size      : {} B", e.size);
        if let Some(n) = e.versions {
            let _ = writeln!(out, "versions  : {n}");
        }
        if let Some(n) = e.stored {
            let _ = writeln!(out, "stored    : {n} B (all versions, on depots)");
        }
    }
    let _ = writeln!(out, "created   : {}", format_utc(e.created_at));
    let _ = writeln!(out, "changed   : {}", format_utc(e.updated_at));
    if let Some(r) = &e.rights {
        let _ = writeln!(out, "your rights: {r}");
    }
    out
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

pub fn format_usage(u: &Usage) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "VO {}", u.vo);
    let w = u
        .users
        .iter()
        .map(|r| r.owner.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let _ = writeln!(
        out,
        "{:<w$} {:>8} {:>9} {:>16} {:>16} {:>8} {:>12}",
        "owner", "files", "versions", "logical B", "stored B", "entries", "exNode B"
    );
    for r in &u.users {
        let _ = writeln!(
            out,
            "{:<w$} {:>8} {:>9} {:>16} {:>16} {:>8} {:>12}",
            r.owner, r.files, r.versions, r.logical, r.stored, r.entries, r.exnode_bytes
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
            "total", t.files, t.versions, t.logical, t.stored, entries, exnode_bytes
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

pub fn format_whoami(w: &Whoami) -> String {
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
    // metadata manager derives it from the certificate's subject.
    match metadata_api::names::name_of_subject(&w.subject) {
        Some(n) => {
            let _ = writeln!(out, "name      : {n}@{}", w.vo);
        }
        None => {
            let _ = writeln!(out, "name      : (none: the certificate has no usable CN)");
        }
    }
    let _ = writeln!(out, "vo        : {}", w.vo);
    let _ = writeln!(out, "vo id     : {}", w.vo_id);
    let _ = writeln!(out, "groups    : {groups}");
    let _ = writeln!(out, "subject   : {}", w.subject);
    let _ = writeln!(out, "vo admin  : {}", if w.admin { "yes" } else { "no" });
    let _ = writeln!(
        out,
        "public key: {}",
        w.public_key.as_deref().unwrap_or("(none registered)")
    );
    let _ = writeln!(
        out,
        "valid     : until {}",
        format_utc(w.credential_not_after)
    );
    out
}

pub fn format_members(m: &Members) -> String {
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
                format_utc(*at),
                by.as_deref().unwrap_or("?")
            ),
            (None, _) => "active".to_owned(),
        };
        let key = if r.has_public_key { "key" } else { "no key" };
        let _ = writeln!(
            out,
            "{:<w$}  {state:<12}  {key:<6}  since {}  {}",
            r.vo_id,
            format_utc(r.first_seen),
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
