//! Command 0, issue ATA: which command does what, with which registers and data.

use aoe_proto::ata::{AtaCommand, AtaError, AtaFlags, AtaHeader, AtaStatus};
use aoe_proto::header::ErrorCode;
use aoe_proto::identify::IDENTIFY_LEN;
use aoe_proto::{AtaFrame, AtaRepr, EmitError, SECTOR_SIZE};

use super::io::{ata_fail, ATA_OK};
use super::{Export, Outcome, Port, Received, SectorIo};
use crate::backend::Backend;

/// The registers of an ATA answer and what follows its headers.
enum Reply<'r> {
    /// No data.
    Registers((AtaStatus, AtaError)),
    /// The IDENTIFY DEVICE data.
    Identify,
    /// A zeroed sector, when the buffer holds one (SMART).
    ZeroSector((AtaStatus, AtaError)),
    /// Sector I/O, after which the caller sets the registers.
    Io(SectorIo<'r>),
}

impl<B: Backend> Export<B> {
    /// Answers an ATA request: its registers echoed and changed as the command says.
    pub(super) fn ata<'r>(
        &mut self,
        port: &Port,
        request: &Received<'r>,
        ata: &AtaHeader,
        data: &'r [u8],
        writes: bool,
        out: &mut [u8],
    ) -> Result<Outcome<'r>, EmitError> {
        let command = ata.command();
        let src = request.ethernet().src;
        // IDENTIFY is answered whoever holds the reservation, as vblade does.
        if command != AtaCommand::IdentifyDevice && !self.reserve.is_empty() && !self.reserve.contains(&src) {
            return self.refuse(port, request, ErrorCode::TargetReserved, out);
        }
        self.follow_backend_size();
        let mut registers = AtaRepr::parse(ata);
        let reply = match command {
            AtaCommand::ReadSectors | AtaCommand::ReadSectorsExt => self.read(port, ata),
            AtaCommand::WriteSectors | AtaCommand::WriteSectorsExt => self.write(port, ata, data, writes),
            AtaCommand::IdentifyDevice => Reply::Identify,
            AtaCommand::FlushCache | AtaCommand::FlushCacheExt => Reply::Io(SectorIo::flush()),
            AtaCommand::CheckPowerMode => {
                registers.sector_count = 0xFF; // active or idle
                Reply::Registers(ATA_OK)
            }
            AtaCommand::SetFeatures => Reply::Registers(ATA_OK),
            // aoeping -S ignores a SMART answer shorter than the headers plus one sector,
            // whatever the subcommand: every SMART answer carries a (zeroed) sector.
            AtaCommand::Smart => Reply::ZeroSector(smart(ata, &mut registers)),
            _ => Reply::Registers(ata_fail(AtaError::ABRT)),
        };
        let (status, error) = match reply {
            Reply::Registers(registers) | Reply::ZeroSector(registers) => registers,
            // I/O that fails sets the registers again.
            Reply::Identify | Reply::Io(_) => ATA_OK,
        };
        registers.cmd_status = status.bits();
        registers.err_feature = error.bits();
        let header = self.answer_header(request);
        let mut frame = AtaFrame::emit(out, src, port.mac, &header, &registers)?;
        let data_len = match reply {
            Reply::Io(io) => return Ok(Outcome::NeedsIo(io)),
            Reply::Registers(_) => 0,
            Reply::Identify => {
                frame.data_mut(IDENTIFY_LEN)?.copy_from_slice(&self.identify);
                IDENTIFY_LEN
            }
            Reply::ZeroSector(_) => match frame.data_mut(SECTOR_SIZE) {
                Ok(sector) => {
                    sector.fill(0);
                    SECTOR_SIZE
                }
                Err(_) => 0,
            },
        };
        frame.finish(data_len).map(Outcome::Answered)
    }

    /// READ SECTORS (EXT): the sectors, if the request addresses the export.
    fn read(&self, port: &Port, ata: &AtaHeader) -> Reply<'static> {
        match self.io_range(port, ata) {
            Ok((offset, len)) => Reply::Io(SectorIo::read(offset, len)),
            Err(fail) => Reply::Registers(fail),
        }
    }

    /// WRITE SECTORS (EXT): the request's sectors, if the export takes writes (from this
    /// initiator: `writes`), the request addresses it and carries them.
    fn write<'r>(&self, port: &Port, ata: &AtaHeader, data: &'r [u8], writes: bool) -> Reply<'r> {
        match self.io_range(port, ata) {
            Err(fail) => Reply::Registers(fail),
            Ok(_) if self.config.read_only || !writes || !ata.flags().contains(AtaFlags::WRITE) => {
                Reply::Registers(ata_fail(AtaError::ABRT))
            }
            Ok((offset, len)) => match data.get(..len) {
                Some(data) => Reply::Io(SectorIo::write(offset, data)),
                None => Reply::Registers(ata_fail(AtaError::ABRT)),
            },
        }
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
}

/// SMART: enable/disable operations are accepted, RETURN STATUS says "no threshold
/// exceeded" (LBA mid/high 0x4F/0xC2), anything else is aborted.
fn smart(ata: &AtaHeader, answer: &mut AtaRepr) -> (AtaStatus, AtaError) {
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
