//! The sans-IO target engine: one exported disk answering request frames.
//!
//! [`Export::handle`] takes one received frame and writes at most one answer into a caller's
//! buffer. It owns the protocol state (config string, MAC mask, reservations) and calls the
//! backend for sector I/O; it never touches a socket or a clock.
//! [`Export::handle_with_tail`] does the same but leaves the sectors of a read answer where
//! a mapped backend keeps them, for the transport to send from there.

use aoe_proto::ata::{AtaCommand, AtaError, AtaFlags, AtaHeader, AtaStatus};
use aoe_proto::config::{ConfigCommand, ConfigHeader, MAX_STRING_LEN};
use aoe_proto::frame::{parse_headers, Body, BodyRepr, Frame, FrameRepr};
use aoe_proto::header::{AoeHeader, ErrorCode, Flags, HeaderRepr};
use aoe_proto::identify::{Identify, IDENTIFY_LEN};
use aoe_proto::mask::{Directive, DirectiveCommand, MaskCommand, MaskError};
use aoe_proto::reserve::ReserveCommand;
use aoe_proto::sizing::{ATA_DATA_OFFSET, PAYLOAD_OFFSET};
use aoe_proto::{AtaRepr, ConfigRepr, MacAddr, MaskRepr, ReserveRepr, SECTOR_SIZE};

use aoe_transport::Tail;

use crate::backend::Backend;

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

/// One exported disk: configuration, protocol state and backend.
#[derive(Debug)]
pub struct Export<B> {
    config: ExportConfig,
    backend: B,
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
        Export { config, backend, sectors, identify, config_string: Vec::new(), mask, reserve: Vec::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &ExportConfig {
        &self.config
    }
    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
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
        self.dispatch(port, request, out, None)
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
        let answer = self.dispatch(port, request, out, Some(tail));
        if answer.is_none() {
            *tail = None;
        }
        answer
    }

    fn dispatch(
        &mut self,
        port: &Port,
        request: &[u8],
        out: &mut [u8],
        tail: Option<&mut Option<Tail>>,
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
            Body::Ata { header: ata, data } => self.ata(port, &req, ata, data, out, tail),
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
        tail: Option<&mut Option<Tail>>,
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
                Ok((offset, len)) => match tail.and_then(|t| Some((t, self.mapped(offset, len)?))) {
                    Some((tail, mapped)) => {
                        *tail = Some(mapped);
                        tail_len = len;
                        ATA_OK
                    }
                    None => {
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
                Ok((offset, len)) => match data.get(..len).map(|d| self.backend.write_at(d, offset)) {
                    Some(Ok(())) => ATA_OK,
                    Some(Err(_)) => ata_fail(AtaError::UNC),
                    None => ata_fail(AtaError::ABRT),
                },
            },
            AtaCommand::IdentifyDevice => {
                out.get_mut(ATA_DATA_OFFSET..ATA_DATA_OFFSET + IDENTIFY_LEN)?.copy_from_slice(&self.identify);
                data_len = IDENTIFY_LEN;
                ATA_OK
            }
            AtaCommand::FlushCache | AtaCommand::FlushCacheExt => match self.backend.flush() {
                Ok(()) => ATA_OK,
                Err(_) => ata_fail(AtaError::ABRT),
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
        aoe_proto::sizing::pad_to_minimum(out, header_len + data_len)
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
