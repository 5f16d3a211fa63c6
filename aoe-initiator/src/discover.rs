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
    /// 1 s of collecting with 10 queries (one every 100 ms: with a fifth of the frames lost
    /// each way, three queries all went unanswered one time in twenty), no early stop, 5 s
    /// for IDENTIFY.
    fn default() -> Self {
        DiscoverOptions {
            timeout: Duration::from_secs(1),
            queries: 10,
            settle: None,
            identify_timeout: Duration::from_secs(5),
        }
    }
}

/// One way to reach a target, as discovery found it: a [`Path`] with the link's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetPath {
    /// The index of the link (transport) in the slice given to discovery.
    pub link: usize,
    /// That link's name, e.g. `eth0`.
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
/// answers, merged by shelf.slot. No IDENTIFY. Sorted by shelf, then slot. Runs a [`Probe`]
/// over `links` on the [`Driver`].
pub fn probe(
    links: &mut [Box<dyn Transport>],
    target: Option<(u16, u8)>,
    opts: &DiscoverOptions,
) -> Result<Vec<Announcement>, Error> {
    let mut driver = Driver::new(links, 64);
    let names: Vec<(String, MacAddr)> = links.iter().map(|l| (l.name().to_owned(), l.mac())).collect();
    let mut probe = Probe::new(names, target, opts, Instant::now());
    loop {
        let now = Instant::now();
        if probe.query_due(now) {
            for i in 0..links.len() {
                driver.out(i).push_with(|buf| probe.emit_query(i, buf));
            }
            driver.flush(links)?;
        }
        if probe.is_done(now) {
            return Ok(probe.finish());
        }
        let wait = probe.poll_timeout().saturating_duration_since(now);
        driver.receive(links, wait, |i, at, frame| probe.handle_frame(i, at, frame))?;
    }
}

/// The query phase of discovery as a state machine: when to send a query config on every
/// link, what the answers say, when to stop. It does no I/O and never reads the clock: the
/// caller passes the time, sends what [`emit_query`](Self::emit_query) writes when
/// [`query_due`](Self::query_due) says so, feeds it every frame received, and waits until
/// [`poll_timeout`](Self::poll_timeout) in between (see [`probe`], which runs it).
///
/// The query goes out `queries` times, evenly over `timeout` (nobody retransmits a lost
/// broadcast); it stops at `timeout`, or `settle` after the last new target or path.
#[derive(Debug)]
pub struct Probe {
    /// Each link's name and own MAC.
    links: Vec<(String, MacAddr)>,
    target: Option<(u16, u8)>,
    queries: u32,
    interval: Duration,
    settle: Option<Duration>,
    start: Instant,
    deadline: Instant,
    sent: u32,
    last_news: Option<Instant>,
    found: BTreeMap<(u16, u8), Announcement>,
}

impl Probe {
    /// A probe over links named and addressed as `links`, for every target or only
    /// `target`, starting at `now`.
    pub fn new(
        links: Vec<(String, MacAddr)>,
        target: Option<(u16, u8)>,
        opts: &DiscoverOptions,
        now: Instant,
    ) -> Self {
        let queries = opts.queries.max(1);
        Probe {
            links,
            target,
            queries,
            interval: opts.timeout / queries,
            settle: opts.settle,
            start: now,
            deadline: now + opts.timeout,
            sent: 0,
            last_news: None,
            found: BTreeMap::new(),
        }
    }

    /// True when the next round of queries is due at `now` (then it is counted as sent:
    /// write it with [`emit_query`](Self::emit_query) on every link).
    pub fn query_due(&mut self, now: Instant) -> bool {
        let due =
            self.sent < self.queries && now >= self.start + self.interval * self.sent && !self.is_done(now);
        if due {
            self.sent += 1;
        }
        due
    }

    /// Writes the current round's query for link `link` into `buf`; its length (0 if it
    /// does not fit).
    pub fn emit_query(&self, link: usize, buf: &mut [u8]) -> usize {
        let (shelf, slot) = self.target.unwrap_or((SHELF_BROADCAST, SLOT_BROADCAST));
        let Some((_, mac)) = self.links.get(link) else { return 0 };
        let query = FrameRepr {
            dst: MacAddr::BROADCAST,
            src: *mac,
            header: HeaderRepr::request(shelf, slot, QUERY_TAG | self.sent.saturating_sub(1)),
            body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
        };
        query.emit_padded(buf).unwrap_or(0)
    }

    /// Takes a frame received on link `link` at `at`: a query-config answer adds its target,
    /// or a path to it; anything else is ignored.
    pub fn handle_frame(&mut self, link: usize, at: Instant, frame: &[u8]) {
        let Some((name, own_mac)) = self.links.get(link) else { return };
        let Some((key, mac, a)) = announcement(frame, *own_mac, self.target) else { return };
        let path = TargetPath { link, iface: name.clone(), mac };
        let entry = self.found.entry(key).or_insert_with(|| Announcement { paths: Vec::new(), ..a.clone() });
        if !entry.paths.contains(&path) {
            entry.buffer_count = entry.buffer_count.min(a.buffer_count);
            entry.sector_count = entry.sector_count.min(a.sector_count);
            entry.paths.push(path);
            entry.paths.sort();
            self.last_news = Some(at);
        }
    }

    /// True once collecting is over at `now`: the timeout passed, or nothing new answered
    /// for `settle`.
    pub fn is_done(&self, now: Instant) -> bool {
        let settled = matches!((self.settle, self.last_news), (Some(s), Some(t)) if now >= t + s);
        now >= self.deadline || settled
    }

    /// The next moment something is due: a round of queries, the settle time, the end.
    pub fn poll_timeout(&self) -> Instant {
        let mut wake = self.deadline;
        if self.sent < self.queries {
            wake = wake.min(self.start + self.interval * self.sent);
        }
        if let (Some(s), Some(t)) = (self.settle, self.last_news) {
            wake = wake.min(t + s);
        }
        wake
    }

    /// What answered, sorted by shelf, then slot.
    pub fn finish(self) -> Vec<Announcement> {
        self.found.into_values().collect()
    }
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
        .filter_map(|p| links.get(p.link).map(|l| Path { link: p.link, local: l.mac(), target: p.mac }))
        .collect();
    let mtu_sectors = a
        .paths
        .iter()
        .filter_map(|p| links.get(p.link))
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
