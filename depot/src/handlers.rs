//! ALLOCATE, MANAGE and STATUS: the commands that touch metadata only.

use crate::resource::{now, Capacity};
use ibp_depot_client::wire::{read_line, timed, Line};
use ibp_proto::{
    parse_status_change_values, Allocate, CapKind, IbpError, Manage, ManageOp, ProbeInfo, Reply,
    Status, StatusOp, StorageType, MAX_LINE,
};
use subtle::ConstantTimeEq;

use crate::conn::Conn;
use crate::failure::Failure;
use crate::metrics::Exposition;
use crate::Depot;

/// The VO's limits on a size and a duration asked for in a session: `-19`
/// for a size over `max_size`, `-28` for a duration over `max_duration`.
/// Returns the duration to ask the resource for (`-1` becomes the smaller
/// of the two maxima).
fn vo_limits(conn: &Conn, res_max_duration: i64, size: u64, duration: i64) -> Result<i64, Failure> {
    let Some(s) = &conn.session else {
        return Ok(duration);
    };
    let p = &s.policy;
    if size > p.max_size.0 {
        return Err(Failure::Refused(
            IbpError::WouldExceedLimit,
            format!(
                "size {size} is over VO {}'s max_size {}",
                p.name, p.max_size
            ),
        ));
    }
    let vo_max = i64::try_from(p.max_duration.0).unwrap_or(i64::MAX);
    match duration {
        -1 => Ok(vo_max.min(res_max_duration)),
        d if d > vo_max => Err(Failure::Refused(
            IbpError::LongDuration,
            format!(
                "duration {d}s is over VO {}'s max_duration {}s",
                p.name, vo_max
            ),
        )),
        d => Ok(d),
    }
}

/// QUOTA (`2 23 <timeout>`, after AUTH): the caller's own use and limits
/// at this depot, its VO's and its own (VO ID); reply
/// `1 <vo_used> <vo_limit> <user_used> <user_limit> \n`, `-1` for no limit.
pub async fn quota(depot: &Depot, conn: &mut Conn) -> Result<(), Failure> {
    let owner = conn
        .session
        .as_ref()
        .filter(|s| !s.delegated)
        .map(|s| s.owner.clone())
        .ok_or_else(|| {
            Failure::Refused(
                IbpError::CapAccessDenied,
                "QUOTA before AUTH: authenticate with a depot grant first".into(),
            )
        })?;
    let info = depot.quotas.info(&owner.vo, &owner.vo_id);
    conn.send(info.encode().as_bytes()).await?;
    Ok(())
}

pub async fn allocate(depot: &Depot, conn: &mut Conn, a: Allocate) -> Result<(), Failure> {
    if a.storage != StorageType::ByteArray {
        return Err(IbpError::TypeNotSupported.into());
    }
    let res = depot.resource(a.rid).ok_or(IbpError::ResourceUnavailable)?;
    if let Some(s) = conn.session.as_ref().filter(|s| !s.policy.allocate) {
        return Err(retiring(&s.policy.name));
    }
    let duration = vo_limits(conn, res.capacity().max_duration, a.size, a.duration)?;
    let owner = conn.session.as_ref().map(|s| s.owner.clone());
    // A legacy allocation draws on the legacy budget of its client address.
    let origin = owner.is_none().then(|| conn.peer.ip());
    let (alloc, caps, gen) = res.allocate(a.reliability, a.size, duration, owner, origin)?;
    res.commit(gen).await?;
    let port = match (&depot.secure, conn.secure) {
        (Some(s), true) => s.current().port,
        _ => depot.port,
    };
    let cap =
        |kind, i: usize| depot.capability_on(port, alloc.rid, &caps.key, caps.typekeys[i], kind);
    let reply = Reply::Allocated {
        read: cap(CapKind::Read, 0),
        write: cap(CapKind::Write, 1),
        manage: cap(CapKind::Manage, 2),
    };
    tracing::debug!(rid = alloc.rid.0, id = alloc.id, size = a.size, "allocated");
    conn.reply(&reply).await?;
    Ok(())
}

/// MANAGE. As in IBP 1.4 (`ibp_manage.c`), every operation but PROBE needs
/// the MANAGE capability (`-10` otherwise): a reader must not DECR an
/// allocation away nor INCR it into a pin. The cap type (1 READ, 2 WRITE)
/// only says which reference count INCR/DECR change (LoRS's `lors_trim -d`
/// sends DECR with cap type 1 on the MANAGE capability). On the secure port
/// the session must also be the allocation's owner or an admin of its VO.
pub async fn manage(depot: &Depot, conn: &mut Conn, m: Manage) -> Result<(), Failure> {
    let res = depot
        .resource(Some(m.cap.rid))
        .ok_or(IbpError::CapNotFound)?;
    let (alloc, kind) = conn.find(res, &m.cap)?;
    let probe = matches!(m.op, ManageOp::Probe(_));
    match kind {
        Some(CapKind::Manage) => {}
        Some(_) if probe => {}
        Some(k) if conn.secure => {
            return Err(Failure::Refused(
                IbpError::InvalidManageCap,
                format!(
                    "{} needs the MANAGE capability, not the {} capability",
                    manage_op_name(&m.op),
                    kind_name(k)
                ),
            ))
        }
        _ => return Err(IbpError::InvalidManageCap.into()),
    }
    if !probe {
        check_owner(depot, conn, &alloc, &m.op)?;
    }
    let reply = match m.op {
        ManageOp::Probe(_) => {
            let st = alloc.state();
            Reply::Probe(ProbeInfo {
                read_refs: st.read_refs,
                write_refs: st.write_refs,
                size: st.size,
                max_size: st.max_size,
                seconds_left: (st.expires - now()).max(0),
                reliability: st.reliability.number(),
                storage: StorageType::ByteArray.number(),
            })
        }
        ManageOp::Incr | ManageOp::Decr => {
            let gen = res.adjust_refs(&alloc, m.cap_type, m.op == ManageOp::Incr)?;
            res.commit(gen).await?;
            Reply::Ok
        }
        ManageOp::Change(mut attrs) => {
            if let Some(s) = conn.session.as_ref().filter(|s| !s.policy.allocate) {
                let st = alloc.state();
                let longer = match attrs.duration {
                    0 => false,
                    -1 => true,
                    d => now().saturating_add(d) > st.expires,
                };
                if attrs.max_size > st.max_size || longer {
                    return Err(retiring(&s.policy.name));
                }
            }
            if conn.session.is_some() && (attrs.max_size != 0 || attrs.duration != 0) {
                let asked = if attrs.max_size == 0 {
                    alloc.state().max_size
                } else {
                    attrs.max_size
                };
                // In a session, "-1 = the maximum" is the VO's maximum.
                let d = vo_limits(conn, res.capacity().max_duration, asked, attrs.duration)?;
                attrs.duration = d;
            }
            // Wait for an in-flight STORE/WRITE, so its end is checked against the new size.
            let _writer = alloc.writer.lock().await;
            let gen = res.change(&alloc, &attrs)?;
            res.commit(gen).await?;
            Reply::Ok
        }
    };
    conn.reply(&reply).await?;
    Ok(())
}

/// ALLOCATE (or a growing CHNG) of a VO whose `[[vo]]` says `allocate = false`.
fn retiring(vo: &str) -> Failure {
    Failure::Refused(
        IbpError::CapAccessDenied,
        format!("VO {vo} is being retired on this depot (allocate = false): no new or longer allocations; reads and releases go on"),
    )
}

fn manage_op_name(op: &ManageOp) -> &'static str {
    match op {
        ManageOp::Probe(_) => "PROBE",
        ManageOp::Incr => "INCR",
        ManageOp::Decr => "DECR",
        ManageOp::Change(_) => "CHNG",
    }
}

fn kind_name(k: CapKind) -> &'static str {
    match k {
        CapKind::Read => "READ",
        CapKind::Write => "WRITE",
        CapKind::Manage => "MANAGE",
    }
}

/// On the secure port, INCR/DECR/CHNG also need the session of the
/// allocation's owner (its VO and VO ID, as recorded when it was made), or
/// of an admin of the owner's VO (the depot's `admin_group` among the
/// session's verified VO attributes, as the L-Bone and the metadata manager
/// decide it). A leaked MANAGE capability is not enough.
fn check_owner(
    depot: &Depot,
    conn: &Conn,
    alloc: &crate::resource::Allocation,
    op: &ManageOp,
) -> Result<(), Failure> {
    if !conn.secure {
        return Ok(());
    }
    let (Some(session), Some(owner)) = (&conn.session, &alloc.owner) else {
        return Err(Failure::Refused(
            IbpError::CapAccessDenied,
            format!("{} needs an authenticated session", manage_op_name(op)),
        ));
    };
    if session.owner == *owner {
        return Ok(());
    }
    let admin_group = depot.admin_group.as_str();
    let admin = session.identity.vo == owner.vo
        && !session.delegated
        && session
            .identity
            .groups
            .iter()
            .any(|g| g.name == admin_group);
    if admin {
        tracing::info!(peer = %conn.peer, vo = %owner.vo, admin = %session.owner.vo_id, op = manage_op_name(op), "VO admin manages a member's allocation");
        return Ok(());
    }
    tracing::info!(peer = %conn.peer, vo = %session.owner.vo, vo_id = %session.owner.vo_id, op = manage_op_name(op), "MANAGE of another identity's allocation refused");
    Err(Failure::Refused(
        IbpError::CapAccessDenied,
        format!(
            "{} refused: the allocation belongs to another VO identity; only its owner or an admin of its VO (group {admin_group:?}) may change it",
            manage_op_name(op)
        ),
    ))
}

fn password_ok(depot: &Depot, given: &str) -> bool {
    match &depot.status_password {
        Some(pw) => pw.as_bytes().ct_eq(given.as_bytes()).into(),
        None => false,
    }
}

pub async fn status(depot: &Depot, conn: &mut Conn, s: Status) -> Result<(), Failure> {
    match s.op {
        StatusOp::Inquire { rid, .. } => {
            // As in IBP 1.4, inquiry needs no password (LoRS sends "ibp").
            let res = depot.resource(rid).ok_or(IbpError::ResourceUnavailable)?;
            send_body(conn, &res.status().encode()).await
        }
        StatusOp::Change { rid, password } => {
            if !password_ok(depot, &password) {
                tracing::warn!(peer = %conn.peer, "STATUS CHANGE with a wrong password");
                return Err(IbpError::WrongPassword.into());
            }
            let res = depot.resource(rid).ok_or(IbpError::ResourceUnavailable)?;
            // As in IBP 1.4: a go-ahead, then the client sends the values.
            conn.reply(&Reply::Ok).await?;
            let line = match timed(conn.io_timeout, read_line(&mut conn.reader)).await? {
                Line::Text(l) => l,
                Line::TooLong => return Err(IbpError::BadFormat.into()),
                Line::Eof => return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into())),
            };
            // Sizes are in MiB, as IBP 1.4's libibp sends them.
            let (hard_mib, soft_mib, max_duration) =
                parse_status_change_values(&line).map_err(|e| e.ibp_error())?;
            let mib = |v: u64| v.checked_mul(1 << 20).ok_or(IbpError::InvalidParameter);
            let (hard, soft) = (mib(hard_mib)?, mib(soft_mib)?);
            if soft < hard || max_duration <= 0 {
                return Err(IbpError::InvalidParameter.into());
            }
            res.set_capacity(Capacity {
                hard_size: hard,
                soft_size: soft,
                max_duration,
            });
            tracing::info!(
                rid = res.rid.0,
                hard,
                soft,
                max_duration,
                "capacity changed by STATUS CHANGE"
            );
            send_body(conn, &res.status().encode()).await
        }
        StatusOp::Resources => {
            let rids = depot.resources().iter().map(|r| r.rid).collect();
            conn.reply(&Reply::Resources(rids)).await?;
            Ok(())
        }
        StatusOp::Version => {
            let body = format!(
                "ibp-depot {}\nIBP protocol 1.4 (legacy text)\nresources {}\nEND\n",
                env!("CARGO_PKG_VERSION"),
                depot.resources().len()
            );
            send_body(conn, &body).await
        }
        StatusOp::Stats { .. } => {
            let body = format!("{}END\n", depot.exposition());
            send_body(conn, &body).await
        }
    }
}

/// `1 <len> \n` + body, in one write.
async fn send_body(conn: &mut Conn, body: &str) -> Result<(), Failure> {
    debug_assert!(body.len() < MAX_LINE * 64);
    let mut out = Reply::Payload(body.len() as u64).encode().into_bytes();
    out.extend_from_slice(body.as_bytes());
    conn.send(&out).await?;
    Ok(())
}
