//! Paths in the namespace: `/VO/dir/.../name`. The first component names
//! the VO that owns the tree, so one manager serves several VOs and every
//! path says whose it is.

use std::fmt;

/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest component, in bytes.
pub const MAX_COMPONENT: usize = 255;
/// Deepest path (components after the VO).
pub const MAX_DEPTH: usize = 64;
/// A checked, normalized path (no trailing slash, no empty, `.` or `..`
/// components).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NsPath {
    text: String,
    /// Byte length of `/VO`.
    vo_end: usize,
}

/// VO names and member IDs: one definition, the API crate's.
pub use metadata_api::{is_identifier, is_member_id, MAX_ID};

impl NsPath {
    /// Parses a client's path. Refuses relative paths, `.` and `..`,
    /// empty components (`//`), control characters, over-long paths and a
    /// first component that is not a VO name. One trailing `/` is ignored.
    pub fn parse(raw: &str) -> Result<NsPath, String> {
        if raw.len() > MAX_PATH {
            return Err(format!("path longer than {MAX_PATH} bytes"));
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(format!("path {raw:?} must be absolute: /VO/dir/name"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/');
        let vo = parts.next().unwrap_or("");
        if !is_identifier(vo) {
            return Err(format!(
                "path {raw:?} must start with a VO name (/VO/...): letters, digits, '.', '_', '-'"
            ));
        }
        let mut depth = 0;
        for c in parts {
            depth += 1;
            if c.is_empty() {
                return Err(format!("path {raw:?} has an empty component (`//`)"));
            }
            if c == "." || c == ".." {
                return Err(format!("path {raw:?}: `.` and `..` are not allowed"));
            }
            if c.len() > MAX_COMPONENT {
                return Err(format!(
                    "path {raw:?}: component longer than {MAX_COMPONENT} bytes"
                ));
            }
            if c.chars().any(|ch| ch.is_control()) {
                return Err(format!("path {raw:?}: control characters are not allowed"));
            }
        }
        if depth > MAX_DEPTH {
            return Err(format!("path {raw:?} deeper than {MAX_DEPTH}"));
        }
        Ok(NsPath {
            text: format!("/{rest}"),
            vo_end: 1 + vo.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The VO that owns the tree.
    pub fn vo(&self) -> &str {
        &self.text[1..self.vo_end]
    }

    /// Whether this is the VO's root directory (`/VO`).
    pub fn is_root(&self) -> bool {
        self.text.len() == self.vo_end
    }

    /// The parent directory; `None` for a VO root.
    pub fn parent(&self) -> Option<NsPath> {
        if self.is_root() {
            return None;
        }
        let cut = self.text.rfind('/')?;
        Some(NsPath {
            text: self.text[..cut].to_owned(),
            vo_end: self.vo_end,
        })
    }

    /// The last component (the VO for a root).
    pub fn name(&self) -> &str {
        self.text.rsplit('/').next().unwrap_or("")
    }

    /// Whether `self` is `other` or inside it.
    pub fn is_within(&self, other: &NsPath) -> bool {
        self.text == other.text
            || (self.text.starts_with(&other.text)
                && self.text.as_bytes().get(other.text.len()) == Some(&b'/'))
    }

    /// The ancestors from the VO root down to the parent.
    pub fn ancestors(&self) -> Vec<NsPath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }
}

impl fmt::Display for NsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        let p = NsPath::parse("/vo1/data/run 7/file.dat").unwrap();
        assert_eq!(p.vo(), "vo1");
        assert_eq!(p.name(), "file.dat");
        assert_eq!(p.parent().unwrap().as_str(), "/vo1/data/run 7");
        assert_eq!(
            p.ancestors().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            ["/vo1", "/vo1/data", "/vo1/data/run 7"]
        );
        let root = NsPath::parse("/vo1/").unwrap();
        assert!(root.is_root());
        assert_eq!(root.as_str(), "/vo1");
        assert!(root.parent().is_none());
        assert!(p.is_within(&root));
        assert!(!NsPath::parse("/vo1x").unwrap().is_within(&root));
        assert_eq!(NsPath::parse("/vo/ünï").unwrap().name(), "ünï");
    }

    #[test]
    fn refuses_traversal_and_junk() {
        for bad in [
            "", "vo/a", "/", "//a", "/vo//a", "/vo/./a", "/vo/../x", "/vo/a/..", "/../etc",
            "/.vo/a", "/v o/a", "/vo/a\nb", "/vo/a\0b",
        ] {
            assert!(NsPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(NsPath::parse(&format!("/vo/{}", "a".repeat(256))).is_err());
        assert!(NsPath::parse(&format!("/vo{}", "/a".repeat(65))).is_err());
        assert!(NsPath::parse(&format!("/vo{}", "/a".repeat(64))).is_ok());
    }
}
