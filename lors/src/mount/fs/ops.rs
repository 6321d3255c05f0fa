//! The kernel's requests ([`fuser::Filesystem`]) of a [`GridFs`], each
//! answered with the helpers of `fs.rs`.

use super::*;

impl fuser::Filesystem for GridFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // open(O_TRUNC) arrives as one open with the flag, not as a
        // truncate (which would store an empty version) and an open.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_MAX_PAGES);
        // Files open for writing are direct I/O (see `WRITE_OPEN`); this
        // keeps shared mmap of them working (kernel 6.6 and later).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ttl = self.opts.attr_ttl;
        let r = self.child_path(parent, name).and_then(|p| {
            let ino = lock(&self.inodes).ino_of(&p);
            self.attr(ino, &p)
        });
        match r {
            Ok(a) => reply.entry(&ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).and_then(|p| self.attr(ino.0, &p)) {
            Ok(a) => reply.attr(&self.opts.attr_ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Modes, owners and times are the metadata manager's: only the
        // size can be set.
        let r = (|| {
            let path = self.path(ino)?;
            if let Some(size) = size {
                let open = match fh {
                    Some(fh) if matches!(&*self.handle(fh)?, Handle::Write(_)) => {
                        Some(self.handle(fh)?)
                    }
                    _ => self.writer_of(ino.0),
                };
                match open {
                    Some(h) => match &*h {
                        Handle::Write(w) => {
                            let mut w = self.rt.block_on(w.lock());
                            self.resize(&mut w, size)?;
                        }
                        Handle::Read(_) => return Err(Errno::EBADF),
                    },
                    None => self.truncate_closed(ino.0, &path, size)?,
                }
            }
            self.attr(ino.0, &path)
        })();
        match r {
            Ok(a) => reply.attr(&self.opts.attr_ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let path = self.child_path(parent, name)?;
            let grid = self.grid()?;
            let mdm = Self::mdm(&grid)?;
            let e = self
                .rt
                .block_on(mdm.mkdir(&path, false))
                .map_err(|e| self.fail("mkdir", &path, &e))?;
            let ino = lock(&self.inodes).ino_of(&path);
            Ok(self.attr_of(ino, &e))
        })();
        match r {
            Ok(a) => reply.entry(&self.opts.attr_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            let path = self.child_path(parent, name)?;
            let grid = self.grid()?;
            match self.delete_file(&grid, &path) {
                Ok(()) => {}
                // Created here and not committed yet: nothing to delete.
                Err(Error::NotFound(_))
                    if {
                        let ino = lock(&self.inodes).ino_of(&path);
                        lock(&self.local).contains_key(&ino)
                    } => {}
                Err(e) => return Err(self.fail("delete", &path, &e)),
            }
            lock(&self.inodes).remove(&path);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            let path = self.child_path(parent, name)?;
            let grid = self.grid()?;
            let mdm = Self::mdm(&grid)?;
            match self.rt.block_on(mdm.delete(&path, None)) {
                Ok(_) => {}
                Err(Error::BadRequest(m) | Error::Conflict(m)) if m.contains("not empty") => {
                    return Err(Errno::ENOTEMPTY)
                }
                Err(e) => return Err(self.fail("rmdir", &path, &e)),
            }
            lock(&self.inodes).remove(&path);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = self.child_path(parent, name)?;
            let to = self.child_path(newparent, newname)?;
            let grid = self.grid()?;
            let mdm = Self::mdm(&grid)?;
            let mut moved = self.rt.block_on(mdm.move_entry(&from, &to));
            if let Err(Error::Conflict(_)) = &moved {
                // POSIX rename replaces a file: delete it, then move.
                let target = self
                    .rt
                    .block_on(mdm.stat(&to))
                    .map_err(|e| self.fail("stat", &to, &e))?;
                if target.kind == EntryKind::Dir {
                    return Err(Errno::EISDIR);
                }
                self.delete_file(&grid, &to)
                    .map_err(|e| self.fail("replace", &to, &e))?;
                moved = self.rt.block_on(mdm.move_entry(&from, &to));
            }
            match moved {
                Ok(_) => {}
                // Created here and not committed yet: renamed here only.
                Err(Error::NotFound(_))
                    if {
                        let ino = lock(&self.inodes).ino_of(&from);
                        lock(&self.local).contains_key(&ino)
                    } => {}
                Err(e) => return Err(self.fail("rename", &from, &e)),
            }
            lock(&self.inodes).rename(&from, &to);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let path = self.path(ino)?;
            let grid = self.grid()?;
            let mdm = Self::mdm(&grid)?;
            let stat = self.rt.block_on(mdm.stat(&path));
            let pending = lock(&self.local).contains_key(&ino.0);
            let e = match stat {
                Ok(e) => Some(e),
                Err(Error::NotFound(_)) if pending => None,
                Err(e) => return Err(self.fail("open", &path, &e)),
            };
            if let OpenAccMode::O_RDONLY = flags.acc_mode() {
                let e = e.ok_or(Errno::ENOENT)?;
                if e.kind == EntryKind::Dir {
                    return Err(Errno::EISDIR);
                }
                let fh = self.new_fh(Handle::Read(ReadHandle {
                    path,
                    version: e.version,
                    size: e.size,
                    reader: tokio::sync::OnceCell::new(),
                }));
                return Ok((fh, FopenFlags::empty()));
            }
            let truncate = flags.0 & libc::O_TRUNC != 0;
            let mut w = self.open_writer(&grid, ino.0, &path, e.as_ref(), truncate)?;
            w.opener = thread_group(req.pid());
            let fh = self.new_fh(Handle::Write(Box::new(tokio::sync::Mutex::new(w))));
            Ok((fh, WRITE_OPEN))
        })();
        match r {
            Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let path = self.child_path(parent, name)?;
            let parent_path = self.path(parent)?;
            let grid = self.grid()?;
            let mdm = Self::mdm(&grid)?;
            let existing = match self.rt.block_on(mdm.stat(&path)) {
                Ok(_) if flags & libc::O_EXCL != 0 => return Err(Errno::EEXIST),
                Ok(e) => Some(e),
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(self.fail("create", &path, &e)),
            };
            if existing.is_none() {
                let p = self
                    .rt
                    .block_on(mdm.stat(&parent_path))
                    .map_err(|e| self.fail("stat", &parent_path, &e))?;
                if !p.rights.as_deref().unwrap_or("w").contains('w') {
                    return Err(Errno::EACCES);
                }
            }
            let ino = lock(&self.inodes).ino_of(&path);
            let truncate = flags & libc::O_TRUNC != 0;
            let mut w = self.open_writer(&grid, ino, &path, existing.as_ref(), truncate)?;
            w.opener = thread_group(req.pid());
            let fh = self.new_fh(Handle::Write(Box::new(tokio::sync::Mutex::new(w))));
            let attr = self.local_attr(ino).ok_or(Errno::EIO)?;
            Ok((attr, fh))
        })();
        match r {
            Ok((a, fh)) => reply.created(
                &self.opts.attr_ttl,
                &a,
                Generation(0),
                FileHandle(fh),
                WRITE_OPEN,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.handle(fh).and_then(|h| match &*h {
            Handle::Read(r) => self.read_into(r, offset, size),
            Handle::Write(w) => {
                let w = self.rt.block_on(w.lock());
                let mut buf = vec![0u8; size as usize];
                let n = w.writer.read_at(offset, &mut buf).map_err(|e| {
                    tracing::error!("lors mount: {e}");
                    Errno::EIO
                })?;
                buf.truncate(n);
                Ok(buf)
            }
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut reply = Some(reply);
        let r = self.with_writer(fh, |w| {
            let old = w.writer.written();
            let new = old.max(offset.saturating_add(data.len() as u64));
            if let Err(e) = w.writer.usable() {
                tracing::error!("lors mount: {e}");
                return Err(Errno::EIO);
            }
            self.reserve(old, new)?;
            // Answered before the bytes are staged: the writer's next
            // write (read from its input, copied by the kernel) overlaps
            // the copy into the stage, and waits for this handle's lock,
            // held until the stage has them (as reads, flush and fsync
            // do). A stage write that fails now breaks the writer: its
            // next write and its commit (close, fsync) fail with EIO.
            if let Some(l) = lock(&self.local).get_mut(&w.ino) {
                l.size = new;
                l.mtime = SystemTime::now();
            }
            if let Some(reply) = reply.take() {
                reply.written(data.len() as u32);
            }
            if let Err(e) = self.rt.block_on(w.writer.write_at(offset, data)) {
                let _ = self.reserve(new, old);
                // The writer now refuses its commit: so does the stream
                // (it must not store the file without this write).
                if let Some(st) = w.stream.take() {
                    st.abandon();
                }
                tracing::error!("lors mount: {e}");
                return Err(Errno::EIO);
            }
            w.dirty = true;
            w.failed = false;
            self.feed_stream(w, offset, data.len() as u64);
            self.stats
                .bytes_written
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        });
        if let (Err(e), Some(reply)) = (r, reply) {
            reply.error(e);
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.commit_handle(fh, Some(req.pid()), reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.commit_handle(fh, None, reply)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = lock(&self.handles).remove(&fh.0);
        if let Some(h) = h {
            if let Handle::Write(w) = &*h {
                let mut w = self.rt.block_on(w.lock());
                // Normally committed by the flush of close(2); a failure
                // here has no caller left to tell but the log, and one
                // close or fsync already told of does not run again.
                if !w.failed {
                    let _ = self.commit(&mut w);
                }
                self.close_writer(&w);
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.list_dir(ino.0) {
            Ok(entries) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.dirs).insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }
}
