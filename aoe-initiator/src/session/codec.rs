//! Requests into frames, and answers out of them: what an op sends, whether an answer
//! matches it, and what the answer means.

use aoe_proto::identify::IDENTIFY_LEN;
use aoe_proto::{
    AtaCommand, AtaFlags, AtaFrame, AtaRepr, AtaStatus, Body, BodyRepr, ConfigRepr, DirectiveCommand, Flags,
    Frame, FrameRepr, HeaderRepr, Identify, MaskError, MaskRepr, ReserveRepr, SECTOR_SIZE,
};

use super::types::{AtaReply, ConfigReply, IoBuffers, Mismatch, Path, Reply, SessionConfig};
use super::{InFlight, OpKind, OpState};
use crate::Error;

/// Writes the request for `frame` of `op` into `buf`.
pub(super) fn emit(
    cfg: &SessionConfig,
    path: Path,
    tag: u32,
    op: &OpState,
    frame: &InFlight,
    buf: &mut [u8],
    data: &mut dyn IoBuffers,
) -> Result<usize, Error> {
    let header = HeaderRepr::request(cfg.shelf, cfg.slot, tag);
    let ata = |a: AtaRepr| BodyRepr::Ata { header: a, data: &[] };
    let body = match &op.kind {
        OpKind::Read { lba } => ata(AtaRepr::read(lba + frame.offset, frame.sectors, frame.extended)),
        OpKind::Write { lba } => ata(AtaRepr::write(lba + frame.offset, frame.sectors, frame.extended)),
        OpKind::Flush => ata(AtaRepr::command(cfg.flush_command, 0)),
        OpKind::Identify => ata(AtaRepr::command(AtaCommand::IdentifyDevice, 1)),
        OpKind::Ata(a) => BodyRepr::Ata {
            header: AtaRepr {
                flags: a.flags,
                err_feature: a.feature,
                sector_count: a.sector_count,
                cmd_status: a.command,
                lba: a.lba,
            },
            data: &a.data,
        },
        OpKind::Config(c) => BodyRepr::Config(ConfigRepr::request(c.command, &c.string)),
        OpKind::Mask(m) => {
            BodyRepr::Mask(MaskRepr { command: m.command, error: MaskError::None, directives: &m.directives })
        }
        OpKind::Reserve(r) => BodyRepr::Reserve(ReserveRepr { command: r.command, macs: &r.macs }),
    };
    if let (OpKind::Write { .. }, BodyRepr::Ata { header: ata, .. }) = (&op.kind, &body) {
        // Sectors straight from the caller's memory into the frame, after its headers.
        let bytes = usize::from(frame.sectors) * SECTOR_SIZE;
        let mut out = AtaFrame::emit(buf, path.target, path.local, &header, ata).map_err(too_small)?;
        data.load(op.id, frame.offset as usize * SECTOR_SIZE, out.data_mut(bytes).map_err(too_small)?);
        return out.finish(bytes).map_err(too_small);
    }
    let repr = FrameRepr { dst: path.target, src: path.local, header, body };
    repr.emit_padded(buf).map_err(too_small)
}

/// Whether the answer `f` (with `carried`, the bytes after its ATA header) fits the request
/// of `frame` of `op` in everything a target echoes; the tag, shelf.slot, response flag and
/// MACs were checked before. See the [module docs](self#matching-an-answer-to-its-request).
pub(super) fn matches_request(
    f: &Frame<'_>,
    carried: &[u8],
    frame: &InFlight,
    op: &OpState,
) -> Result<(), Mismatch> {
    if f.header.command() != op.kind.command() {
        return Err(Mismatch::Command);
    }
    let Body::Ata { header, .. } = f.body else { return Ok(()) };
    // An AoE error answer may echo the whole request, write data included (aoe-target
    // does): only its headers are checked.
    let aoe_error = f.header.flags().contains(Flags::ERROR);
    let failed = aoe_error || header.status().contains(AtaStatus::ERR);
    let sectors = usize::from(frame.sectors);
    let (lba, write) = match op.kind {
        OpKind::Read { lba } => (lba + frame.offset, false),
        OpKind::Write { lba } => (lba + frame.offset, true),
        OpKind::Identify => {
            let flags_ok = !header.flags().contains(AtaFlags::WRITE);
            return match (flags_ok, failed || carried.len() >= IDENTIFY_LEN) {
                (false, _) => Err(Mismatch::Flags),
                (_, false) => Err(Mismatch::Length),
                _ => Ok(()),
            };
        }
        _ => return Ok(()),
    };
    let flags = header.flags();
    if flags.contains(AtaFlags::WRITE) != write || flags.contains(AtaFlags::EXTENDED) != frame.extended {
        return Err(Mismatch::Flags);
    }
    // Echoed as sent, or advanced past the transfer as a disk's registers would be.
    let echoed = if frame.extended { header.lba48() } else { u64::from(header.lba28()) };
    if !(lba..=lba + sectors as u64).contains(&echoed) {
        return Err(Mismatch::Lba);
    }
    let length_ok = match (failed, write) {
        _ if aoe_error => true,
        // An ATA error answer carries no data, and some targets do not pad it (vblade: 36
        // bytes).
        (true, _) => carried.len() < SECTOR_SIZE,
        // Headers and Ethernet padding only, never sectors.
        (false, true) => carried.len() < SECTOR_SIZE,
        (false, false) => carried.len() == sectors * SECTOR_SIZE,
    };
    if !length_ok {
        return Err(Mismatch::Length);
    }
    Ok(())
}

fn too_small<E>(_: E) -> Error {
    Error::Invalid("request does not fit the transmit buffer")
}

/// The ATA command byte sent for `kind` in `frame` (the answer carries the status in its
/// place).
fn sent_command(kind: &OpKind, frame: &InFlight, cfg: &SessionConfig) -> u8 {
    let cmd = match (kind, frame.extended) {
        (OpKind::Read { .. }, true) => AtaCommand::ReadSectorsExt,
        (OpKind::Read { .. }, false) => AtaCommand::ReadSectors,
        (OpKind::Write { .. }, true) => AtaCommand::WriteSectorsExt,
        (OpKind::Write { .. }, false) => AtaCommand::WriteSectors,
        (OpKind::Flush, _) => cfg.flush_command,
        (OpKind::Ata(a), _) => AtaCommand::Other(a.command),
        _ => AtaCommand::IdentifyDevice,
    };
    cmd.into()
}

/// What the answer `f` to `frame` of `op` means: `Ok(None)` for a piece of a read or write
/// done, `Ok(Some(reply))` for a whole single-frame command, or an error.
///
/// `carried` is everything after the ATA header of an ATA answer. Its data is taken from
/// there, for as many sectors as the request asked: the sector count register of an answer
/// is the register after the command, which vblade (like a disk) leaves at 0 after a
/// complete transfer, so the data length the codec derives from it can be empty.
pub(super) fn answer(
    f: &Frame<'_>,
    carried: &[u8],
    frame: InFlight,
    op: &OpState,
    cfg: &SessionConfig,
    data: &mut dyn IoBuffers,
) -> Result<Option<Reply>, Error> {
    if f.header.flags().contains(Flags::ERROR) {
        return Err(Error::Aoe { code: f.header.error });
    }
    match (&op.kind, f.body) {
        (OpKind::Ata(a), Body::Ata { header, .. }) => {
            // Up to the sectors either the request or the answer names: not the padding of
            // a short answer.
            let sectors = a.sector_count.max(header.sector_count);
            let bytes = carried.get(..usize::from(sectors) * SECTOR_SIZE).unwrap_or(carried);
            Ok(Some(Reply::Ata(AtaReply {
                status: header.status(),
                error: header.error(),
                sector_count: header.sector_count,
                lba: header.lba48(),
                data: bytes.to_vec(),
            })))
        }
        (kind, Body::Ata { header, .. }) => {
            let bytes = carried;
            let status = header.status();
            // BSY: the registers are not valid yet, so the command did not complete.
            if status.intersects(AtaStatus::ERR | AtaStatus::DF | AtaStatus::BSY) {
                let (lba, sectors) = match kind {
                    OpKind::Read { lba } | OpKind::Write { lba } => {
                        (lba + frame.offset, u64::from(frame.sectors))
                    }
                    _ => (0, 0),
                };
                let command = sent_command(kind, &frame, cfg);
                return Err(Error::from_ata(command, status, header.error(), lba, sectors));
            }
            match kind {
                OpKind::Read { .. } => {
                    let expected = usize::from(frame.sectors) * SECTOR_SIZE;
                    let got = bytes.get(..expected).ok_or(Error::ShortRead { expected, got: bytes.len() })?;
                    if op.result.is_none() {
                        data.store(op.id, frame.offset as usize * SECTOR_SIZE, got);
                    }
                    Ok(None)
                }
                OpKind::Identify => Identify::parse(bytes)
                    .map(|id| Some(Reply::Identify(id)))
                    .map_err(|_| Error::BadAnswer("IDENTIFY data is short or fails its checksum")),
                _ => Ok(None),
            }
        }
        (OpKind::Config(_), Body::Config { header, string }) => Ok(Some(Reply::Config(ConfigReply {
            buffer_count: header.buffer_count.get(),
            firmware: header.firmware.get(),
            sector_count: header.sector_count,
            aoe_version: header.aoe_version(),
            command: header.command(),
            string: string.to_vec(),
        }))),
        (OpKind::Mask(_), Body::Mask { header, directives }) => match header.error() {
            MaskError::None => Ok(Some(Reply::Mask(
                directives.iter().filter(|d| d.command() == DirectiveCommand::Add).map(|d| d.mac).collect(),
            ))),
            e => Err(Error::Mask(e)),
        },
        (OpKind::Reserve(_), Body::Reserve { macs, .. }) => Ok(Some(Reply::Reserve(macs.to_vec()))),
        _ => Err(Error::BadAnswer("answer body does not match the request")),
    }
}
