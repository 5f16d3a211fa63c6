//! Regression: `aoeping -S` got nothing useful from the target. It sends SMART only to a
//! disk whose IDENTIFY data says SMART is supported (word 82 bit 0), and it drops a SMART
//! answer shorter than the headers plus one sector, whatever the subcommand.

use aoe_proto::ata::{AtaCommand, AtaError, AtaStatus};
use aoe_proto::sizing::ATA_DATA_OFFSET;
use aoe_proto::{AtaRepr, Body, BodyRepr, Frame, FrameRepr, HeaderRepr, Identify, MacAddr, SECTOR_SIZE};
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig, Port, Received};

const TARGET: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
const HOST: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x20]);

fn ask(export: &mut Export<MemoryBackend>, mtu: usize, header: AtaRepr) -> Vec<u8> {
    let port = Port::new(TARGET, mtu);
    let mut request = [0u8; 64];
    let body = BodyRepr::Ata { header, data: &[] };
    let len = FrameRepr { dst: TARGET, src: HOST, header: HeaderRepr::request(1, 0, 9), body }
        .emit_padded(&mut request)
        .unwrap();
    let mut out = vec![0u8; 14 + mtu];
    let request = Received::parse(&request[..len]).unwrap();
    let outcome = export.handle(&port, &request, &mut out).unwrap();
    let n = outcome.complete(export.backend(), &mut out).unwrap().expect("an answer");
    out.truncate(n);
    out
}

/// aoeping's SMART request: feature = subcommand, LBA mid/high = 0x4f/0xc2, no sectors.
fn smart(feature: u8) -> AtaRepr {
    let mut a = AtaRepr::command(AtaCommand::Smart, 0);
    a.err_feature = feature;
    a.lba = 0xC2_4F00;
    a
}

#[test]
fn identify_says_smart_is_supported_and_enabled() {
    let mut export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20));
    let answer = ask(&mut export, 1500, AtaRepr::command(AtaCommand::IdentifyDevice, 1));
    let Body::Ata { data, .. } = Frame::parse(&answer).unwrap().body else { panic!() };
    let word = |i: usize| u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
    assert_eq!(word(82) & 1, 1, "SMART supported");
    assert_eq!(word(85) & 1, 1, "SMART enabled");
    assert_eq!(data.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0, "integrity checksum");
    assert_eq!(Identify::parse(data).unwrap().sectors, 2048);
}

#[test]
fn smart_answers_carry_one_sector() {
    let mut export = Export::new(ExportConfig::new(1, 0), MemoryBackend::new(1 << 20));
    for mtu in [1500, 9000] {
        let answer = ask(&mut export, mtu, smart(0xDA)); // RETURN STATUS
        assert_eq!(answer.len(), ATA_DATA_OFFSET + SECTOR_SIZE);
        let Body::Ata { header, .. } = Frame::parse(&answer).unwrap().body else { panic!() };
        assert_eq!((header.status(), header.error()), (AtaStatus::DRDY, AtaError::empty()));
        assert_eq!(header.lba[1..3], [0x4F, 0xC2], "threshold not exceeded");

        let answer = ask(&mut export, mtu, smart(0xD0)); // READ DATA: not implemented
        assert_eq!(answer.len(), ATA_DATA_OFFSET + SECTOR_SIZE);
        let Body::Ata { header, .. } = Frame::parse(&answer).unwrap().body else { panic!() };
        assert_eq!((header.status(), header.error()), (AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT));
    }
    // A link too small for a sector still gets the registers.
    let answer = ask(&mut export, 100, smart(0xDA));
    assert_eq!(answer.len(), 60);
}
