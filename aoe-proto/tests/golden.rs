//! Golden bytes: frames as real peers put them on the wire, and hand-built frames checked
//! byte for byte in both directions.

mod common;

use aoe_proto::ethernet::MIN_FRAME_LEN;
use aoe_proto::{
    AtaCommand, AtaError, AtaFlags, AtaFrame, AtaRepr, AtaStatus, Body, BodyRepr, Command, ConfigCommand,
    ConfigRepr, Directive, DirectiveCommand, EmitError, Flags, Frame, FrameRepr, HeaderRepr, MacAddr,
    MaskCommand, MaskError, MaskRepr, ReserveCommand, ReserveRepr,
};
use common::hex;

const INITIATOR: MacAddr = MacAddr([0x6e, 0x26, 0xe9, 0x25, 0x69, 0xfe]);
const VBLADE: MacAddr = MacAddr([0x9a, 0xa8, 0x13, 0x69, 0x85, 0x8b]);

/// aoeping (aoetools 36) `aoeping 1 0 eth0`: a broadcast query config, CCmd read, whose
/// string length says 1024 and whose string is 1024 filler bytes.
const AOEPING_HEAD: &str = "ff ff ff ff ff ff 6e 26 e9 25 69 fe 88 a2 10 00
                            00 01 00 01 80 00 00 00 00 00 00 00 00 00 04 00";

/// vblade 25 at MTU 9000 answering it: 32 bytes, unpadded.
const VBLADE_ANSWER: &str = "6e 26 e9 25 69 fe 9a a8 13 69 85 8b 88 a2 18 00
                             00 01 00 01 80 00 00 00 00 10 40 19 11 10 00 00";

fn aoeping_query() -> Vec<u8> {
    let mut frame = hex(AOEPING_HEAD);
    frame.extend_from_slice(&[0xed; 1024]);
    frame
}

#[test]
fn aoeping_query_config_is_a_read_with_an_empty_string() {
    let buf = aoeping_query();
    assert_eq!(buf.len(), 32 + 1024);
    let frame = Frame::parse(&buf).unwrap();
    assert_eq!(frame.ethernet.dst, MacAddr::BROADCAST);
    assert_eq!(frame.ethernet.src, INITIATOR);
    assert_eq!(frame.header.version(), 1);
    assert_eq!(frame.header.flags(), Flags::empty());
    assert!(!frame.header.is_response());
    assert_eq!(frame.header.error_code(), None);
    assert_eq!((frame.header.shelf(), frame.header.slot()), (1, 0));
    assert_eq!(frame.header.command(), Command::QueryConfig);
    assert_eq!(frame.header.tag(), 0x8000_0000);
    let Body::Config { header, string } = frame.body else { panic!("not a config body: {:?}", frame.body) };
    assert_eq!(header.command(), ConfigCommand::Read);
    assert_eq!(header.aoe_version(), 0);
    assert_eq!(header.string_len.get(), 0x0400);
    assert_eq!(string, b"", "a read request's string is ignored");

    let repr = frame.repr();
    assert_eq!(
        repr,
        FrameRepr {
            dst: MacAddr::BROADCAST,
            src: INITIATOR,
            header: HeaderRepr::request(1, 0, 0x8000_0000),
            body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
        }
    );
    // Re-emitted, it is the same request with the (ignored) string dropped.
    let mut out = [0u8; 64];
    assert_eq!(repr.emit(&mut out), Ok(32));
    assert_eq!(out[..30], buf[..30]);
    assert_eq!(out[30..32], [0, 0]);
}

#[test]
fn aoeping_query_config_with_truncated_string_still_parses_as_a_read() {
    let mut buf = aoeping_query();
    buf.truncate(32 + 10);
    let frame = Frame::parse(&buf).unwrap();
    let Body::Config { header, string } = frame.body else { panic!("not a config body: {:?}", frame.body) };
    assert_eq!(header.command(), ConfigCommand::Read);
    assert_eq!(header.string_len.get(), 1024);
    assert_eq!(string, b"");
}

#[test]
fn vblade_config_answer_every_field() {
    let buf = hex(VBLADE_ANSWER);
    assert_eq!(buf.len(), 32);
    let frame = Frame::parse(&buf).unwrap();
    assert_eq!(frame.ethernet.dst, INITIATOR);
    assert_eq!(frame.ethernet.src, VBLADE);
    assert_eq!(frame.ethernet.ethertype.get(), 0x88a2);
    assert_eq!(frame.header.version(), 1);
    assert_eq!(frame.header.flags(), Flags::RESPONSE);
    assert!(frame.header.is_response());
    assert_eq!(frame.header.error, 0);
    assert_eq!(frame.header.error_code(), None);
    assert_eq!(frame.header.shelf(), 1);
    assert_eq!(frame.header.slot(), 0);
    assert!(frame.header.addresses(1, 0));
    assert!(!frame.header.addresses(1, 1));
    assert_eq!(frame.header.command(), Command::QueryConfig);
    assert_eq!(frame.header.tag(), 0x8000_0000);
    let Body::Config { header, string } = frame.body else { panic!("not a config body: {:?}", frame.body) };
    assert_eq!(header.buffer_count.get(), 16);
    assert_eq!(header.firmware.get(), 0x4019);
    assert_eq!(header.sector_count, 17);
    assert_eq!(header.aoe_version(), 1);
    assert_eq!(header.command(), ConfigCommand::Read);
    assert_eq!(header.string_len.get(), 0);
    assert_eq!(string, b"");

    let repr = frame.repr();
    let expected = FrameRepr {
        dst: INITIATOR,
        src: VBLADE,
        header: HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 0x8000_0000 },
        body: BodyRepr::Config(ConfigRepr {
            buffer_count: 16,
            firmware: 0x4019,
            sector_count: 17,
            aoe_version: 1,
            command: ConfigCommand::Read,
            string: b"",
        }),
    };
    assert_eq!(repr, expected);
    assert_eq!(repr.buffer_len(), 32);

    let mut out = [0xaau8; 80];
    assert_eq!(repr.emit(&mut out), Ok(32));
    assert_eq!(out[..32], buf[..]);
    assert_eq!(out[32], 0xaa, "emit writes nothing past the frame");

    let mut out = [0xaau8; 80];
    assert_eq!(repr.emit_padded(&mut out), Ok(MIN_FRAME_LEN));
    assert_eq!(out[..32], buf[..]);
    assert_eq!(out[32..60], [0u8; 28]);
    assert_eq!(out[60], 0xaa);
    // The padded frame parses to the same values: a config answer's string is its length.
    assert_eq!(FrameRepr::parse(&out[..60]), Ok(expected));
}

/// Checks `bytes` parse to `repr` and `repr` emits exactly `bytes`.
fn assert_golden(bytes: &[u8], repr: &FrameRepr<'_>) {
    assert_eq!(FrameRepr::parse(bytes).as_ref(), Ok(repr));
    assert_eq!(repr.buffer_len(), bytes.len());
    let mut out = vec![0x55u8; bytes.len() + 8];
    assert_eq!(repr.emit(&mut out), Ok(bytes.len()));
    assert_eq!(out[..bytes.len()], *bytes);
    assert_eq!(out[bytes.len()..], [0x55; 8]);
}

#[test]
fn lba48_read_request_linux_style() {
    // aflags E, feature 0, 8 sectors, READ SECTORS EXT, LBA 0x1234_5678_9abc LSB first.
    let bytes = hex("9a a8 13 69 85 8b 6e 26 e9 25 69 fe 88 a2 10 00
                     00 07 03 00 00 00 00 2a
                     40 00 08 24 bc 9a 78 56 34 12 00 00");
    let repr = FrameRepr {
        dst: VBLADE,
        src: INITIATOR,
        header: HeaderRepr::request(7, 3, 42),
        body: BodyRepr::Ata { header: AtaRepr::read(0x1234_5678_9abc, 8, true), data: &[] },
    };
    assert_golden(&bytes, &repr);

    let frame = Frame::parse(&bytes).unwrap();
    let Body::Ata { header, data } = frame.body else { panic!("not ATA: {:?}", frame.body) };
    assert_eq!(header.flags(), AtaFlags::EXTENDED);
    assert_eq!(header.command(), AtaCommand::ReadSectorsExt);
    assert_eq!(header.sector_count, 8);
    assert_eq!(header.lba(), 0x1234_5678_9abc);
    assert_eq!(header.lba48(), 0x1234_5678_9abc);
    assert_eq!(data, b"");
}

#[test]
fn lba28_write_request_masks_device_bits() {
    // aflags W, 1 sector, WRITE SECTORS, LBA 0x0123_4567: byte 3 is 0xe0 | 0x01.
    let mut bytes = hex("9a a8 13 69 85 8b 6e 26 e9 25 69 fe 88 a2 10 00
                         00 07 03 00 de ad be ef
                         01 00 01 30 67 45 23 e1 00 00 00 00");
    let data: Vec<u8> = (0..512u32).map(|i| (i * 7 % 251) as u8).collect();
    bytes.extend_from_slice(&data);
    let repr = FrameRepr {
        dst: VBLADE,
        src: INITIATOR,
        header: HeaderRepr::request(7, 3, 0xdead_beef),
        body: BodyRepr::Ata { header: AtaRepr::write(0x0123_4567, 1, false), data: &data },
    };
    assert_golden(&bytes, &repr);

    let frame = Frame::parse(&bytes).unwrap();
    let Body::Ata { header, data: parsed } = frame.body else { panic!("not ATA: {:?}", frame.body) };
    assert_eq!(header.flags(), AtaFlags::WRITE);
    assert_eq!(header.command(), AtaCommand::WriteSectors);
    assert_eq!(header.lba(), 0x0123_4567, "the 0xe0 nibble is not part of the address");
    assert_eq!(header.lba28(), 0x0123_4567);
    assert_eq!(header.lba48(), 0xe123_4567);
    assert_eq!(parsed, &data[..]);
}

#[test]
fn mask_read_answer_with_two_directives() {
    let a = MacAddr([0x6e, 0x26, 0xe9, 0x25, 0x69, 0xfe]);
    let b = MacAddr([0x02, 0x00, 0x00, 0xab, 0xcd, 0xef]);
    let bytes = hex("6e 26 e9 25 69 fe 9a a8 13 69 85 8b 88 a2 18 00
                     00 01 00 02 00 00 00 05
                     00 00 00 02
                     00 01 6e 26 e9 25 69 fe
                     00 01 02 00 00 ab cd ef");
    let directives = [Directive::new(DirectiveCommand::Add, a), Directive::new(DirectiveCommand::Add, b)];
    let repr = FrameRepr {
        dst: INITIATOR,
        src: VBLADE,
        header: HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 5 },
        body: BodyRepr::Mask(MaskRepr {
            command: MaskCommand::Read,
            error: MaskError::None,
            directives: &directives,
        }),
    };
    assert_golden(&bytes, &repr);

    let frame = Frame::parse(&bytes).unwrap();
    let Body::Mask { header, directives } = frame.body else { panic!("not a mask body: {:?}", frame.body) };
    assert_eq!((header.command(), header.error(), header.count), (MaskCommand::Read, MaskError::None, 2));
    let listed: Vec<_> = directives.iter().map(|d| (d.command(), d.mac)).collect();
    assert_eq!(listed, [(DirectiveCommand::Add, a), (DirectiveCommand::Add, b)]);

    // As a response it goes out padded to 60 bytes, and parses back the same.
    let mut out = [0xffu8; 64];
    assert_eq!(repr.emit_padded(&mut out), Ok(60));
    assert_eq!(out[44..60], [0u8; 16]);
    assert_eq!(FrameRepr::parse(&out[..60]), Ok(repr));
}

#[test]
fn reserve_set_with_two_macs() {
    let a = MacAddr([0x6e, 0x26, 0xe9, 0x25, 0x69, 0xfe]);
    let b = MacAddr([0x02, 0x00, 0x00, 0x11, 0x22, 0x33]);
    let bytes = hex("9a a8 13 69 85 8b 6e 26 e9 25 69 fe 88 a2 10 00
                     00 01 00 03 00 00 01 00
                     01 02
                     6e 26 e9 25 69 fe
                     02 00 00 11 22 33");
    let macs = [a, b];
    let repr = FrameRepr {
        dst: VBLADE,
        src: INITIATOR,
        header: HeaderRepr::request(1, 0, 0x100),
        body: BodyRepr::Reserve(ReserveRepr { command: ReserveCommand::Set, macs: &macs }),
    };
    assert_golden(&bytes, &repr);

    let frame = Frame::parse(&bytes).unwrap();
    let Body::Reserve { header, macs } = frame.body else { panic!("not a reserve body: {:?}", frame.body) };
    assert_eq!((header.command(), header.count), (ReserveCommand::Set, 2));
    assert_eq!(macs, [a, b]);
}

#[test]
fn response_to_a_request_swaps_macs_and_keeps_the_tag() {
    let request = aoeping_query();
    let request = Frame::parse(&request).unwrap();
    let body = BodyRepr::Config(ConfigRepr {
        buffer_count: 16,
        firmware: 0x4019,
        sector_count: 17,
        aoe_version: 1,
        command: ConfigCommand::Read,
        string: b"",
    });
    let answer = FrameRepr::response(&request, VBLADE, 1, 0, body);
    let mut out = [0u8; 32];
    assert_eq!(answer.emit(&mut out), Ok(32));
    assert_eq!(out[..], hex(VBLADE_ANSWER)[..], "our answer is vblade's, byte for byte");
}

/// vblade answers a read with the sector count register at 0, as an ATA device leaves it:
/// the data after the header must still be handed out whole.
#[test]
fn read_answer_with_a_zero_sector_count_keeps_its_data() {
    let mut frame = vec![0u8; 36 + 1024];
    frame[12..14].copy_from_slice(&[0x88, 0xa2]);
    frame[14] = 0x18; // version 1, R
    frame[15..20].copy_from_slice(&[0, 0, 1, 0, 0]);
    frame[24..28].copy_from_slice(&[0x40, 0x00, 0x00, 0x40]); // E, no error, count 0, DRDY
    frame[36..].fill(0x5A);
    let parsed = aoe_proto::Frame::parse(&frame).unwrap();
    let aoe_proto::Body::Ata { header, data } = parsed.body else { panic!("not ATA") };
    assert_eq!(header.sector_count, 0);
    assert_eq!(data.len(), 1024);
    assert!(data.iter().all(|&b| b == 0x5A));
}

// ---- the in-place ATA frame view --------------------------------------------------------

/// The Linux-style LBA48 read request, built in place: headers only, padded to 60.
#[test]
fn ata_frame_emits_a_read_request_byte_for_byte() {
    let golden = hex("9a a8 13 69 85 8b 6e 26 e9 25 69 fe 88 a2 10 00
                      00 07 03 00 00 00 00 2a
                      40 00 08 24 bc 9a 78 56 34 12 00 00");
    let mut buf = [0x55u8; 64];
    let header = HeaderRepr::request(7, 3, 42);
    let frame =
        AtaFrame::emit(&mut buf, VBLADE, INITIATOR, &header, &AtaRepr::read(0x1234_5678_9abc, 8, true))
            .unwrap();
    assert_eq!(frame.finish(0), Ok(MIN_FRAME_LEN));
    assert_eq!(buf[..36], golden[..]);
    assert_eq!(buf[36..60], [0; 24], "padding is zeros");
    assert_eq!(buf[60..], [0x55; 4], "nothing written past the padded frame");
}

/// The LBA28 write request with its sector: headers, then the data copied into the sector
/// area, then finish, as an initiator emits a write.
#[test]
fn ata_frame_emits_a_write_request_with_its_data() {
    let mut golden = hex("9a a8 13 69 85 8b 6e 26 e9 25 69 fe 88 a2 10 00
                          00 07 03 00 de ad be ef
                          01 00 01 30 67 45 23 e1 00 00 00 00");
    let data: Vec<u8> = (0..512u32).map(|i| (i * 7 % 251) as u8).collect();
    golden.extend_from_slice(&data);
    let mut buf = vec![0x55u8; 1514];
    let header = HeaderRepr::request(7, 3, 0xdead_beef);
    let mut frame =
        AtaFrame::emit(&mut buf, VBLADE, INITIATOR, &header, &AtaRepr::write(0x0123_4567, 1, false)).unwrap();
    frame.data_mut(512).unwrap().copy_from_slice(&data);
    assert_eq!(frame.finish(512), Ok(548));
    assert_eq!(buf[..548], golden[..]);
}

/// A target's read answer as vblade sends it (sector count 0, status DRDY), built as a
/// target does: headers from the request's registers, the registers set once the I/O is
/// done, the sectors read into place.
#[test]
fn ata_frame_finishes_an_answer_in_place() {
    let mut golden = hex("6e 26 e9 25 69 fe 9a a8 13 69 85 8b 88 a2 18 00
                          00 01 00 00 00 00 00 2a
                          40 00 00 40 64 00 00 00 00 00 00 00");
    golden.extend_from_slice(&[0x5A; 1024]);
    let mut buf = vec![0u8; 9014];
    let header = HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 42 };
    let mut frame =
        AtaFrame::emit(&mut buf, INITIATOR, VBLADE, &header, &AtaRepr::read(100, 2, true)).unwrap();
    frame.data_mut(1024).unwrap().fill(0x5A);
    // Later, in the same buffer: the I/O is done.
    let mut frame = AtaFrame::new_checked(&mut buf).unwrap();
    frame.set_sector_count(0);
    frame.set_status(AtaStatus::DRDY);
    frame.set_error(AtaError::empty());
    assert_eq!(frame.ata().status(), AtaStatus::DRDY);
    assert_eq!(frame.header().tag(), 42);
    assert_eq!(frame.finish(1024), Ok(36 + 1024));
    assert_eq!(buf[..36 + 1024], golden[..]);
    let parsed = Frame::parse(&buf[..36 + 1024]).unwrap();
    let Body::Ata { header, data } = parsed.body else { panic!("not ATA") };
    assert_eq!((header.status(), header.error(), data.len()), (AtaStatus::DRDY, AtaError::empty(), 1024));
}

/// An error answer with no data: ERR and ABRT, padded to 60 over whatever the buffer held.
#[test]
fn ata_frame_error_answer_is_padded_over_stale_bytes() {
    let mut buf = [0xEEu8; 128];
    let header = HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 1 };
    let mut frame = AtaFrame::emit(&mut buf, INITIATOR, VBLADE, &header, &AtaRepr::read(0, 1, true)).unwrap();
    frame.set_status(AtaStatus::DRDY | AtaStatus::ERR);
    frame.set_error(AtaError::ABRT);
    assert_eq!(frame.finish(0), Ok(60));
    assert_eq!(buf[24..28], [0x40, 0x04, 0x01, 0x41]);
    assert_eq!(buf[36..60], [0; 24]);
    assert_eq!(buf[60], 0xEE);
}

#[test]
fn ata_frame_lengths_are_checked() {
    let header = HeaderRepr::request(1, 0, 0);
    let read = AtaRepr::read(0, 1, true);
    let mut short = [0u8; 35];
    assert_eq!(
        AtaFrame::emit(&mut short, VBLADE, INITIATOR, &header, &read).unwrap_err(),
        EmitError::BufferTooSmall { need: 36, got: 35 }
    );
    assert!(AtaFrame::new_checked(&mut short).is_err());
    // 36 bytes hold the headers, not the padding.
    let mut exact = [0u8; 36];
    let frame = AtaFrame::emit(&mut exact, VBLADE, INITIATOR, &header, &read).unwrap();
    assert_eq!(frame.finish(0), Err(EmitError::BufferTooSmall { need: 60, got: 36 }));
    let mut buf = [0u8; 548];
    let mut frame = AtaFrame::emit(&mut buf, VBLADE, INITIATOR, &header, &read).unwrap();
    assert_eq!(frame.payload().len(), 512);
    assert!(frame.data_mut(512).is_ok());
    assert_eq!(frame.data_mut(513).unwrap_err(), EmitError::BufferTooSmall { need: 549, got: 548 });
    assert_eq!(frame.finish(513), Err(EmitError::BufferTooSmall { need: 549, got: 548 }));
}
