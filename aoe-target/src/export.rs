//! The sans-IO target engine: one exported disk answering request frames.
//!
//! [`Export::handle`] takes one received frame and writes at most one answer into a caller's
//! buffer. It owns the protocol state (config string, MAC mask, reservations) and calls the
//! backend for sector I/O; it never touches a socket or a clock.
//! [`Export::handle_with_tail`] does the same but leaves the sectors of a read answer where
//! a mapped backend keeps them, for the transport to send from there.
//! [`Export::handle_deferred`] leaves sector I/O (reads, writes, flushes) to the caller as a
//! [`SectorIo`], which another thread can complete while more requests are handled.

use aoe_proto::ata::{AtaCommand, AtaError, AtaFlags, AtaHeader, AtaStatus};
use aoe_proto::config::{ConfigCommand, ConfigHeader, MAX_STRING_LEN};
use aoe_proto::frame::{parse_headers, Body, BodyRepr, Frame, FrameRepr};
use aoe_proto::header::{AoeHeader, ErrorCode, Flags, HeaderRepr};
use aoe_proto::identify::{Identify, IDENTIFY_LEN};
use aoe_proto::mask::{Directive, DirectiveCommand, MaskCommand, MaskError};
use aoe_proto::reserve::ReserveCommand;
use aoe_proto::sizing::{pad_to_minimum, ATA_DATA_OFFSET, PAYLOAD_OFFSET};
use aoe_proto::{AtaRepr, ConfigRepr, MacAddr, MaskRepr, ReserveRepr, SECTOR_SIZE};

use std::sync::Arc;

use aoe_transport::Tail;
use zerocopy::FromBytes;

use crate::backend::Backend;
use crate::ordering::IoOrder;

/// Firmware version reported in query-config answers.
pub const FIRMWARE_VERSION: u16 = 0x4100;
/// Most entries the MAC mask list and the reserve list hold. An answer lists them all, and
/// 128 entries still fit one frame at MTU 1500.
pub const MAX_LIST_ENTRIES: usize = 128;
/// Default buffer count (requests the target queues), as vblade's.
pub const DEFAULT_BUFFER_COUNT: u16 = 16;

/// True when `request` asks to write sectors (an ATA WRITE SECTORS of either size): a sender
/// holding read answers with tails ([`Export::handle_with_tail`]) sends them before handling
/// it, so that every answer shows the data as it was when its request was handled.
pub fn writes_sectors(request: &[u8]) -> bool {
    let Ok((_, header, payload)) = parse_headers(request) else { return false };
    match Body::parse(header, payload) {
        Ok(Body::Ata { header: ata, .. }) => {
            matches!(ata.command(), AtaCommand::WriteSectors | AtaCommand::WriteSectorsExt)
        }
        _ => false,
    }
}

/// What an export is: its address and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Shelf (major), below 0xFFFF.
    pub shelf: u16,
    /// Slot (minor), below 0xFF.
    pub slot: u8,
    /// Buffer count advertised to initiators.
    pub buffer_count: u16,
    /// Refuse writes.
    pub read_only: bool,
    /// Initial MAC mask: when non-empty, only these initiators are answered.
    pub mask: Vec<MacAddr>,
    /// Model string in IDENTIFY data.
    pub model: String,
    /// Serial string in IDENTIFY data.
    pub serial: String,
}

impl ExportConfig {
    /// An export at `shelf.slot` with default options.
    pub fn new(shelf: u16, slot: u8) -> Self {
        ExportConfig {
            shelf,
            slot,
            buffer_count: DEFAULT_BUFFER_COUNT,
            read_only: false,
            mask: Vec::new(),
            model: "Rust AoE target".to_string(),
            serial: format!("e{shelf}.{slot}"),
        }
    }
}

/// The local interface a frame came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// The interface's MAC: the source of answers.
    pub mac: MacAddr,
    /// Most sectors per ATA frame at this interface's MTU.
    pub max_sectors: u8,
}

impl Port {
    /// A port with the sector limit derived from `mtu`.
    pub fn new(mac: MacAddr, mtu: usize) -> Self {
        Port { mac, max_sectors: aoe_proto::max_sectors(mtu) }
    }
}

/// What the backend is asked to do for a request ([`SectorIo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorOp {
    /// Read sectors into the answer.
    Read,
    /// Write the request's sectors.
    Write,
    /// Make written sectors durable (FLUSH CACHE).
    Flush,
}

/// The sector I/O an answer waits for, which [`Export::handle_deferred`] leaves to its caller:
/// `len` bytes at byte `offset` of the backend (none for a flush). The caller does it with
/// [`complete`](Self::complete), on any thread, and sends the answer then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorIo {
    /// What to do.
    pub op: SectorOp,
    /// Where, in bytes from the backend's start.
    pub offset: u64,
    /// How many bytes.
    pub len: usize,
}

impl SectorIo {
    /// Does the I/O on `backend` and finishes the answer in `answer`, the buffer
    /// [`Export::handle_deferred`] wrote it into (a write's sectors wait there after the
    /// headers): sets the ATA status and error registers and returns the answer's length,
    /// with the sectors read after the headers. `None` when `answer` is too short.
    pub fn complete<B: Backend + ?Sized>(&self, backend: &B, answer: &mut [u8]) -> Option<usize> {
        let data = answer.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET.checked_add(self.len)?)?;
        let result = match self.op {
            SectorOp::Read => backend.read_at(data, self.offset),
            SectorOp::Write => backend.write_at(data, self.offset),
            SectorOp::Flush => backend.flush(),
        };
        let (status, error) = match (self.op, result) {
            (_, Ok(())) => ATA_OK,
            (SectorOp::Flush, Err(_)) => ata_fail(AtaError::ABRT),
            (_, Err(_)) => ata_fail(AtaError::UNC),
        };
        let ata = AtaHeader::mut_from_bytes(answer.get_mut(PAYLOAD_OFFSET..ATA_DATA_OFFSET)?).ok()?;
        ata.cmd_status = status.bits();
        ata.err_feature = error.bits();
        match (self.op, status.contains(AtaStatus::ERR)) {
            (SectorOp::Read, false) => Some(ATA_DATA_OFFSET + self.len),
            _ => pad_to_minimum(answer, ATA_DATA_OFFSET),
        }
    }
}

/// What [`Export::dispatch`] does with sector data.
enum Sectors<'a> {
    /// Reads into the answer and writes from the request, now.
    Now,
    /// As `Now`, except that a read from a mapped backend leaves its sectors in the mapping.
    Tail(&'a mut Option<Tail>),
    /// Leaves reads, writes and flushes to the caller.
    Defer(&'a mut Option<SectorIo>),
}

/// One exported disk: configuration, protocol state and backend.
#[derive(Debug)]
pub struct Export<B> {
    config: ExportConfig,
    /// Shared with whoever completes deferred I/O ([`Export::handle_deferred`]).
    backend: Arc<B>,
    /// The order deferred I/O runs in.
    io_order: Arc<IoOrder>,
    sectors: u64,
    identify: [u8; IDENTIFY_LEN],
    config_string: Vec<u8>,
    mask: Vec<MacAddr>,
    reserve: Vec<MacAddr>,
}

/// The ATA status and error registers of a failed command.
fn ata_fail(error: AtaError) -> (AtaStatus, AtaError) {
    (AtaStatus::DRDY | AtaStatus::ERR, error)
}

const ATA_OK: (AtaStatus, AtaError) = (AtaStatus::DRDY, AtaError::empty());

impl<B: Backend> Export<B> {
    /// An export of `backend` (whole sectors; a trailing partial sector is not exported).
    pub fn new(config: ExportConfig, backend: B) -> Self {
        let sectors = backend.len() / SECTOR_SIZE as u64;
        let mut identify = [0u8; IDENTIFY_LEN];
        Identify::new(&config.model, &config.serial, env!("CARGO_PKG_VERSION"), sectors).emit(&mut identify);
        let mask = config.mask.clone();
        let (backend, io_order) = (Arc::new(backend), Arc::default());
        Export {
            config,
            backend,
            io_order,
            sectors,
            identify,
            config_string: Vec::new(),
            mask,
            reserve: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ExportConfig {
        &self.config
    }
    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The backend, for a thread that completes this export's deferred I/O
    /// ([`handle_deferred`](Self::handle_deferred)).
    pub fn shared_backend(&self) -> &Arc<B> {
        &self.backend
    }
    /// The order this export's deferred I/O runs in: whoever takes a [`SectorIo`] from
    /// [`handle_deferred`](Self::handle_deferred) enters it there before letting go of the
    /// export, and runs it in its turn.
    pub fn io_order(&self) -> &Arc<IoOrder> {
        &self.io_order
    }
    /// Exported capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }
    /// The current config string.
    pub fn config_string(&self) -> &[u8] {
        &self.config_string
    }
    /// The current MAC mask list.
    pub fn mask(&self) -> &[MacAddr] {
        &self.mask
    }
    /// The current reserve list.
    pub fn reservations(&self) -> &[MacAddr] {
        &self.reserve
    }

    /// The unsolicited query-config answer a target broadcasts when it starts.
    pub fn announce(&self, port: &Port, out: &mut [u8]) -> Option<usize> {
        let repr = FrameRepr {
            dst: MacAddr::BROADCAST,
            src: port.mac,
            header: HeaderRepr {
                flags: Flags::RESPONSE,
                error: 0,
                shelf: self.config.shelf,
                slot: self.config.slot,
                tag: 0,
            },
            body: BodyRepr::Config(self.config_answer(port, ConfigCommand::Read)),
        };
        repr.emit_padded(out).ok()
    }

    /// Handles one received frame; writes the answer, if any, to `out` and returns its
    /// length. `out` should hold a full frame for the port's MTU (14 + MTU bytes).
    ///
    /// Frames that are not for this export (other EtherType, responses, other addresses,
    /// initiators outside a non-empty mask) get no answer.
    pub fn handle(&mut self, port: &Port, request: &[u8], out: &mut [u8]) -> Option<usize> {
        self.dispatch(port, request, out, Sectors::Now)
    }

    /// As [`handle`](Self::handle), except that when the backend is mapped
    /// ([`Backend::mapping`]) a read answer's sectors are not copied into `out`: `tail` is set
    /// to where they lie, and the answer is the returned length of `out` followed by `tail`.
    /// `tail` is `None` after every other answer.
    ///
    /// The tail is read when the frame is sent, so whoever sends it must do so before
    /// handling a request that writes sectors ([`writes_sectors`]).
    pub fn handle_with_tail(
        &mut self,
        port: &Port,
        request: &[u8],
        out: &mut [u8],
        tail: &mut Option<Tail>,
    ) -> Option<usize> {
        *tail = None;
        let answer = self.dispatch(port, request, out, Sectors::Tail(tail));
        if answer.is_none() {
            *tail = None;
        }
        answer
    }

    /// As [`handle`](Self::handle), except that a read, write or flush that passes every
    /// check is not done: `io` is set to it, `out` holds the answer's headers (and, for a
    /// write, the sectors to write after them), and the answer is finished by
    /// [`SectorIo::complete`] on this export's backend. `io` is `None` after every other
    /// answer, which is complete.
    ///
    /// I/O done this way may complete in any order, as it would on a disk with a queue,
    /// except as [`io_order`](Self::io_order) says.
    pub fn handle_deferred(
        &mut self,
        port: &Port,
        request: &[u8],
        out: &mut [u8],
        io: &mut Option<SectorIo>,
    ) -> Option<usize> {
        *io = None;
        let answer = self.dispatch(port, request, out, Sectors::Defer(io));
        if answer.is_none() {
            *io = None;
        }
        answer
    }

    fn dispatch(
        &mut self,
        port: &Port,
        request: &[u8],
        out: &mut [u8],
        sectors: Sectors<'_>,
    ) -> Option<usize> {
        let (ethernet, header, payload) = parse_headers(request).ok()?;
        if header.is_response() || !header.addresses(self.config.shelf, self.config.slot) {
            return None;
        }
        let src = ethernet.src;
        if !self.mask.is_empty() && !self.mask.contains(&src) {
            return None;
        }
        if header.version() != aoe_proto::header::VERSION {
            return self.error(port, src, header, payload, ErrorCode::UnsupportedVersion, out);
        }
        let body = match Body::parse(header, payload) {
            Ok(body) => body,
            Err(_) => return self.error(port, src, header, payload, ErrorCode::BadArgument, out),
        };
        let req = Request { frame: Frame { ethernet, header, body }, payload };
        match body {
            Body::Ata { header: ata, data } => self.ata(port, &req, ata, data, out, sectors),
            Body::Config { header: cfg, string } => self.query_config(port, &req, cfg, string, out),
            Body::Mask { header: m, directives } => self.mask_list(port, &req, m.command(), directives, out),
            Body::Reserve { header: r, macs } => self.reserve_release(port, &req, r.command(), macs, out),
            Body::Other { .. } => self.refuse(port, &req, ErrorCode::UnrecognizedCommand, out),
        }
    }

    /// An error answer: the request's header and payload echoed with E and the code.
    fn error(
        &self,
        port: &Port,
        src: MacAddr,
        header: &AoeHeader,
        payload: &[u8],
        code: ErrorCode,
        out: &mut [u8],
    ) -> Option<usize> {
        let payload = payload.get(..out.len().saturating_sub(PAYLOAD_OFFSET)).unwrap_or(payload);
        let repr = FrameRepr {
            dst: src,
            src: port.mac,
            header: HeaderRepr {
                flags: Flags::RESPONSE | Flags::ERROR,
                error: code.into(),
                shelf: self.config.shelf,
                slot: self.config.slot,
                tag: header.tag(),
            },
            body: BodyRepr::Raw { command: header.command, payload },
        };
        repr.emit_padded(out).ok()
    }

    fn refuse(&self, port: &Port, req: &Request<'_>, code: ErrorCode, out: &mut [u8]) -> Option<usize> {
        self.error(port, req.frame.ethernet.src, req.frame.header, req.payload, code, out)
    }

    fn answer<'b>(&self, port: &Port, req: &Request<'_>, body: BodyRepr<'b>) -> FrameRepr<'b> {
        FrameRepr::response(&req.frame, port.mac, self.config.shelf, self.config.slot, body)
    }

    fn respond(&self, port: &Port, req: &Request<'_>, body: BodyRepr<'_>, out: &mut [u8]) -> Option<usize> {
        self.answer(port, req, body).emit_padded(out).ok()
    }

    // ---- command 0: ATA -------------------------------------------------------------

    fn ata(
        &mut self,
        port: &Port,
        req: &Request<'_>,
        ata: &AtaHeader,
        data: &[u8],
        out: &mut [u8],
        mut sectors: Sectors<'_>,
    ) -> Option<usize> {
        let command = ata.command();
        let src = req.frame.ethernet.src;
        if command != AtaCommand::IdentifyDevice && !self.reserve.is_empty() && !self.reserve.contains(&src) {
            return self.refuse(port, req, ErrorCode::TargetReserved, out);
        }
        let mut answer = AtaRepr::parse(ata);
        // Sector data in `out` after the headers, and sector data left in a tail.
        let mut data_len = 0;
        let mut tail_len = 0;
        let (status, error) = match command {
            AtaCommand::ReadSectors | AtaCommand::ReadSectorsExt => match self.io_range(port, ata) {
                Err(fail) => fail,
                Ok((offset, len)) => match (self.mapped_for(&sectors, offset, len), &mut sectors) {
                    (_, Sectors::Defer(io)) => {
                        **io = Some(SectorIo { op: SectorOp::Read, offset, len });
                        ATA_OK
                    }
                    (Some(mapped), Sectors::Tail(tail)) => {
                        **tail = Some(mapped);
                        tail_len = len;
                        ATA_OK
                    }
                    _ => {
                        let dst = out.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET + len)?;
                        match self.backend.read_at(dst, offset) {
                            Ok(()) => {
                                data_len = len;
                                ATA_OK
                            }
                            Err(_) => ata_fail(AtaError::UNC),
                        }
                    }
                },
            },
            AtaCommand::WriteSectors | AtaCommand::WriteSectorsExt => match self.io_range(port, ata) {
                Err(fail) => fail,
                Ok(_) if self.config.read_only || !ata.flags().contains(AtaFlags::WRITE) => {
                    ata_fail(AtaError::ABRT)
                }
                Ok((offset, len)) => match (data.get(..len), &mut sectors) {
                    (None, _) => ata_fail(AtaError::ABRT),
                    (Some(data), Sectors::Defer(io)) => {
                        out.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET + len)?.copy_from_slice(data);
                        **io = Some(SectorIo { op: SectorOp::Write, offset, len });
                        ATA_OK
                    }
                    (Some(data), _) => match self.backend.write_at(data, offset) {
                        Ok(()) => ATA_OK,
                        Err(_) => ata_fail(AtaError::UNC),
                    },
                },
            },
            AtaCommand::IdentifyDevice => {
                out.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET + IDENTIFY_LEN)?.copy_from_slice(&self.identify);
                data_len = IDENTIFY_LEN;
                ATA_OK
            }
            AtaCommand::FlushCache | AtaCommand::FlushCacheExt => match &mut sectors {
                Sectors::Defer(io) => {
                    **io = Some(SectorIo { op: SectorOp::Flush, offset: 0, len: 0 });
                    ATA_OK
                }
                _ => match self.backend.flush() {
                    Ok(()) => ATA_OK,
                    Err(_) => ata_fail(AtaError::ABRT),
                },
            },
            AtaCommand::CheckPowerMode => {
                answer.sector_count = 0xFF; // active or idle
                ATA_OK
            }
            AtaCommand::SetFeatures => ATA_OK,
            AtaCommand::Smart => {
                // aoeping -S ignores a SMART answer shorter than the headers plus one sector,
                // whatever the subcommand: every SMART answer carries a (zeroed) sector.
                if let Some(sector) = out.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET + SECTOR_SIZE) {
                    sector.fill(0);
                    data_len = SECTOR_SIZE;
                }
                self.smart(ata, &mut answer)
            }
            _ => ata_fail(AtaError::ABRT),
        };
        answer.cmd_status = status.bits();
        answer.err_feature = error.bits();
        // Sector data (reads, IDENTIFY) is already in place after the headers.
        let header_len =
            self.answer(port, req, BodyRepr::Ata { header: answer, data: &[] }).emit(out).ok()?;
        if tail_len > 0 {
            // At least a sector follows: the frame is past the Ethernet minimum.
            return Some(header_len);
        }
        if let Sectors::Defer(Some(_)) = sectors {
            // A write's sectors wait after the headers: SectorIo::complete pads the answer.
            return Some(header_len);
        }
        aoe_proto::sizing::pad_to_minimum(out, header_len + data_len)
    }

    /// As [`mapped`](Self::mapped) when `sectors` asks for tails, else `None`.
    fn mapped_for(&self, sectors: &Sectors<'_>, offset: u64, len: usize) -> Option<Tail> {
        match sectors {
            Sectors::Tail(_) => self.mapped(offset, len),
            _ => None,
        }
    }

    /// The backend's bytes `[offset, offset + len)` as a tail of its mapping, if it has one.
    fn mapped(&self, offset: u64, len: usize) -> Option<Tail> {
        let (map, start) = self.backend.mapping()?;
        Tail::new(map, start.checked_add(offset)?, len)
    }

    /// The byte range a read or write addresses, or the ATA error it earns.
    fn io_range(&self, port: &Port, ata: &AtaHeader) -> Result<(u64, usize), (AtaStatus, AtaError)> {
        let count = ata.sector_count;
        if count == 0 || count > port.max_sectors {
            return Err(ata_fail(AtaError::ABRT));
        }
        let lba = ata.lba();
        match lba.checked_add(u64::from(count)) {
            Some(end) if end <= self.sectors => {
                Ok((lba * SECTOR_SIZE as u64, usize::from(count) * SECTOR_SIZE))
            }
            _ => Err(ata_fail(AtaError::IDNF | AtaError::ABRT)),
        }
    }

    /// SMART: enable/disable operations are accepted, RETURN STATUS says "no threshold
    /// exceeded" (LBA mid/high 0x4F/0xC2), anything else is aborted.
    fn smart(&self, ata: &AtaHeader, answer: &mut AtaRepr) -> (AtaStatus, AtaError) {
        const ENABLE: u8 = 0xD8;
        const DISABLE: u8 = 0xD9;
        const RETURN_STATUS: u8 = 0xDA;
        match ata.err_feature {
            ENABLE | DISABLE => ATA_OK,
            RETURN_STATUS => {
                let mut lba = answer.lba.to_le_bytes();
                lba[1] = 0x4F;
                lba[2] = 0xC2;
                answer.lba = u64::from_le_bytes(lba);
                ATA_OK
            }
            _ => ata_fail(AtaError::ABRT),
        }
    }

    // ---- command 1: query config ------------------------------------------------------

    fn config_answer(&self, port: &Port, command: ConfigCommand) -> ConfigRepr<'_> {
        ConfigRepr {
            buffer_count: self.config.buffer_count,
            firmware: FIRMWARE_VERSION,
            sector_count: port.max_sectors,
            aoe_version: aoe_proto::header::VERSION,
            command,
            string: &self.config_string,
        }
    }

    fn query_config(
        &mut self,
        port: &Port,
        req: &Request<'_>,
        cfg: &ConfigHeader,
        string: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let command = cfg.command();
        match command {
            ConfigCommand::Read => {}
            ConfigCommand::TestExact if string == self.config_string.as_slice() => {}
            ConfigCommand::TestPrefix if self.config_string.starts_with(string) => {}
            ConfigCommand::TestExact | ConfigCommand::TestPrefix => return None,
            ConfigCommand::Set
                if self.config_string.is_empty() || string == self.config_string.as_slice() =>
            {
                self.config_string = string.to_vec();
            }
            ConfigCommand::Set => {
                let mut repr = self.answer(port, req, BodyRepr::Config(self.config_answer(port, command)));
                repr.header.flags |= Flags::ERROR;
                repr.header.error = ErrorCode::ConfigStringPresent.into();
                return repr.emit_padded(out).ok();
            }
            ConfigCommand::ForceSet => {
                debug_assert!(string.len() <= MAX_STRING_LEN);
                self.config_string = string.to_vec();
            }
            ConfigCommand::Other(_) => return self.refuse(port, req, ErrorCode::BadArgument, out),
        }
        self.respond(port, req, BodyRepr::Config(self.config_answer(port, command)), out)
    }

    // ---- command 2: MAC mask list -----------------------------------------------------

    fn mask_list(
        &mut self,
        port: &Port,
        req: &Request<'_>,
        command: MaskCommand,
        directives: &[Directive],
        out: &mut [u8],
    ) -> Option<usize> {
        let mut error = MaskError::None;
        match command {
            MaskCommand::Read => {}
            MaskCommand::Edit => {
                for d in directives {
                    match d.command() {
                        DirectiveCommand::None => {}
                        DirectiveCommand::Add if self.mask.contains(&d.mac) => {}
                        DirectiveCommand::Add if self.mask.len() >= MAX_LIST_ENTRIES => {
                            error = MaskError::Full;
                            break;
                        }
                        DirectiveCommand::Add => self.mask.push(d.mac),
                        DirectiveCommand::Delete => self.mask.retain(|m| *m != d.mac),
                        DirectiveCommand::Other(_) => {
                            error = MaskError::BadDirective;
                            break;
                        }
                    }
                }
            }
            MaskCommand::Other(_) => error = MaskError::Unspecified,
        }
        let mut list = [Directive::new(DirectiveCommand::Add, MacAddr::ZERO); MAX_LIST_ENTRIES];
        for (slot, mac) in list.iter_mut().zip(&self.mask) {
            slot.mac = *mac;
        }
        let directives = list.get(..self.mask.len()).unwrap_or_default();
        self.respond(port, req, BodyRepr::Mask(MaskRepr { command, error, directives }), out)
    }

    // ---- command 3: reserve/release ---------------------------------------------------

    fn reserve_release(
        &mut self,
        port: &Port,
        req: &Request<'_>,
        command: ReserveCommand,
        macs: &[MacAddr],
        out: &mut [u8],
    ) -> Option<usize> {
        let src = req.frame.ethernet.src;
        match command {
            ReserveCommand::Read => {}
            ReserveCommand::Set | ReserveCommand::ForceSet if macs.len() > MAX_LIST_ENTRIES => {
                return self.refuse(port, req, ErrorCode::BadArgument, out);
            }
            ReserveCommand::Set if !self.reserve.is_empty() && !self.reserve.contains(&src) => {
                return self.refuse(port, req, ErrorCode::TargetReserved, out);
            }
            ReserveCommand::Set | ReserveCommand::ForceSet => {
                self.reserve.clear();
                self.reserve.extend_from_slice(macs);
            }
            ReserveCommand::Other(_) => return self.refuse(port, req, ErrorCode::BadArgument, out),
        }
        self.respond(port, req, BodyRepr::Reserve(ReserveRepr { command, macs: &self.reserve }), out)
    }
}

/// A parsed request with the raw bytes after its common header, echoed in error answers.
struct Request<'a> {
    frame: Frame<'a>,
    payload: &'a [u8],
}
