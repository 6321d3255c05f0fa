//! The allocation journal: an append-only log of checksummed records, one
//! per resource, replayed at start and compacted into a snapshot.
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`. A torn or
//! corrupt tail (a crash in the middle of an append) ends the replay and is cut
//! off; every record before it was fully written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ibp_proto::Reliability;

/// Largest payload a record may claim; anything larger is corruption.
const MAX_RECORD: u32 = 1 << 16;

/// Who made an allocation through an authenticated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub vo: String,
    pub vo_id: String,
}

/// Longest VO name or VO ID a record may hold.
pub const MAX_OWNER_FIELD: usize = 1024;

/// One journal record.
///
/// Tags: 1 Allocate (no owner, no UUID), 2 Size, 3 Change, 4 Refs, 5 Delete,
/// 6 Allocate with owner and/or UUID, 7 Bind, 8 Allocate with the client
/// address of a legacy allocation (tag 6's fields, then the address).
/// Tags 1-7 stay decodable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A new allocation (also the snapshot form of a live one).
    Allocate {
        id: u64,
        key_hash: [u8; 32],
        typekeys: [u32; 3],
        created: i64,
        expires: i64,
        max_size: u64,
        size: u64,
        reliability: Reliability,
        read_refs: u32,
        write_refs: u32,
        /// Made through an authenticated session: never reachable through
        /// the legacy port.
        owner: Option<Owner>,
        /// The file UUID the allocation is bound to (snapshot form).
        uuid: Option<[u8; 16]>,
        /// The client address that made a legacy allocation (its
        /// per-address budget; `None` in journals written before it was
        /// recorded).
        origin: Option<IpAddr>,
    },
    /// The first authenticated STORE/WRITE bound the allocation to a file.
    Bind { id: u64, uuid: [u8; 16] },
    /// Acknowledged data size after a STORE or WRITE.
    Size { id: u64, size: u64 },
    /// MANAGE CHNG.
    Change {
        id: u64,
        max_size: u64,
        expires: i64,
        reliability: Reliability,
    },
    /// MANAGE INCR/DECR.
    Refs {
        id: u64,
        read_refs: u32,
        write_refs: u32,
    },
    /// Gone: deleted, expired or reclaimed.
    Delete { id: u64 },
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Record::Allocate {
                id,
                key_hash,
                typekeys,
                created,
                expires,
                max_size,
                size,
                reliability,
                read_refs,
                write_refs,
                owner,
                uuid,
                origin,
            } => {
                let extended = owner.is_some() || uuid.is_some() || origin.is_some();
                out.push(match (origin, extended) {
                    (Some(_), _) => 8,
                    (None, true) => 6,
                    (None, false) => 1,
                });
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(key_hash);
                for tk in typekeys {
                    out.extend_from_slice(&tk.to_le_bytes());
                }
                out.extend_from_slice(&created.to_le_bytes());
                out.extend_from_slice(&expires.to_le_bytes());
                out.extend_from_slice(&max_size.to_le_bytes());
                out.extend_from_slice(&size.to_le_bytes());
                out.push(reliability.number() as u8);
                out.extend_from_slice(&read_refs.to_le_bytes());
                out.extend_from_slice(&write_refs.to_le_bytes());
                if extended {
                    match owner {
                        Some(o) => {
                            out.push(1);
                            put_text(out, &o.vo);
                            put_text(out, &o.vo_id);
                        }
                        None => out.push(0),
                    }
                    match uuid {
                        Some(u) => {
                            out.push(1);
                            out.extend_from_slice(u);
                        }
                        None => out.push(0),
                    }
                }
                match origin {
                    Some(IpAddr::V4(a)) => {
                        out.push(4);
                        out.extend_from_slice(&a.octets());
                    }
                    Some(IpAddr::V6(a)) => {
                        out.push(6);
                        out.extend_from_slice(&a.octets());
                    }
                    None => {}
                }
            }
            Record::Bind { id, uuid } => {
                out.push(7);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(uuid);
            }
            Record::Size { id, size } => {
                out.push(2);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&size.to_le_bytes());
            }
            Record::Change {
                id,
                max_size,
                expires,
                reliability,
            } => {
                out.push(3);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&max_size.to_le_bytes());
                out.extend_from_slice(&expires.to_le_bytes());
                out.push(reliability.number() as u8);
            }
            Record::Refs {
                id,
                read_refs,
                write_refs,
            } => {
                out.push(4);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&read_refs.to_le_bytes());
                out.extend_from_slice(&write_refs.to_le_bytes());
            }
            Record::Delete { id } => {
                out.push(5);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        let payload = &out[start + 8..];
        let len = payload.len() as u32;
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(p: &[u8]) -> Option<Record> {
        let mut r = Reader(p);
        let tag = r.u8()?;
        let rec = match tag {
            1 | 6 | 8 => Record::Allocate {
                id: r.u64()?,
                key_hash: r.array()?,
                typekeys: [r.u32()?, r.u32()?, r.u32()?],
                created: r.i64()?,
                expires: r.i64()?,
                max_size: r.u64()?,
                size: r.u64()?,
                reliability: Reliability::from_number(r.u8()?.into())?,
                read_refs: r.u32()?,
                write_refs: r.u32()?,
                owner: if tag != 1 && r.u8()? == 1 {
                    Some(Owner {
                        vo: r.text()?,
                        vo_id: r.text()?,
                    })
                } else {
                    None
                },
                uuid: if tag != 1 && r.u8()? == 1 {
                    Some(r.array()?)
                } else {
                    None
                },
                origin: if tag == 8 {
                    match r.u8()? {
                        4 => Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
                        6 => Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
                        _ => return None,
                    }
                } else {
                    None
                },
            },
            7 => Record::Bind {
                id: r.u64()?,
                uuid: r.array()?,
            },
            2 => Record::Size {
                id: r.u64()?,
                size: r.u64()?,
            },
            3 => Record::Change {
                id: r.u64()?,
                max_size: r.u64()?,
                expires: r.i64()?,
                reliability: Reliability::from_number(r.u8()?.into())?,
            },
            4 => Record::Refs {
                id: r.u64()?,
                read_refs: r.u32()?,
                write_refs: r.u32()?,
            },
            5 => Record::Delete { id: r.u64()? },
            _ => return None,
        };
        r.0.is_empty().then_some(rec)
    }
}

fn put_text(out: &mut Vec<u8>, t: &str) {
    let b = &t.as_bytes()[..t.len().min(MAX_OWNER_FIELD)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn text(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take()?) as usize;
        if self.0.len() < len {
            return None;
        }
        let (t, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(t.to_vec()).ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
}

/// Reads every intact record of a journal file and cuts off a torn tail.
pub fn replay(path: &Path) -> io::Result<Vec<Record>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let mut records = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len as usize) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(rec) = Record::decode(payload) else {
            // Intact but not understood: written by a newer depot. Refuse
            // rather than lose the records behind it.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("journal record at byte {pos} is of a kind this depot does not know (written by a newer version?)"),
            ));
        };
        records.push(rec);
        pos += 8 + len as usize;
    }
    if pos < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            kept = pos,
            dropped = bytes.len() - pos,
            "journal has a torn or corrupt tail; cutting it off"
        );
    }
    Ok(records)
}

struct JournalFile {
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
}

/// An open journal, appended to by request handlers.
pub struct Journal {
    path: PathBuf,
    file: Mutex<JournalFile>,
    /// Records appended since the journal was opened: the generation used by
    /// group commit. Monotonic, never reset by compaction.
    appended: AtomicU64,
    /// Records in the current file (reset by compaction).
    in_file: AtomicU64,
    /// Highest generation known to be on stable storage.
    synced: tokio::sync::Mutex<u64>,
}

impl Journal {
    /// Writes `records` as a fresh snapshot (atomically replacing the old
    /// journal) and opens it for appending.
    pub fn create_from_snapshot(path: &Path, records: &[Record]) -> io::Result<Journal> {
        let tmp = path.with_extension("tmp");
        let mut buf = Vec::new();
        for r in records {
            r.encode(&mut buf);
        }
        {
            // Owner-only whatever the umask (it holds every allocation's
            // key hash and size); the rename keeps the mode. A leftover of
            // a crash would keep its own mode: start afresh.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            path: path.to_owned(),
            file: Mutex::new(JournalFile {
                file,
                len: buf.len() as u64,
            }),
            appended: AtomicU64::new(0),
            in_file: AtomicU64::new(records.len() as u64),
            synced: tokio::sync::Mutex::new(0),
        })
    }

    /// Appends one record with a single write; returns its generation.
    pub fn append(&self, rec: &Record) -> io::Result<u64> {
        let mut buf = Vec::with_capacity(96);
        rec.encode(&mut buf);
        let mut jf = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = jf.file.write_all(&buf) {
            // A partial record would end the replay and hide every later
            // record: cut the file back to its last whole record.
            let _ = jf.file.set_len(jf.len);
            return Err(e);
        }
        jf.len += buf.len() as u64;
        self.in_file.fetch_add(1, Ordering::SeqCst);
        Ok(self.appended.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Number of records in the journal file.
    pub fn records(&self) -> u64 {
        self.in_file.load(Ordering::SeqCst)
    }

    /// The generation of the last record appended.
    pub fn generation(&self) -> u64 {
        self.appended.load(Ordering::SeqCst)
    }

    /// Waits until generation `gen` is on stable storage; concurrent callers
    /// share one fsync (group commit).
    pub async fn sync_through(&self, gen: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().await;
        if *synced >= gen {
            return Ok(());
        }
        let target = self.appended.load(Ordering::SeqCst);
        let file = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file
            .try_clone()?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(io::Error::other)??;
        *synced = target;
        Ok(())
    }

    /// Syncs everything appended so far.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.sync_through(self.appended.load(Ordering::SeqCst))
            .await
    }

    /// Replaces the journal with a snapshot. The caller holds the resource's
    /// compaction gate so that no append races with it.
    pub fn compact(&self, records: &[Record]) -> io::Result<()> {
        let fresh = Journal::create_from_snapshot(&self.path, records)?;
        let mut jf = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *jf = fresh.file.into_inner().unwrap_or_else(|p| p.into_inner());
        // Generations stay monotonic: a waiter for an older generation just
        // fsyncs the (already durable) snapshot file.
        self.in_file.store(records.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Allocate {
                id: 7,
                key_hash: [9; 32],
                typekeys: [1, 2, 3],
                created: 100,
                expires: 200,
                max_size: 1024,
                size: 0,
                reliability: Reliability::Hard,
                read_refs: 1,
                write_refs: 1,
                owner: None,
                uuid: None,
                origin: None,
            },
            Record::Size { id: 7, size: 16 },
            Record::Change {
                id: 7,
                max_size: 2048,
                expires: 300,
                reliability: Reliability::Soft,
            },
            Record::Refs {
                id: 7,
                read_refs: 2,
                write_refs: 0,
            },
            Record::Delete { id: 7 },
        ]
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let j = Journal::create_from_snapshot(&path, &[]).unwrap();
        for r in sample() {
            j.append(&r).unwrap();
        }
        assert_eq!(replay(&path).unwrap(), sample());
        // Simulate a crash in the middle of an append.
        let mut torn = Vec::new();
        Record::Size { id: 7, size: 99 }.encode(&mut torn);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        assert_eq!(replay(&path).unwrap(), sample());
        // A flipped bit in the last record ends the replay before it.
        let mut bytes = std::fs::read(&path).unwrap();
        let good_len = bytes.len() - (torn.len() - 3);
        bytes[good_len - 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(replay(&path).unwrap(), sample()[..4].to_vec());
    }

    #[test]
    fn owned_allocations_and_bindings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let Record::Allocate {
            id,
            key_hash,
            typekeys,
            created,
            expires,
            max_size,
            size,
            reliability,
            read_refs,
            write_refs,
            ..
        } = sample()[0].clone()
        else {
            unreachable!()
        };
        let owned = |owner, uuid, origin| Record::Allocate {
            id,
            key_hash,
            typekeys,
            created,
            expires,
            max_size,
            size,
            reliability,
            read_refs,
            write_refs,
            owner,
            uuid,
            origin,
        };
        let owner = Some(Owner {
            vo: "vo1".into(),
            vo_id: "vo1:0001".into(),
        });
        let records = vec![
            owned(owner.clone(), None, None),
            owned(owner.clone(), Some([5; 16]), None),
            owned(None, Some([6; 16]), None),
            owned(None, None, Some("127.0.0.2".parse().unwrap())),
            owned(None, None, Some("2001:db8::7".parse().unwrap())),
            Record::Bind {
                id: 7,
                uuid: [4; 16],
            },
        ];
        let j = Journal::create_from_snapshot(&path, &sample()).unwrap();
        for r in &records {
            j.append(r).unwrap();
        }
        let mut all = sample();
        all.extend(records);
        assert_eq!(replay(&path).unwrap(), all);
        // The original tag stays in use for a legacy allocation.
        let mut buf = Vec::new();
        sample()[0].encode(&mut buf);
        assert_eq!(buf[8], 1);
    }

    #[test]
    fn compaction_replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let j = Journal::create_from_snapshot(&path, &sample()).unwrap();
        j.compact(&sample()[..1]).unwrap();
        j.append(&Record::Delete { id: 7 }).unwrap();
        assert_eq!(
            replay(&path).unwrap(),
            vec![sample()[0].clone(), Record::Delete { id: 7 }]
        );
    }
}
