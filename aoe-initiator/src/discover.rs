//! Finding targets: broadcast a query config on each interface, collect the answers for a
//! bounded time, merge them by shelf.slot (one target may answer from several MACs and on
//! several interfaces), then IDENTIFY each target to learn its size.
//!
//! IDENTIFY goes out on every path. Paths whose answers disagree on the capacity or the
//! serial number are not one disk reached twice but two disks that claim one shelf.slot (a
//! misconfigured target, or two of them): such paths are kept apart as
//! [`TargetInfo::conflicts`], and [`Device`](crate::Device) refuses the disk.
//!
//! ```no_run
//! use aoe_initiator::discover::{discover, DiscoverOptions};
//! use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
//! use aoe_transport::Transport;
//!
//! let mut links: Vec<Box<dyn Transport>> =
//!     vec![Box::new(AfPacket::open("eth0", AfPacketOptions::default())?)];
//! for t in discover(&mut links, &DiscoverOptions::default())? {
//!     println!("{} {} bytes {} via {} path(s)", t.name(), t.size_bytes(), t.model, t.paths.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use aoe_proto::AtaCommand;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aoe_proto::{
    Body, BodyRepr, ConfigCommand, ConfigRepr, Flags, Frame, FrameRepr, HeaderRepr, MacAddr, SHELF_BROADCAST,
    SLOT_BROADCAST,
};
use aoe_transport::Transport;

use crate::driver::Driver;
use crate::session::{Event, NoData, Path, Reply, Request, Session, SessionConfig};
use crate::Error;

/// Tag of discovery queries. Any query-config answer is taken during discovery (targets also
/// announce themselves unsolicited), so the value only helps reading captures.
const QUERY_TAG: u32 = 0xD15C_0000;

/// How discovery behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// How long answers are collected.
    pub timeout: Duration,
    /// How many times the query is sent, spread evenly over `timeout` (a lost broadcast is
    /// not retransmitted by anyone else). At least 1.
    pub queries: u32,
    /// Stop early once no new target or path has answered for this long (after the first
    /// answer). `None` always waits the whole `timeout`.
    pub settle: Option<Duration>,
    /// Silence after which IDENTIFY of a target is given up (it is retransmitted meanwhile).
    pub identify_timeout: Duration,
}

impl Default for DiscoverOptions {
    /// 1 s of collecting with 3 queries, no early stop, 5 s for IDENTIFY.
    fn default() -> Self {
        DiscoverOptions {
            timeout: Duration::from_secs(1),
            queries: 3,
            settle: None,
            identify_timeout: Duration::from_secs(5),
        }
    }
}

/// One way to reach a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetPath {
    /// Index of the transport in the slice given to discovery.
    pub transport: usize,
    /// That transport's name, e.g. `eth0`.
    pub iface: String,
    /// The target's MAC on this path.
    pub mac: MacAddr,
}

/// A target as its query-config answers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Shelf (major).
    pub shelf: u16,
    /// Slot (minor).
    pub slot: u8,
    /// Every (interface, target MAC) it answered on, sorted.
    pub paths: Vec<TargetPath>,
    /// Requests it can queue (the smallest any path reported).
    pub buffer_count: u16,
    /// Most sectors per ATA request (the smallest any path reported).
    pub sector_count: u8,
    /// Firmware version.
    pub firmware: u16,
    /// Config string.
    pub config_string: Vec<u8>,
}

/// A target found by [`discover`]: its announcement plus what IDENTIFY says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Shelf (major).
    pub shelf: u16,
    /// Slot (minor).
    pub slot: u8,
    /// Every (interface, target MAC) it answered on.
    pub paths: Vec<TargetPath>,
    /// Requests it can queue.
    pub buffer_count: u16,
    /// Most sectors per ATA request it accepts.
    pub sector_count: u8,
    /// Firmware version (query config).
    pub firmware: u16,
    /// Config string.
    pub config_string: Vec<u8>,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// LBA48 supported.
    pub lba48: bool,
    /// The FLUSH command IDENTIFY offers: FLUSH CACHE EXT, else FLUSH CACHE, else none.
    pub flush_command: Option<AtaCommand>,
    /// Model, trimmed.
    pub model: String,
    /// Serial number, trimmed.
    pub serial: String,
    /// Paths that answer as this shelf.slot but IDENTIFY as another disk (another capacity
    /// or serial): empty unless two disks claim one address.
    pub conflicts: Vec<PathConflict>,
}

/// A path that answers as a target's shelf.slot but whose IDENTIFY data differs from that of
/// the target's [`paths`](TargetInfo::paths): another disk at the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConflict {
    /// The path.
    pub path: TargetPath,
    /// The capacity it reports, in 512-byte sectors.
    pub sectors: u64,
    /// The serial number it reports, trimmed.
    pub serial: String,
}

/// The FLUSH command a disk with this IDENTIFY data takes.
pub fn flush_command(id: &aoe_proto::Identify) -> Option<AtaCommand> {
    if id.flush_cache_ext {
        Some(AtaCommand::FlushCacheExt)
    } else if id.flush_cache {
        Some(AtaCommand::FlushCache)
    } else {
        None
    }
}

impl TargetInfo {
    /// The announcement with IDENTIFY's answers.
    pub fn new(a: Announcement, id: &aoe_proto::Identify) -> Self {
        TargetInfo {
            shelf: a.shelf,
            slot: a.slot,
            paths: a.paths,
            buffer_count: a.buffer_count,
            sector_count: a.sector_count,
            firmware: a.firmware,
            config_string: a.config_string,
            sectors: id.sectors,
            lba48: id.lba48,
            flush_command: flush_command(id),
            model: id.model().to_owned(),
            serial: id.serial().to_owned(),
            conflicts: Vec::new(),
        }
    }

    /// The query-config part of what is known.
    pub fn announcement(&self) -> Announcement {
        Announcement {
            shelf: self.shelf,
            slot: self.slot,
            paths: self.paths.clone(),
            buffer_count: self.buffer_count,
            sector_count: self.sector_count,
            firmware: self.firmware,
            config_string: self.config_string.clone(),
        }
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.sectors * aoe_proto::SECTOR_SIZE as u64
    }

    /// The usual name, `e<shelf>.<slot>`.
    pub fn name(&self) -> String {
        format!("e{}.{}", self.shelf, self.slot)
    }

    /// [`Error::Conflict`] naming the first path and the first conflicting one, if another
    /// disk answers at this address.
    pub fn check_conflicts(&self) -> Result<(), Error> {
        match (self.paths.first(), self.conflicts.first()) {
            (Some(one), Some(other)) => Err(Error::Conflict {
                shelf: self.shelf,
                slot: self.slot,
                first: one.mac,
                other: other.path.mac,
            }),
            _ => Ok(()),
        }
    }
}

/// Finds every target reachable through `links` and identifies it. Targets that answer the
/// query but not IDENTIFY are left out (and logged). Sorted by shelf, then slot.
pub fn discover(links: &mut [Box<dyn Transport>], opts: &DiscoverOptions) -> Result<Vec<TargetInfo>, Error> {
    let found = probe(links, None, opts)?;
    let identified = identify(links, &found, opts)?;
    Ok(found
        .iter()
        .zip(identified)
        .filter_map(|(a, r)| {
            r.map_err(|e| {
                tracing::warn!(shelf = a.shelf, slot = a.slot, error = %e, "IDENTIFY failed; target left out")
            })
            .ok()
        })
        .collect())
}

/// Sends query configs (to every target, or to `target`'s shelf.slot only) and collects the
/// answers, merged by shelf.slot. No IDENTIFY. Sorted by shelf, then slot.
pub fn probe(
    links: &mut [Box<dyn Transport>],
    target: Option<(u16, u8)>,
    opts: &DiscoverOptions,
) -> Result<Vec<Announcement>, Error> {
    let (shelf, slot) = target.unwrap_or((SHELF_BROADCAST, SLOT_BROADCAST));
    let mut driver = Driver::new(links, 64);
    let queries = opts.queries.max(1);
    let interval = opts.timeout / queries;
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let mut sent = 0u32;
    let mut last_news: Option<Instant> = None;
    let mut found: BTreeMap<(u16, u8), Announcement> = BTreeMap::new();
    let macs: Vec<MacAddr> = links.iter().map(|l| l.mac()).collect();
    let names: Vec<String> = links.iter().map(|l| l.name().to_owned()).collect();
    loop {
        let now = Instant::now();
        if sent < queries && now >= start + interval * sent {
            for (i, link) in links.iter().enumerate() {
                let query = FrameRepr {
                    dst: MacAddr::BROADCAST,
                    src: link.mac(),
                    header: HeaderRepr::request(shelf, slot, QUERY_TAG | sent),
                    body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
                };
                driver.out(i).push_with(|buf| query.emit_padded(buf).unwrap_or(0));
            }
            driver.flush(links)?;
            sent += 1;
        }
        let settled = matches!((opts.settle, last_news), (Some(s), Some(t)) if now >= t + s);
        if now >= deadline || settled {
            break;
        }
        let mut wake = deadline;
        if sent < queries {
            wake = wake.min(start + interval * sent);
        }
        if let (Some(s), Some(t)) = (opts.settle, last_news) {
            wake = wake.min(t + s);
        }
        driver.receive(links, wake.saturating_duration_since(now), |i, at, frame| {
            let Some((key, path, a)) = announcement(frame, macs[i], target) else { return };
            let path = TargetPath { transport: i, iface: names[i].clone(), mac: path };
            let entry = found.entry(key).or_insert_with(|| Announcement { paths: Vec::new(), ..a.clone() });
            if !entry.paths.contains(&path) {
                entry.buffer_count = entry.buffer_count.min(a.buffer_count);
                entry.sector_count = entry.sector_count.min(a.sector_count);
                entry.paths.push(path);
                entry.paths.sort();
                last_news = Some(at);
            }
        })?;
    }
    Ok(found.into_values().collect())
}

/// The target an answer to a query config describes, if `frame` is one.
fn announcement(
    frame: &[u8],
    own_mac: MacAddr,
    target: Option<(u16, u8)>,
) -> Option<((u16, u8), MacAddr, Announcement)> {
    let f = Frame::parse(frame).ok()?;
    let Body::Config { header, string } = f.body else { return None };
    let flags = f.header.flags();
    if !flags.contains(Flags::RESPONSE) || flags.contains(Flags::ERROR) {
        return None;
    }
    if f.ethernet.dst != own_mac && !f.ethernet.dst.is_broadcast() {
        return None;
    }
    let key = (f.header.shelf(), f.header.slot());
    if key.0 == SHELF_BROADCAST || key.1 == SLOT_BROADCAST || target.is_some_and(|t| t != key) {
        return None;
    }
    Some((
        key,
        f.ethernet.src,
        Announcement {
            shelf: key.0,
            slot: key.1,
            paths: Vec::new(),
            buffer_count: header.buffer_count.get(),
            sector_count: header.sector_count,
            firmware: header.firmware.get(),
            config_string: string.to_vec(),
        },
    ))
}

/// The session configuration for talking to `a` through `links`.
pub(crate) fn session_config(links: &[Box<dyn Transport>], a: &Announcement) -> SessionConfig {
    let paths = a
        .paths
        .iter()
        .filter_map(|p| {
            links.get(p.transport).map(|l| Path { iface: p.transport, local: l.mac(), target: p.mac })
        })
        .collect();
    let mtu_sectors = a
        .paths
        .iter()
        .filter_map(|p| links.get(p.transport))
        .map(|l| aoe_proto::max_sectors(l.mtu()))
        .min()
        .unwrap_or(1);
    // A target reporting 0 sectors per request is taken at the MTU's word.
    let target_sectors = if a.sector_count == 0 { u8::MAX } else { a.sector_count };
    let mut cfg = SessionConfig::new(a.shelf, a.slot, paths);
    cfg.buffer_count = a.buffer_count.max(1);
    cfg.max_sectors = target_sectors.min(mtu_sectors).max(1);
    cfg
}

/// IDENTIFYs every announced target at once, on each of its paths, and groups the paths by
/// what they answer (see the [module docs](self)): one result per announcement, in order.
/// A target whose every path failed gets the first path's error.
pub fn identify(
    links: &mut [Box<dyn Transport>],
    found: &[Announcement],
    opts: &DiscoverOptions,
) -> Result<Vec<Result<TargetInfo, Error>>, Error> {
    // One session per path: each path's own answer, not the first one to come back.
    let mut sessions = Vec::new();
    let mut owner = Vec::new();
    for (i, a) in found.iter().enumerate() {
        for path in &a.paths {
            let mut cfg = session_config(links, &Announcement { paths: vec![path.clone()], ..a.clone() });
            if cfg.paths.is_empty() {
                continue;
            }
            cfg.dead_timeout = opts.identify_timeout;
            let mut s = Session::new(cfg)?;
            s.submit(Request::Identify);
            sessions.push(s);
            owner.push((i, path.clone()));
        }
    }
    let mut answers: Vec<Option<Result<aoe_proto::Identify, Error>>> =
        (0..sessions.len()).map(|_| None).collect();
    let mut driver = Driver::new(links, 64);
    driver.run(links, &mut sessions, &mut NoData, |i, event| {
        if let Event::Complete { result, .. } = event {
            answers[i] = Some(result.and_then(|reply| match reply {
                Reply::Identify(id) => Ok(id),
                _ => Err(Error::BadAnswer("IDENTIFY answered with something else")),
            }));
        }
        false
    })?;
    let mut results = Vec::with_capacity(found.len());
    for (i, a) in found.iter().enumerate() {
        let mut first_error = None;
        let mut agreeing = Vec::new();
        let mut conflicts = Vec::new();
        let mut reference: Option<aoe_proto::Identify> = None;
        for (k, (_, path)) in owner.iter().enumerate().filter(|(_, (o, _))| *o == i) {
            match answers[k].take() {
                Some(Ok(id)) => match &reference {
                    None => {
                        agreeing.push(path.clone());
                        reference = Some(id);
                    }
                    Some(r) if r.sectors == id.sectors && r.serial() == id.serial() => {
                        agreeing.push(path.clone())
                    }
                    Some(_) => conflicts.push(PathConflict {
                        path: path.clone(),
                        sectors: id.sectors,
                        serial: id.serial().to_owned(),
                    }),
                },
                Some(Err(e)) => {
                    tracing::warn!(shelf = a.shelf, slot = a.slot, iface = %path.iface, mac = %path.mac,
                        error = %e, "IDENTIFY failed on this path; path left out");
                    first_error.get_or_insert(e);
                }
                None => {
                    first_error.get_or_insert(Error::BadAnswer("IDENTIFY never completed"));
                }
            }
        }
        results.push(match reference {
            Some(id) => {
                let mut info = TargetInfo::new(Announcement { paths: agreeing, ..a.clone() }, &id);
                info.conflicts = conflicts;
                Ok(info)
            }
            None => Err(first_error.unwrap_or(Error::NoSuchDisk {
                shelf: a.shelf,
                slot: a.slot,
                ifaces: String::new(),
            })),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests;
