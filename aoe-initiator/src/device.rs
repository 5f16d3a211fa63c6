//! A blocking AoE disk over one or more transports: `read_at`, `write_at`, `flush` at any
//! offset and length, plus the config, mask and reserve commands.
//!
//! Each call submits its work to a [`Session`] and drives it to completion: send a batch of
//! frames, receive a batch with the session's timeout, feed the answers in, repeat. Frames are
//! pipelined up to the window; data goes straight from the caller's buffer into the frames and
//! from the answers into the caller's buffer. Unaligned edges are read, patched and written
//! back (read-modify-write of the edge sectors).
//!
//! ```no_run
//! use aoe_initiator::device::{Device, DeviceOptions};
//! use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
//!
//! let eth0 = AfPacket::open("eth0", AfPacketOptions::default())?;
//! let mut disk = Device::open(vec![Box::new(eth0)], 1, 0, &DeviceOptions::default())?;
//! disk.write_at(b"hello, world", 1000)?;
//! let mut back = [0u8; 12];
//! disk.read_at(&mut back, 1000)?;
//! assert_eq!(&back, b"hello, world");
//! disk.flush()?;
//! println!("{} bytes, model {}", disk.size_bytes(), disk.info().model);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use aoe_proto::{
    ConfigCommand, Directive, DirectiveCommand, Identify, MacAddr, MaskCommand, ReserveCommand, SECTOR_SIZE,
};
use aoe_transport::Transport;

use crate::discover::{self, DiscoverOptions, TargetInfo};
use crate::driver::Driver;
use crate::session::{
    self, AtaReply, AtaRequest, ConfigReply, ConfigRequest, Event, IoBuffers, MaskRequest, OpId, Reply,
    Request, ReserveRequest, Session, SessionConfig, SessionStats,
};
use crate::Error;

const SECTOR: u64 = SECTOR_SIZE as u64;

/// How a [`Device`] finds and talks to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOptions {
    /// How the target is looked for by [`Device::open`]. The default stops collecting
    /// answers 100 ms after the last new path.
    pub discover: DiscoverOptions,
    /// Silence after which the target is declared dead and calls fail.
    pub dead_timeout: Duration,
    /// RTO before the first round-trip sample.
    pub rto_initial: Duration,
    /// Lower bound of the RTO.
    pub rto_min: Duration,
    /// Upper bound of the RTO.
    pub rto_max: Duration,
    /// Keep fewer frames outstanding than the target's buffer count.
    pub max_window: Option<u16>,
    /// Frames per send and receive batch.
    pub batch_frames: usize,
}

impl Default for DeviceOptions {
    /// The session defaults of [`crate::session`], 64-frame batches, discovery that settles
    /// 100 ms after the last new path.
    fn default() -> Self {
        DeviceOptions {
            discover: DiscoverOptions {
                settle: Some(Duration::from_millis(100)),
                ..DiscoverOptions::default()
            },
            dead_timeout: session::DEFAULT_DEAD_TIMEOUT,
            rto_initial: session::DEFAULT_RTO_INITIAL,
            rto_min: session::DEFAULT_RTO_MIN,
            rto_max: session::DEFAULT_RTO_MAX,
            max_window: None,
            batch_frames: 64,
        }
    }
}

/// An AoE disk. See the [module docs](self).
pub struct Device {
    links: Vec<Box<dyn Transport>>,
    driver: Driver,
    session: Session,
    info: TargetInfo,
    edges: Box<[u8; 2 * SECTOR_SIZE]>,
}

impl Device {
    /// Finds shelf.slot on `links` (a query config to that address), then IDENTIFYs it.
    ///
    /// Fails with [`Error::NoSuchDisk`] when nothing answers within
    /// `opts.discover.timeout`.
    pub fn open(
        mut links: Vec<Box<dyn Transport>>,
        shelf: u16,
        slot: u8,
        opts: &DeviceOptions,
    ) -> Result<Device, Error> {
        let found = discover::probe(&mut links, Some((shelf, slot)), &opts.discover)?;
        if found.is_empty() {
            let ifaces = links.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ");
            return Err(Error::NoSuchDisk { shelf, slot, ifaces });
        }
        let mut identify_opts = opts.discover.clone();
        identify_opts.identify_timeout = opts.dead_timeout;
        let info = discover::identify(&mut links, &found, &identify_opts)?.remove(0)?;
        Device::with_target(links, info, opts)
    }

    /// A device for a target [`discover`](crate::discover::discover) found on the same
    /// `links` (in the same order). Sends no query and no IDENTIFY. Fails with
    /// [`Error::Conflict`] when another disk answers at the same address.
    pub fn with_target(
        links: Vec<Box<dyn Transport>>,
        info: TargetInfo,
        opts: &DeviceOptions,
    ) -> Result<Device, Error> {
        info.check_conflicts()?;
        let mut cfg = Self::session_config(&links, &info.announcement(), opts);
        cfg.lba48 = info.lba48;
        if let Some(command) = info.flush_command {
            cfg.flush_command = command;
        }
        Device::build(links, cfg, info, opts)
    }

    fn session_config(
        links: &[Box<dyn Transport>],
        a: &discover::Announcement,
        opts: &DeviceOptions,
    ) -> SessionConfig {
        let mut cfg = discover::session_config(links, a);
        if let Some(w) = opts.max_window {
            cfg.buffer_count = cfg.buffer_count.min(w.max(1));
        }
        cfg.dead_timeout = opts.dead_timeout;
        cfg.rto_initial = opts.rto_initial;
        cfg.rto_min = opts.rto_min;
        cfg.rto_max = opts.rto_max;
        cfg
    }

    fn build(
        links: Vec<Box<dyn Transport>>,
        cfg: SessionConfig,
        info: TargetInfo,
        opts: &DeviceOptions,
    ) -> Result<Device, Error> {
        if cfg.paths.is_empty() {
            let ifaces = links.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ");
            return Err(Error::NoSuchDisk { shelf: cfg.shelf, slot: cfg.slot, ifaces });
        }
        let session = Session::new(cfg)?;
        let driver = Driver::new(&links, opts.batch_frames);
        Ok(Device { links, driver, session, info, edges: Box::new([0; 2 * SECTOR_SIZE]) })
    }

    /// What is known about the target.
    pub fn info(&self) -> &TargetInfo {
        &self.info
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.info.size_bytes()
    }

    /// The session's counters (frames sent, retransmitted, answers, ...).
    pub fn stats(&self) -> SessionStats {
        self.session.stats()
    }

    /// The protocol engine, for its window and round-trip estimate.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Fills `buf` from the disk at byte `offset`. Any offset and length within the disk.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let span = self.span(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let (head, rest) = buf.split_at_mut(span.head_len);
        let (middle, tail) = rest.split_at_mut(span.middle_len());
        let (head_edge, tail_edge) = self.edges.split_at_mut(SECTOR_SIZE);
        let mut regions = Regions::default();
        if span.head_len > 0 {
            let op = self.session.submit(Request::Read { lba: span.lba, sectors: 1 });
            regions.add(op, Region::Read(head_edge));
        }
        if span.middle_sectors > 0 {
            let op =
                self.session.submit(Request::Read { lba: span.middle_lba(), sectors: span.middle_sectors });
            regions.add(op, Region::Read(middle));
        }
        if span.tail_len > 0 {
            let op = self.session.submit(Request::Read { lba: span.tail_lba(), sectors: 1 });
            regions.add(op, Region::Read(tail_edge));
        }
        let result = run(&mut self.driver, &mut self.links, &mut self.session, &mut regions);
        result?;
        head.copy_from_slice(&self.edges[span.skip..span.skip + span.head_len]);
        tail.copy_from_slice(&self.edges[SECTOR_SIZE..SECTOR_SIZE + span.tail_len]);
        Ok(())
    }

    /// Writes `buf` to the disk at byte `offset`. Any offset and length within the disk; the
    /// partial sectors at either end are read first and written back patched.
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), Error> {
        let span = self.span(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let (head, rest) = buf.split_at(span.head_len);
        let (middle, tail) = rest.split_at(span.middle_len());
        // The aligned middle goes out while the edges are read.
        {
            let (head_edge, tail_edge) = self.edges.split_at_mut(SECTOR_SIZE);
            let mut regions = Regions::default();
            if span.head_len > 0 {
                let op = self.session.submit(Request::Read { lba: span.lba, sectors: 1 });
                regions.add(op, Region::Read(head_edge));
            }
            if span.middle_sectors > 0 {
                let op = self
                    .session
                    .submit(Request::Write { lba: span.middle_lba(), sectors: span.middle_sectors });
                regions.add(op, Region::Write(middle));
            }
            if span.tail_len > 0 {
                let op = self.session.submit(Request::Read { lba: span.tail_lba(), sectors: 1 });
                regions.add(op, Region::Read(tail_edge));
            }
            run(&mut self.driver, &mut self.links, &mut self.session, &mut regions)?;
        }
        if span.head_len == 0 && span.tail_len == 0 {
            return Ok(());
        }
        self.edges[span.skip..span.skip + span.head_len].copy_from_slice(head);
        self.edges[SECTOR_SIZE..SECTOR_SIZE + span.tail_len].copy_from_slice(tail);
        let (head_edge, tail_edge) = self.edges.split_at(SECTOR_SIZE);
        let mut regions = Regions::default();
        if span.head_len > 0 {
            let op = self.session.submit(Request::Write { lba: span.lba, sectors: 1 });
            regions.add(op, Region::Write(head_edge));
        }
        if span.tail_len > 0 {
            let op = self.session.submit(Request::Write { lba: span.tail_lba(), sectors: 1 });
            regions.add(op, Region::Write(tail_edge));
        }
        run(&mut self.driver, &mut self.links, &mut self.session, &mut regions)
    }

    /// Asks the target to make every completed write durable.
    ///
    /// Sends FLUSH CACHE EXT, or FLUSH CACHE to a disk that offers only that (vblade); a
    /// disk whose IDENTIFY offers neither has no cache to flush, and nothing is sent.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.info.flush_command.is_none() {
            tracing::debug!(disk = %self.info.name(), "IDENTIFY offers no FLUSH CACHE: nothing to flush");
            return Ok(());
        }
        self.command(Request::Flush).map(drop)
    }

    /// IDENTIFY DEVICE.
    pub fn identify(&mut self) -> Result<Identify, Error> {
        match self.command(Request::Identify)? {
            Reply::Identify(id) => Ok(id),
            _ => Err(Error::BadAnswer("IDENTIFY answered without data")),
        }
    }

    /// Any ATA command; the answer comes back whatever its status.
    pub fn ata(&mut self, request: AtaRequest) -> Result<AtaReply, Error> {
        match self.command(Request::Ata(request))? {
            Reply::Ata(a) => Ok(a),
            _ => Err(Error::BadAnswer("ATA command answered with another body")),
        }
    }

    /// Reads the target's config string, buffer count, firmware and sector count.
    pub fn config_read(&mut self) -> Result<ConfigReply, Error> {
        self.config(ConfigCommand::Read, b"")
    }

    /// Sets the config string: only if it is empty (or already equal) unless `force`. A
    /// refused set is [`Error::Aoe`] with code 4.
    pub fn config_set(&mut self, string: &[u8], force: bool) -> Result<ConfigReply, Error> {
        let cmd = if force { ConfigCommand::ForceSet } else { ConfigCommand::Set };
        self.config(cmd, string)
    }

    fn config(&mut self, command: ConfigCommand, string: &[u8]) -> Result<ConfigReply, Error> {
        match self.command(Request::Config(ConfigRequest { command, string: string.to_vec() }))? {
            Reply::Config(c) => Ok(c),
            _ => Err(Error::BadAnswer("query config answered with another body")),
        }
    }

    /// The target's MAC mask list (empty: every initiator may talk to it).
    pub fn mask_read(&mut self) -> Result<Vec<MacAddr>, Error> {
        self.mask(MaskCommand::Read, Vec::new())
    }

    /// Adds `add` to and removes `delete` from the MAC mask list; returns the new list.
    pub fn mask_edit(&mut self, add: &[MacAddr], delete: &[MacAddr]) -> Result<Vec<MacAddr>, Error> {
        let directives = add
            .iter()
            .map(|&m| Directive::new(DirectiveCommand::Add, m))
            .chain(delete.iter().map(|&m| Directive::new(DirectiveCommand::Delete, m)))
            .collect();
        self.mask(MaskCommand::Edit, directives)
    }

    fn mask(&mut self, command: MaskCommand, directives: Vec<Directive>) -> Result<Vec<MacAddr>, Error> {
        match self.command(Request::Mask(MaskRequest { command, directives }))? {
            Reply::Mask(list) => Ok(list),
            _ => Err(Error::BadAnswer("MAC mask request answered with another body")),
        }
    }

    /// The target's reserve list (empty: not reserved).
    pub fn reserve_read(&mut self) -> Result<Vec<MacAddr>, Error> {
        self.reserve(ReserveCommand::Read, Vec::new())
    }

    /// Reserves the target for `macs` (empty releases it). Without `force`, a target reserved
    /// by others refuses with [`Error::Aoe`] code 6.
    pub fn reserve_set(&mut self, macs: &[MacAddr], force: bool) -> Result<Vec<MacAddr>, Error> {
        let cmd = if force { ReserveCommand::ForceSet } else { ReserveCommand::Set };
        self.reserve(cmd, macs.to_vec())
    }

    fn reserve(&mut self, command: ReserveCommand, macs: Vec<MacAddr>) -> Result<Vec<MacAddr>, Error> {
        match self.command(Request::Reserve(ReserveRequest { command, macs }))? {
            Reply::Reserve(list) => Ok(list),
            _ => Err(Error::BadAnswer("reserve request answered with another body")),
        }
    }

    fn command(&mut self, request: Request) -> Result<Reply, Error> {
        let op = self.session.submit(request);
        let mut reply = None;
        let mut regions = Regions::default();
        regions.add(op, Region::None);
        run_with(&mut self.driver, &mut self.links, &mut self.session, &mut regions, |id, r| {
            if id == op {
                reply = Some(r);
            }
        })?;
        reply.unwrap_or(Err(Error::BadAnswer("command never completed")))
    }

    fn span(&self, offset: u64, len: usize) -> Result<Span, Error> {
        let len = len as u64;
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.size_bytes()) {
            let lba = offset / SECTOR;
            let last = end.unwrap_or(u64::MAX).div_ceil(SECTOR);
            return Err(Error::OutOfRange { lba, sectors: last.saturating_sub(lba) });
        }
        Ok(Span::new(offset, len))
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let links: Vec<&str> = self.links.iter().map(|l| l.name()).collect();
        f.debug_struct("Device").field("target", &self.info.name()).field("links", &links).finish()
    }
}

/// How a byte range falls on sectors: a partial head sector, whole middle sectors, a partial
/// tail sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// First sector touched.
    lba: u64,
    /// Offset of the range in its first sector.
    skip: usize,
    /// Bytes in a partial head sector (0 when the range starts on a boundary).
    head_len: usize,
    /// Whole sectors after the head.
    middle_sectors: u64,
    /// Bytes in a partial tail sector.
    tail_len: usize,
}

impl Span {
    fn new(offset: u64, len: u64) -> Span {
        let lba = offset / SECTOR;
        let skip = (offset % SECTOR) as usize;
        let head_len = if skip == 0 { 0 } else { (SECTOR_SIZE - skip).min(len as usize) };
        let rest = len - head_len as u64;
        Span { lba, skip, head_len, middle_sectors: rest / SECTOR, tail_len: (rest % SECTOR) as usize }
    }

    fn middle_len(&self) -> usize {
        (self.middle_sectors * SECTOR) as usize
    }

    fn middle_lba(&self) -> u64 {
        self.lba + u64::from(self.head_len > 0)
    }

    fn tail_lba(&self) -> u64 {
        self.middle_lba() + self.middle_sectors
    }
}

/// Where the data of one op of a call lives.
#[derive(Debug)]
enum Region<'a> {
    None,
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// The ops of one call and their buffers (at most three: head edge, middle, tail edge).
#[derive(Debug, Default)]
struct Regions<'a> {
    list: [Option<(OpId, Region<'a>)>; 3],
}

impl<'a> Regions<'a> {
    fn add(&mut self, op: OpId, region: Region<'a>) {
        if let Some(free) = self.list.iter_mut().find(|e| e.is_none()) {
            *free = Some((op, region));
        }
    }

    fn get(&mut self, op: OpId) -> Option<&mut Region<'a>> {
        self.list.iter_mut().flatten().find(|(id, _)| *id == op).map(|(_, r)| r)
    }

    fn len(&self) -> usize {
        self.list.iter().flatten().count()
    }
}

impl IoBuffers for Regions<'_> {
    fn load(&mut self, op: OpId, offset: usize, out: &mut [u8]) {
        match self.get(op) {
            Some(Region::Write(data)) => match data.get(offset..offset + out.len()) {
                Some(src) => out.copy_from_slice(src),
                None => debug_assert!(false, "write data out of bounds"),
            },
            _ => debug_assert!(false, "load for an op without write data"),
        }
    }

    fn store(&mut self, op: OpId, offset: usize, data: &[u8]) {
        match self.get(op) {
            Some(Region::Read(buf)) => match buf.get_mut(offset..offset + data.len()) {
                Some(dst) => dst.copy_from_slice(data),
                None => debug_assert!(false, "read data out of bounds"),
            },
            _ => debug_assert!(false, "store for an op without a read buffer"),
        }
    }
}

/// Drives the session until every op in `regions` completed; the first error wins.
fn run(
    driver: &mut Driver,
    links: &mut [Box<dyn Transport>],
    session: &mut Session,
    regions: &mut Regions<'_>,
) -> Result<(), Error> {
    let mut first_error = None;
    run_with(driver, links, session, regions, |_, r| {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    })?;
    first_error.map_or(Ok(()), Err)
}

fn run_with(
    driver: &mut Driver,
    links: &mut [Box<dyn Transport>],
    session: &mut Session,
    regions: &mut Regions<'_>,
    mut done: impl FnMut(OpId, Result<Reply, Error>),
) -> Result<(), Error> {
    let mut left = regions.len();
    let ops: [Option<OpId>; 3] = std::array::from_fn(|i| regions.list[i].as_ref().map(|(id, _)| *id));
    let sessions = std::slice::from_mut(session);
    let result = driver.run(links, sessions, regions, |_, event| {
        match event {
            Event::Complete { op, result } if ops.contains(&Some(op)) => {
                left -= 1;
                done(op, result);
            }
            Event::Complete { op, .. } => tracing::debug!(?op, "completion of an op from an earlier call"),
            Event::PathDown { path } => tracing::warn!(path, "path down"),
            Event::PathUp { path } => tracing::info!(path, "path up"),
            Event::TargetDead => tracing::warn!("target dead"),
        }
        left == 0
    });
    if result.is_err() || left > 0 {
        // The buffers of this call are about to go away: no op of it may outlive it.
        session.abandon_all();
    }
    result?;
    if left > 0 {
        return Err(Error::BadAnswer("session went idle before every op completed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
