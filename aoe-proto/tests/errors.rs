//! One test per way a frame is rejected, with the exact error it is rejected with.

mod common;

use aoe_proto::identify::Identify;
use aoe_proto::{
    parse_headers, AtaRepr, Body, BodyRepr, ConfigCommand, ConfigRepr, Directive, DirectiveCommand,
    EmitError, Frame, FrameRepr, HeaderRepr, MacAddr, MaskCommand, MaskError, MaskRepr, ParseError,
    ReserveCommand, ReserveRepr,
};
use common::{aoe_header, frame};

const REQUEST: u8 = 0x10;
const RESPONSE: u8 = 0x18;
const ERROR_RESPONSE: u8 = 0x1c;

fn truncated(what: &'static str, need: usize, got: usize) -> Result<Frame<'static>, ParseError> {
    Err(ParseError::Truncated { what, need, got })
}

#[test]
fn short_ethernet_header() {
    let buf = aoe_header(REQUEST, 0, 1, 0, 0, 0);
    assert_eq!(Frame::parse(&buf[..13]), truncated("Ethernet header", 14, 13));
    assert_eq!(Frame::parse(&[]), truncated("Ethernet header", 14, 0));
    assert!(matches!(
        parse_headers(&buf[..13]),
        Err(ParseError::Truncated { what: "Ethernet header", need: 14, got: 13 })
    ));
}

#[test]
fn short_aoe_header() {
    let buf = aoe_header(REQUEST, 0, 1, 0, 0, 0);
    assert_eq!(Frame::parse(&buf[..23]), truncated("AoE header", 10, 9));
    assert_eq!(Frame::parse(&buf[..14]), truncated("AoE header", 10, 0));
    assert!(matches!(
        parse_headers(&buf[..23]),
        Err(ParseError::Truncated { what: "AoE header", need: 10, got: 9 })
    ));
}

#[test]
fn short_ata_header() {
    let buf = frame(REQUEST, 0, 0, &[0; 11]);
    assert_eq!(Frame::parse(&buf), truncated("ATA header", 12, 11));
    // A plain response is held to the same rule.
    let buf = frame(RESPONSE, 0, 0, &[0; 3]);
    assert_eq!(Frame::parse(&buf), truncated("ATA header", 12, 3));
}

#[test]
fn short_config_header() {
    let buf = frame(REQUEST, 0, 1, &[0; 7]);
    assert_eq!(Frame::parse(&buf), truncated("query-config header", 8, 7));
}

#[test]
fn short_mask_header() {
    let buf = frame(REQUEST, 0, 2, &[0; 3]);
    assert_eq!(Frame::parse(&buf), truncated("MAC mask header", 4, 3));
}

#[test]
fn short_reserve_header() {
    let buf = frame(REQUEST, 0, 3, &[1]);
    assert_eq!(Frame::parse(&buf), truncated("reserve header", 2, 1));
}

#[test]
fn short_identify_data() {
    assert_eq!(
        Identify::parse(&[0u8; 511]),
        Err(ParseError::Truncated { what: "IDENTIFY data", need: 512, got: 511 })
    );
}

#[test]
fn wrong_ethertype() {
    let mut buf = frame(REQUEST, 0, 0, &[0; 12]);
    buf[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(Frame::parse(&buf), Err(ParseError::EtherType { got: 0x0800 }));
    assert!(matches!(parse_headers(&buf), Err(ParseError::EtherType { got: 0x0800 })));
    // The EtherType is checked before the AoE header's length.
    assert_eq!(Frame::parse(&buf[..14]), Err(ParseError::EtherType { got: 0x0800 }));
}

#[test]
fn version_other_than_one() {
    for ver_flags in [0x00, 0x20, 0xf0, 0x28] {
        let buf = frame(ver_flags, 0, 0, &[0; 12]);
        assert_eq!(Frame::parse(&buf), Err(ParseError::Version { got: ver_flags >> 4 }), "{ver_flags:#x}");
        // The headers still parse, so a target can answer with error 5.
        let (ethernet, header, payload) = parse_headers(&buf).unwrap();
        assert_eq!(ethernet.ethertype.get(), 0x88a2);
        assert_eq!(header.version(), ver_flags >> 4);
        assert_eq!((header.shelf(), header.slot(), header.tag()), (1, 0, 0x0102_0304));
        assert_eq!(payload.len(), 12);
    }
}

fn config_body(ccmd: u8, len: u16, string: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 16, 0x40, 0x19, 17, 0x10 | ccmd];
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(string);
    body
}

#[test]
fn config_string_longer_than_1024() {
    let long = vec![b'x'; 1025];
    // A set request.
    let buf = frame(REQUEST, 0, 1, &config_body(3, 1025, &long));
    assert_eq!(Frame::parse(&buf), Err(ParseError::ConfigStringTooLong { len: 1025 }));
    // A read answer: only read *requests* are lenient.
    let buf = frame(RESPONSE, 0, 1, &config_body(0, 1025, &long));
    assert_eq!(Frame::parse(&buf), Err(ParseError::ConfigStringTooLong { len: 1025 }));
    // 1024 is fine.
    let buf = frame(REQUEST, 0, 1, &config_body(4, 1024, &long[..1024]));
    assert!(matches!(Frame::parse(&buf).unwrap().body, Body::Config { string, .. } if string.len() == 1024));
}

#[test]
fn config_string_beyond_the_frame() {
    let buf = frame(REQUEST, 0, 1, &config_body(1, 10, b"abcd"));
    assert_eq!(Frame::parse(&buf), Err(ParseError::ConfigStringTruncated { len: 10, available: 4 }));
    let buf = frame(RESPONSE, 0, 1, &config_body(0, 1, b""));
    assert_eq!(Frame::parse(&buf), Err(ParseError::ConfigStringTruncated { len: 1, available: 0 }));
}

#[test]
fn directive_count_beyond_the_frame() {
    // 3 directives announced, 2 present.
    let body = [&[0u8, 1, 0, 3][..], &[0; 16]].concat();
    let buf = frame(REQUEST, 0, 2, &body);
    assert_eq!(Frame::parse(&buf), Err(ParseError::DirectivesTruncated { count: 3, need: 24, got: 16 }));
    // One byte short of the last directive.
    let body = [&[0u8, 1, 0, 1][..], &[0; 7]].concat();
    let buf = frame(REQUEST, 0, 2, &body);
    assert_eq!(Frame::parse(&buf), Err(ParseError::DirectivesTruncated { count: 1, need: 8, got: 7 }));
}

#[test]
fn mac_count_beyond_the_frame() {
    let body = [&[1u8, 2][..], &[0; 7]].concat();
    let buf = frame(REQUEST, 0, 3, &body);
    assert_eq!(Frame::parse(&buf), Err(ParseError::MacsTruncated { count: 2, need: 12, got: 7 }));
}

#[test]
fn write_data_shorter_than_its_sectors() {
    // W, 2 sectors, WRITE SECTORS EXT; 1000 of 1024 data bytes.
    let body = [&[0x41u8, 0, 2, 0x34, 0, 0, 0, 0, 0, 0, 0, 0][..], &[0xab; 1000]].concat();
    let buf = frame(REQUEST, 0, 0, &body);
    assert_eq!(Frame::parse(&buf), Err(ParseError::WriteDataShort { sectors: 2, need: 1024, got: 1000 }));
    // A response with W set is not a write request: what is there is the data.
    let buf = frame(RESPONSE, 0, 0, &body);
    assert!(matches!(Frame::parse(&buf).unwrap().body, Body::Ata { data, .. } if data.len() == 1000));
}

#[test]
fn error_answers_with_a_malformed_body_parse_as_other() {
    let cases: [(u8, Vec<u8>); 4] = [
        (0, vec![0x40, 0, 1]),
        (1, config_body(3, 600, b"short")),
        (2, vec![0, 0, 0, 9, 0, 1]),
        (3, vec![0]),
    ];
    for (command, body) in cases {
        let buf = frame(ERROR_RESPONSE, 3, command, &body);
        let frame = Frame::parse(&buf).unwrap();
        assert_eq!(frame.body, Body::Other { command, payload: &body }, "command {command}");
        assert_eq!(frame.header.error_code(), Some(aoe_proto::ErrorCode::DeviceUnavailable));
        // Without E the same body is an error.
        assert!(Frame::parse(&self::frame(RESPONSE, 3, command, &body)).is_err(), "command {command}");
        // E without R (a malformed request) is an error too.
        assert!(Frame::parse(&self::frame(0x14, 3, command, &body)).is_err(), "command {command}");
    }
}

fn repr_with(body: BodyRepr<'_>) -> FrameRepr<'_> {
    FrameRepr {
        dst: MacAddr([2, 0, 0, 0, 0, 1]),
        src: MacAddr([2, 0, 0, 0, 0, 2]),
        header: HeaderRepr::request(1, 0, 7),
        body,
    }
}

#[test]
fn emit_into_a_buffer_too_small() {
    let read = repr_with(BodyRepr::Ata { header: AtaRepr::read(0, 1, true), data: &[] });
    let mut buf = [0u8; 64];
    assert_eq!(read.emit(&mut buf[..35]), Err(EmitError::BufferTooSmall { need: 36, got: 35 }));
    assert_eq!(read.emit(&mut buf[..36]), Ok(36));
    assert_eq!(read.emit_padded(&mut buf[..59]), Err(EmitError::BufferTooSmall { need: 60, got: 59 }));
    assert_eq!(read.emit_padded(&mut buf[..60]), Ok(60));
    let data = [0u8; 512];
    let write = repr_with(BodyRepr::Ata { header: AtaRepr::write(0, 1, true), data: &data });
    let mut big = [0u8; 600];
    assert_eq!(write.emit_padded(&mut big[..547]), Err(EmitError::BufferTooSmall { need: 548, got: 547 }));
    assert_eq!(write.emit(&mut []), Err(EmitError::BufferTooSmall { need: 548, got: 0 }));
}

#[test]
fn emit_config_string_longer_than_1024() {
    let long = [b'x'; 1025];
    let set = repr_with(BodyRepr::Config(ConfigRepr::request(ConfigCommand::Set, &long)));
    let mut buf = vec![0u8; 2048];
    assert_eq!(set.emit(&mut buf), Err(EmitError::ConfigStringTooLong { len: 1025 }));
    assert_eq!(set.emit_padded(&mut buf), Err(EmitError::ConfigStringTooLong { len: 1025 }));
    let ok = repr_with(BodyRepr::Config(ConfigRepr::request(ConfigCommand::Set, &long[..1024])));
    assert_eq!(ok.emit(&mut buf), Ok(24 + 8 + 1024));
}

#[test]
fn emit_more_than_255_directives_or_macs() {
    let directives = vec![Directive::new(DirectiveCommand::Add, MacAddr([2, 0, 0, 0, 0, 3])); 256];
    let mask = repr_with(BodyRepr::Mask(MaskRepr {
        command: MaskCommand::Edit,
        error: MaskError::None,
        directives: &directives,
    }));
    let mut buf = vec![0u8; 4096];
    assert_eq!(mask.emit(&mut buf), Err(EmitError::TooManyEntries { count: 256 }));
    let mask = repr_with(BodyRepr::Mask(MaskRepr { directives: &directives[..255], ..mask_of(&mask) }));
    assert_eq!(mask.emit(&mut buf), Ok(24 + 4 + 255 * 8));

    let macs = vec![MacAddr([2, 0, 0, 0, 0, 4]); 256];
    let reserve = repr_with(BodyRepr::Reserve(ReserveRepr { command: ReserveCommand::Set, macs: &macs }));
    assert_eq!(reserve.emit(&mut buf), Err(EmitError::TooManyEntries { count: 256 }));
    let reserve =
        repr_with(BodyRepr::Reserve(ReserveRepr { command: ReserveCommand::Set, macs: &macs[..255] }));
    assert_eq!(reserve.emit(&mut buf), Ok(24 + 2 + 255 * 6));
}

fn mask_of<'a>(repr: &FrameRepr<'a>) -> MaskRepr<'a> {
    match repr.body {
        BodyRepr::Mask(m) => m,
        other => panic!("not a mask body: {other:?}"),
    }
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        ParseError::Truncated { what: "ATA header", need: 12, got: 11 }.to_string(),
        "ATA header truncated: need 12 bytes, got 11"
    );
    assert_eq!(ParseError::EtherType { got: 0x0800 }.to_string(), "EtherType 0x0800 is not AoE (0x88a2)");
    assert_eq!(
        ParseError::WriteDataShort { sectors: 2, need: 1024, got: 1000 }.to_string(),
        "ATA write of 2 sectors needs 1024 data bytes, the frame has 1000"
    );
    assert_eq!(
        EmitError::BufferTooSmall { need: 36, got: 35 }.to_string(),
        "output buffer too small: need 36 bytes, got 35"
    );
    assert_eq!(
        EmitError::TooManyEntries { count: 256 }.to_string(),
        "256 entries do not fit the 8-bit count field"
    );
}

#[test]
fn mac_addresses_take_hex_digits_only() {
    let mac = MacAddr([0x00, 0x11, 0x22, 0xaa, 0xbb, 0xcc]);
    assert_eq!("00:11:22:aa:bb:cc".parse(), Ok(mac));
    assert_eq!("00-11-22-AA-BB-CC".parse(), Ok(mac));
    assert_eq!("001122aabbcc".parse(), Ok(mac));
    assert_eq!("0:1:2:3:4:5".parse(), Ok(MacAddr([0, 1, 2, 3, 4, 5])));
    // Regression: `u8::from_str_radix` takes a leading '+', so these used to parse.
    for bad in [
        "+1:+2:+3:+4:+5:+6",
        "00:11:22:aa:bb:+c",
        "00:11:22:aa:bb",
        "00:11:22:aa:bb:cc:dd",
        "0g:11:22:aa:bb:cc",
        "",
    ] {
        assert_eq!(bad.parse::<MacAddr>(), Err(aoe_proto::ethernet::MacParseError), "{bad:?}");
    }
}
