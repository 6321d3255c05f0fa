//! Inode numbers of a mount: one per path, stable while mounted (a
//! rename moves the number, and those under a renamed directory, to the
//! new path), never reused. The root is 1.

use std::collections::HashMap;

pub(crate) const ROOT: u64 = 1;

pub(crate) struct Inodes {
    by_ino: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Inodes {
    pub(crate) fn new(root: &str) -> Inodes {
        let mut t = Inodes {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next: ROOT + 1,
        };
        t.by_ino.insert(ROOT, root.to_owned());
        t.by_path.insert(root.to_owned(), ROOT);
        t
    }

    /// The number of `path`, given one if it has none yet.
    pub(crate) fn ino_of(&mut self, path: &str) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.by_ino.insert(i, path.to_owned());
        self.by_path.insert(path.to_owned(), i);
        i
    }

    pub(crate) fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).cloned()
    }

    /// `from` (and everything under it) is now `to`; what `to` was is
    /// forgotten.
    pub(crate) fn rename(&mut self, from: &str, to: &str) {
        if let Some(old) = self.by_path.remove(to) {
            self.by_ino.remove(&old);
        }
        let prefix = format!("{from}/");
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, i) in moved {
            self.by_path.remove(&p);
            let new = format!("{to}{}", &p[from.len()..]);
            self.by_ino.insert(i, new.clone());
            self.by_path.insert(new, i);
        }
    }

    /// `path` is gone (its number too: a new entry of that name gets a
    /// new one).
    pub(crate) fn remove(&mut self, path: &str) {
        if let Some(i) = self.by_path.remove(path) {
            self.by_ino.remove(&i);
        }
    }
}

/// `parent/name`.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_renames() {
        let mut t = Inodes::new("/vo1/a");
        let d = t.ino_of("/vo1/a/d");
        let f = t.ino_of("/vo1/a/d/f");
        let g = t.ino_of("/vo1/a/g");
        assert_eq!(t.ino_of("/vo1/a/d/f"), f);
        t.rename("/vo1/a/d", "/vo1/a/e");
        assert_eq!(t.path(d).as_deref(), Some("/vo1/a/e"));
        assert_eq!(t.path(f).as_deref(), Some("/vo1/a/e/f"));
        t.rename("/vo1/a/e/f", "/vo1/a/g");
        assert_eq!(t.path(f).as_deref(), Some("/vo1/a/g"));
        assert_eq!(t.path(g), None);
        t.remove("/vo1/a/g");
        assert_ne!(t.ino_of("/vo1/a/g"), f);
        assert_eq!(child("/", "x"), "/x");
    }
}
