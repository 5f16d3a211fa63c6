//! A blocking AoE disk over one or more transports: `read_at`, `write_at`, `flush` at any
//! offset and length, plus the config, mask and reserve commands.
//!
//! Each call submits its work to a [`Session`] and drives it to completion on the
//! [`driver`](crate::driver): send a batch of frames, receive a batch with the session's
//! timeout, feed the answers in, repeat. Frames are pipelined up to the window; data goes
//! straight from the caller's buffer into the frames and from the answers into the caller's
//! buffer. Unaligned edges are read, patched and written back (read-modify-write of the edge
//! sectors).
//!
//! For many requests in flight from one event loop, [`Device::submit`] queues an [`Io`] that
//! owns its buffer, and [`Device::poll`] drives the network until one completes and hands
//! the buffer back in a [`Done`]. For many threads, [`SharedDevice`](crate::shared::SharedDevice)
//! runs a device on a thread of its own.
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_proto::{
    ConfigCommand, Directive, DirectiveCommand, Identify, MacAddr, MaskCommand, ReserveCommand, SECTOR_SIZE,
};
use aoe_transport::Transport;

use crate::discover::{self, DiscoverOptions, TargetInfo};
use crate::driver::{Driver, Wake};
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

/// Sector I/O for [`Device::submit`]: whole sectors, owning its buffer, which comes back in
/// the [`Done`].
#[derive(Debug)]
pub enum Io {
    /// Fill `buf` from the disk at byte `offset`.
    Read {
        /// A multiple of 512.
        offset: u64,
        /// A multiple of 512 bytes long.
        buf: Vec<u8>,
    },
    /// Write `buf` to the disk at byte `offset`.
    Write {
        /// A multiple of 512.
        offset: u64,
        /// A multiple of 512 bytes long.
        buf: Vec<u8>,
    },
    /// Make every write completed before it durable (FLUSH CACHE (EXT)); sent once every op
    /// submitted before it completed. A disk without a cache completes it at once.
    Flush,
}

/// A submitted [`Io`] that completed.
#[derive(Debug)]
pub struct Done {
    /// What [`Device::submit`] returned for it.
    pub id: OpId,
    /// How it went.
    pub result: Result<(), Error>,
    /// The buffer it was submitted with (filled, for a read that succeeded); empty for a
    /// flush.
    pub buf: Vec<u8>,
}

/// An AoE disk. See the [module docs](self).
pub struct Device {
    links: Vec<Box<dyn Transport>>,
    driver: Driver,
    session: Session,
    info: TargetInfo,
    edges: Box<[u8; 2 * SECTOR_SIZE]>,
    /// Buffers of submitted ops in progress.
    submitted: HashMap<OpId, Vec<u8>>,
    /// Submitted ops that completed, not handed out yet.
    done: VecDeque<Done>,
    has_wake: bool,
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
        let mut links = links;
        let filter = session.answer_filter();
        for link in &mut links {
            // Without it every other initiator's answers on the host reach this process too;
            // it only saves work, so a link that cannot take it goes on unfiltered.
            if let Err(e) = link.filter_answers(&filter) {
                tracing::debug!(link = link.name(), error = %e, "no answer filter");
            }
        }
        let driver = Driver::new(&links, opts.batch_frames);
        Ok(Device {
            links,
            driver,
            session,
            info,
            edges: Box::new([0; 2 * SECTOR_SIZE]),
            submitted: HashMap::new(),
            done: VecDeque::new(),
            has_wake: false,
        })
    }

    /// Queues `io` and returns at once; [`poll`](Self::poll) drives it. Fails without
    /// queueing for a range outside the disk or off sector boundaries.
    pub fn submit(&mut self, io: Io) -> Result<OpId, Error> {
        let (request, buf) = match io {
            Io::Read { offset, buf } => {
                (Request::Read { lba: self.lba(offset, &buf)?, sectors: sectors(&buf) }, buf)
            }
            Io::Write { offset, buf } => {
                (Request::Write { lba: self.lba(offset, &buf)?, sectors: sectors(&buf) }, buf)
            }
            // Nothing to send: an empty read completes at once, without a frame.
            Io::Flush if self.info.flush_command.is_none() => {
                (Request::Read { lba: 0, sectors: 0 }, Vec::new())
            }
            Io::Flush => (Request::Flush, Vec::new()),
        };
        let id = self.session.submit(request);
        self.submitted.insert(id, buf);
        // Ops that fail their checks complete at once.
        self.take_events();
        Ok(id)
    }

    /// Submitted ops not handed out by [`poll`](Self::poll) yet.
    pub fn pending(&self) -> usize {
        self.submitted.len() + self.done.len()
    }

    /// The next submitted op that completed. Drives the network until one does, `deadline`
    /// passes, or the [`Wake`] given to [`set_wake`](Self::set_wake) is woken; `None` in those
    /// two cases, and at once when nothing is pending and no wake-up is set.
    pub fn poll(&mut self, deadline: Option<Instant>) -> Result<Option<Done>, Error> {
        if let Some(done) = self.done.pop_front() {
            return Ok(Some(done));
        }
        if self.submitted.is_empty() && !self.has_wake {
            return Ok(None);
        }
        let mut buffers = Buffers { regions: Regions::default(), submitted: &mut self.submitted };
        let mut completed = Vec::new();
        let result = self.driver.run_until(
            &mut self.links,
            std::slice::from_mut(&mut self.session),
            &mut buffers,
            deadline,
            |_, event| match event {
                Event::Complete { op, result } => {
                    completed.push((op, result));
                    true
                }
                other => {
                    log_event(&other);
                    false
                }
            },
        );
        for (op, result) in completed {
            complete(&mut self.submitted, op, result, &mut self.done);
        }
        if let Err(e) = result {
            self.session.abandon_all();
            self.fail_submitted(&e);
            return Err(e);
        }
        Ok(self.done.pop_front())
    }

    /// Lets `wake` interrupt [`poll`](Self::poll) from another thread: the way a thread that
    /// owns the device learns of new work while it waits for the network.
    pub fn set_wake(&mut self, wake: Arc<Wake>) {
        self.driver.set_wake(wake);
        self.has_wake = true;
    }

    /// The first sector of sector I/O at byte `offset` into `buf`, if it is whole sectors
    /// within the disk.
    fn lba(&self, offset: u64, buf: &[u8]) -> Result<u64, Error> {
        if offset % SECTOR != 0 || buf.len() as u64 % SECTOR != 0 {
            return Err(Error::Invalid("submitted I/O must start and end on 512-byte sector boundaries"));
        }
        self.span(offset, buf.len())?;
        Ok(offset / SECTOR)
    }

    /// Completions the session has ready, outside a drive of the network.
    fn take_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Complete { op, result } => {
                    complete(&mut self.submitted, op, result, &mut self.done);
                }
                other => log_event(&other),
            }
        }
    }

    /// After a transport error the session forgets every op: the submitted ones complete
    /// with (a copy of) the error.
    fn fail_submitted(&mut self, e: &Error) {
        fail_all(&mut self.submitted, &mut self.done, &e.to_string());
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
        drive!(self).run(regions)?;
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
            drive!(self).run(regions)?;
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
        drive!(self).run(regions)
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
        self.request(Request::Flush).map(drop)
    }

    /// IDENTIFY DEVICE.
    pub fn identify(&mut self) -> Result<Identify, Error> {
        match self.request(Request::Identify)? {
            Reply::Identify(id) => Ok(id),
            _ => Err(Error::BadAnswer("IDENTIFY answered without data")),
        }
    }

    /// Any ATA command; the answer comes back whatever its status.
    pub fn ata(&mut self, request: AtaRequest) -> Result<AtaReply, Error> {
        match self.request(Request::Ata(request))? {
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
        match self.request(Request::Config(ConfigRequest { command, string: string.to_vec() }))? {
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
        match self.request(Request::Mask(MaskRequest { command, directives }))? {
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
        match self.request(Request::Reserve(ReserveRequest { command, macs }))? {
            Reply::Reserve(list) => Ok(list),
            _ => Err(Error::BadAnswer("reserve request answered with another body")),
        }
    }

    /// Sends any request and waits for its reply. A config test the disk's string does not
    /// match is never answered: it ends in [`Error::TargetDead`] after the dead timeout.
    pub fn request(&mut self, request: Request) -> Result<Reply, Error> {
        let op = self.session.submit(request);
        let mut reply = None;
        let mut regions = Regions::default();
        regions.add(op, Region::None);
        drive!(self).run_with(regions, |id, r| {
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

/// The memory of a drive of the network: the regions of a blocking call, and the buffers of
/// submitted ops.
struct Buffers<'a, 'b> {
    regions: Regions<'a>,
    submitted: &'b mut HashMap<OpId, Vec<u8>>,
}

/// Hands the buffer of submitted op `op` out with its result, if it is one.
fn complete(
    submitted: &mut HashMap<OpId, Vec<u8>>,
    op: OpId,
    result: Result<Reply, Error>,
    done: &mut VecDeque<Done>,
) {
    match submitted.remove(&op) {
        Some(buf) => done.push_back(Done { id: op, result: result.map(drop), buf }),
        None => tracing::debug!(?op, "completion of an op from an earlier call"),
    }
}

impl IoBuffers for Buffers<'_, '_> {
    fn load(&mut self, op: OpId, offset: usize, out: &mut [u8]) {
        match self.submitted.get(&op) {
            Some(buf) => match buf.get(offset..offset + out.len()) {
                Some(src) => out.copy_from_slice(src),
                None => debug_assert!(false, "write data out of bounds"),
            },
            None => self.regions.load(op, offset, out),
        }
    }

    fn store(&mut self, op: OpId, offset: usize, data: &[u8]) {
        match self.submitted.get_mut(&op) {
            Some(buf) => match buf.get_mut(offset..offset + data.len()) {
                Some(dst) => dst.copy_from_slice(data),
                None => debug_assert!(false, "read data out of bounds"),
            },
            None => self.regions.store(op, offset, data),
        }
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Complete { op, .. } => tracing::debug!(?op, "completion nobody waits for"),
        Event::PathDown { path } => tracing::warn!(path, "path down"),
        Event::PathUp { path } => tracing::info!(path, "path up"),
        Event::TargetDead => tracing::warn!("target dead"),
    }
}

/// Completes every submitted op with an I/O error saying `why`, its buffer handed back: the
/// session forgot them (a transport error, or a blocking call that could not finish).
fn fail_all(submitted: &mut HashMap<OpId, Vec<u8>>, done: &mut VecDeque<Done>, why: &str) {
    for (id, buf) in submitted.drain() {
        let result = Err(Error::io("the transport failed", std::io::Error::other(why.to_owned())));
        done.push_back(Done { id, result, buf });
    }
}

/// Sectors in a buffer of whole sectors.
fn sectors(buf: &[u8]) -> u64 {
    buf.len() as u64 / SECTOR
}

/// The [`Drive`] of a device, from its fields, so that the edge buffers stay borrowable.
macro_rules! drive {
    ($device:ident) => {
        Drive {
            driver: &mut $device.driver,
            links: &mut $device.links,
            session: &mut $device.session,
            submitted: &mut $device.submitted,
            done: &mut $device.done,
        }
    };
}
use drive;

/// What a blocking call drives: the device's parts other than the edge buffers its regions
/// borrow.
struct Drive<'d> {
    driver: &'d mut Driver,
    links: &'d mut [Box<dyn Transport>],
    session: &'d mut Session,
    submitted: &'d mut HashMap<OpId, Vec<u8>>,
    done: &'d mut VecDeque<Done>,
}

impl Drive<'_> {
    /// Drives the session until every op in `regions` completed; the first error wins.
    fn run(&mut self, regions: Regions<'_>) -> Result<(), Error> {
        let mut first_error = None;
        self.run_with(regions, |_, r| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        })?;
        first_error.map_or(Ok(()), Err)
    }

    /// Drives the session until every op in `regions` completed, handing each result to
    /// `done`. Submitted ops that complete meanwhile are kept for [`Device::poll`].
    fn run_with(
        &mut self,
        regions: Regions<'_>,
        mut done: impl FnMut(OpId, Result<Reply, Error>),
    ) -> Result<(), Error> {
        let mut left = regions.len();
        let ops: [Option<OpId>; 3] = std::array::from_fn(|i| regions.list[i].as_ref().map(|(id, _)| *id));
        let mut buffers = Buffers { regions, submitted: self.submitted };
        let mut others = Vec::new();
        let result =
            self.driver.run(self.links, std::slice::from_mut(self.session), &mut buffers, |_, event| {
                match event {
                    Event::Complete { op, result } if ops.contains(&Some(op)) => {
                        left -= 1;
                        done(op, result);
                    }
                    Event::Complete { op, result } => others.push((op, result)),
                    other => log_event(&other),
                }
                left == 0
            });
        for (op, result) in others {
            complete(self.submitted, op, result, self.done);
        }
        if result.is_err() || left > 0 {
            // The buffers of this call are about to go away: no op of it may outlive it.
            self.session.abandon_all();
            let e = match &result {
                Err(e) => e.to_string(),
                Ok(_) => "session went idle before every op completed".to_owned(),
            };
            fail_all(self.submitted, self.done, &e);
        }
        result?;
        if left > 0 {
            return Err(Error::BadAnswer("session went idle before every op completed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
