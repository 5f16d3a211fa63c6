//! Property tests: `parse(emit(x)) == x` for every frame type, and arbitrary bytes never
//! make the parser panic.

use aoe_proto::identify::{Identify, IDENTIFY_LEN};
use aoe_proto::{
    AtaCommand, AtaFlags, AtaFrame, AtaRepr, BodyRepr, Command, ConfigCommand, ConfigRepr, Directive,
    DirectiveCommand, ErrorCode, Flags, Frame, FrameRepr, HeaderRepr, MacAddr, MaskCommand, MaskError,
    MaskRepr, ReserveCommand, ReserveRepr, SECTOR_SIZE,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// A body that owns its variable part, so a strategy can produce it; [`Owned::repr`]
/// borrows it as the codec's `BodyRepr`.
#[derive(Debug, Clone)]
enum OwnedBody {
    Ata(AtaRepr, Vec<u8>),
    Config(ConfigRepr<'static>, Vec<u8>),
    Mask(MaskCommand, MaskError, Vec<Directive>),
    Reserve(ReserveCommand, Vec<MacAddr>),
    Raw(u8, Vec<u8>),
}

#[derive(Debug, Clone)]
struct Owned {
    dst: MacAddr,
    src: MacAddr,
    header: HeaderRepr,
    body: OwnedBody,
}

impl Owned {
    fn repr(&self) -> FrameRepr<'_> {
        let body = match &self.body {
            OwnedBody::Ata(header, data) => BodyRepr::Ata { header: *header, data },
            OwnedBody::Config(c, string) => BodyRepr::Config(ConfigRepr { string, ..*c }),
            OwnedBody::Mask(command, error, directives) => {
                BodyRepr::Mask(MaskRepr { command: *command, error: *error, directives })
            }
            OwnedBody::Reserve(command, macs) => BodyRepr::Reserve(ReserveRepr { command: *command, macs }),
            OwnedBody::Raw(command, payload) => BodyRepr::Raw { command: *command, payload },
        };
        FrameRepr { dst: self.dst, src: self.src, header: self.header, body }
    }
}

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

/// Any flag nibble, reserved bits included.
fn flags() -> impl Strategy<Value = Flags> {
    (0u8..=0x0F).prop_map(Flags::from_bits_retain)
}

fn header_with(flags: impl Strategy<Value = Flags>) -> impl Strategy<Value = HeaderRepr> {
    (flags, any::<u8>(), any::<u16>(), any::<u8>(), any::<u32>())
        .prop_map(|(flags, error, shelf, slot, tag)| HeaderRepr { flags, error, shelf, slot, tag })
}

fn ata_repr(
    flags: impl Strategy<Value = AtaFlags>,
    sectors: impl Strategy<Value = u8>,
) -> impl Strategy<Value = AtaRepr> {
    (flags, any::<u8>(), sectors, any::<u8>(), 0u64..1 << 48).prop_map(
        |(flags, err_feature, sector_count, cmd_status, lba)| AtaRepr {
            flags,
            err_feature,
            sector_count,
            cmd_status,
            lba,
        },
    )
}

/// `sector_count × 512` bytes of data for a header.
fn with_data(header: AtaRepr) -> impl Strategy<Value = OwnedBody> {
    vec(any::<u8>(), header.data_len()).prop_map(move |data| OwnedBody::Ata(header, data))
}

fn any_ata_flags() -> impl Strategy<Value = AtaFlags> {
    any::<u8>().prop_map(AtaFlags::from_bits_retain)
}

/// A whole ATA frame: any header, with data that matches the sector count.
fn ata_frame() -> impl Strategy<Value = Owned> {
    (mac(), mac(), header_with(flags()), ata_repr(any_ata_flags(), 0u8..=17)).prop_flat_map(
        |(dst, src, header, ata)| with_data(ata).prop_map(move |body| Owned { dst, src, header, body }),
    )
}

/// ATA frames other than write requests, with any amount of data: the data is everything
/// after the header, whatever the sector count says (an answer's count is not a length).
fn ata_frame_any_data() -> impl Strategy<Value = Owned> {
    (mac(), mac(), header_with(flags()), ata_repr(any_ata_flags(), any::<u8>()), vec(any::<u8>(), 0..1100))
        .prop_map(|(dst, src, mut header, ata, data)| {
            if ata.flags.contains(AtaFlags::WRITE) {
                header.flags |= Flags::RESPONSE;
            }
            Owned { dst, src, header, body: OwnedBody::Ata(ata, data) }
        })
}

fn config_command() -> impl Strategy<Value = ConfigCommand> {
    (0u8..=0x0F).prop_map(ConfigCommand::from)
}

fn config_frame() -> impl Strategy<Value = Owned> {
    (
        mac(),
        mac(),
        header_with(flags()),
        (any::<u16>(), any::<u16>(), any::<u8>(), 0u8..=0x0F, config_command()),
        vec(any::<u8>(), 0..=1024),
    )
        .prop_map(
            |(dst, src, header, (buffer_count, firmware, sector_count, aoe_version, command), mut string)| {
                // A read request's string is ignored by the parser (tested on its own below).
                if !header.flags.contains(Flags::RESPONSE) && command == ConfigCommand::Read {
                    string.clear();
                }
                let c =
                    ConfigRepr { buffer_count, firmware, sector_count, aoe_version, command, string: b"" };
                Owned { dst, src, header, body: OwnedBody::Config(c, string) }
            },
        )
}

fn directive() -> impl Strategy<Value = Directive> {
    (any::<u8>(), any::<u8>(), mac()).prop_map(|(reserved, command, mac)| Directive {
        reserved,
        command,
        mac,
    })
}

fn mask_frame() -> impl Strategy<Value = Owned> {
    (mac(), mac(), header_with(flags()), any::<u8>(), any::<u8>(), vec(directive(), 0..=255)).prop_map(
        |(dst, src, header, command, error, directives)| Owned {
            dst,
            src,
            header,
            body: OwnedBody::Mask(MaskCommand::from(command), MaskError::from(error), directives),
        },
    )
}

fn reserve_frame() -> impl Strategy<Value = Owned> {
    (mac(), mac(), header_with(flags()), any::<u8>(), vec(mac(), 0..=255)).prop_map(
        |(dst, src, header, command, macs)| Owned {
            dst,
            src,
            header,
            body: OwnedBody::Reserve(ReserveCommand::from(command), macs),
        },
    )
}

/// Vendor (0xF0..=0xFF) and undefined (4..=0xEF) commands carry an opaque payload.
fn raw_frame() -> impl Strategy<Value = Owned> {
    let command = prop_oneof![0xF0u8..=0xFF, 4u8..=0xEF];
    (mac(), mac(), header_with(flags()), command, vec(any::<u8>(), 0..=1500)).prop_map(
        |(dst, src, header, command, payload)| Owned {
            dst,
            src,
            header,
            body: OwnedBody::Raw(command, payload),
        },
    )
}

/// Error answers to commands 0..=3 whose body is too short for its header come back raw.
fn malformed_error_answer() -> impl Strategy<Value = Owned> {
    let error_flags = flags().prop_map(|f| f | Flags::RESPONSE | Flags::ERROR);
    (mac(), mac(), header_with(error_flags), 0u8..=3, vec(any::<u8>(), 0..12)).prop_map(
        |(dst, src, header, command, mut payload)| {
            let header_len = [12, 8, 4, 2][usize::from(command)];
            payload.truncate(header_len - 1);
            Owned { dst, src, header, body: OwnedBody::Raw(command, payload) }
        },
    )
}

fn well_formed_frame() -> impl Strategy<Value = Owned> {
    prop_oneof![ata_frame(), ata_frame_any_data(), config_frame(), mask_frame(), reserve_frame(), raw_frame(),]
}

fn any_frame() -> impl Strategy<Value = Owned> {
    prop_oneof![6 => well_formed_frame(), 1 => malformed_error_answer()]
}

fn emit_vec(repr: &FrameRepr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    let len = repr.emit(&mut buf).expect("emit into a buffer of buffer_len()");
    assert_eq!(len, buf.len());
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn frame_round_trip(owned in any_frame()) {
        let repr = owned.repr();
        let bytes = emit_vec(&repr);
        prop_assert_eq!(FrameRepr::parse(&bytes), Ok(repr));
        let frame = Frame::parse(&bytes).unwrap();
        prop_assert_eq!(frame.header.command(), repr.body.command());
        prop_assert_eq!(frame.header.version(), 1);
    }

    #[test]
    // Not for malformed error answers: padding can complete their body.
    fn padded_frame_round_trips_except_for_ata_data(owned in well_formed_frame()) {
        let repr = owned.repr();
        let mut buf = vec![0u8; repr.buffer_len().max(60)];
        let len = repr.emit_padded(&mut buf).unwrap();
        prop_assert_eq!(len, buf.len());
        let parsed = FrameRepr::parse(&buf).unwrap();
        match (parsed.body, repr.body) {
            // Padding is part of an opaque payload, and of ATA data other than a write's.
            (BodyRepr::Raw { payload: got, .. }, BodyRepr::Raw { payload: sent, .. })
            | (BodyRepr::Ata { data: got, .. }, BodyRepr::Ata { data: sent, .. }) => {
                prop_assert_eq!(&got[..sent.len()], sent);
                prop_assert!(got[sent.len()..].iter().all(|&b| b == 0));
                prop_assert_eq!((parsed.dst, parsed.src, parsed.header), (repr.dst, repr.src, repr.header));
            }
            _ => prop_assert_eq!(parsed, repr),
        }
    }

    /// Building an ATA frame in place (headers, data into the sector area, finish) gives the
    /// bytes `FrameRepr::emit_padded` gives, over a buffer whatever it held before; and the
    /// view over those bytes reads back every header.
    #[test]
    fn ata_frame_in_place_equals_emit_padded(owned in prop_oneof![ata_frame(), ata_frame_any_data()], stale in any::<u8>()) {
        let repr = owned.repr();
        let BodyRepr::Ata { header: ata, data } = repr.body else { unreachable!() };
        let mut expect = vec![0u8; repr.buffer_len().max(60)];
        let len = repr.emit_padded(&mut expect).unwrap();
        let mut buf = vec![stale; len + 16];
        let mut frame = AtaFrame::emit(&mut buf, repr.dst, repr.src, &repr.header, &ata).unwrap();
        frame.data_mut(data.len()).unwrap().copy_from_slice(data);
        prop_assert_eq!(frame.finish(data.len()), Ok(len));
        prop_assert_eq!(&buf[..len], &expect[..len]);
        prop_assert!(buf[len..].iter().all(|&b| b == stale), "nothing written past the frame");

        let view = AtaFrame::new_checked(&mut buf[..len]).unwrap();
        let parsed = Frame::parse(&expect[..len]).unwrap();
        prop_assert_eq!(view.ethernet(), parsed.ethernet);
        prop_assert_eq!(view.header(), parsed.header);
        let aoe_proto::Body::Ata { header: parsed_ata, .. } = parsed.body else { unreachable!() };
        prop_assert_eq!(view.ata(), parsed_ata);
        prop_assert_eq!(view.payload().len(), len - 36);
    }

    /// Setters change only their own field.
    #[test]
    fn ata_frame_setters_round_trip(owned in ata_frame(), status in any::<u8>(), error in any::<u8>(), count in any::<u8>(), lba in 0u64..1 << 48, tag in any::<u32>()) {
        let repr = owned.repr();
        let mut buf = emit_vec(&repr);
        let mut frame = AtaFrame::new_checked(&mut buf).unwrap();
        frame.set_status(aoe_proto::AtaStatus::from_bits_retain(status));
        frame.set_error(aoe_proto::AtaError::from_bits_retain(error));
        frame.set_sector_count(count);
        frame.set_lba48(lba);
        frame.set_tag(tag);
        let BodyRepr::Ata { header: ata, data } = repr.body else { unreachable!() };
        let mut want = AtaRepr { cmd_status: status, err_feature: error, sector_count: count, lba, ..ata };
        want.flags = ata.flags;
        let mut header = repr.header;
        header.tag = tag;
        let mut expect = vec![0u8; buf.len()];
        let body = BodyRepr::Ata { header: want, data };
        FrameRepr { header, body, ..repr }.emit(&mut expect).unwrap();
        prop_assert_eq!(buf, expect);
    }

    #[test]
    fn write_request_takes_exactly_its_sectors(
        sectors in 0u8..=17,
        extra in vec(any::<u8>(), 0..64),
        lba in 0u64..1 << 48,
        extended in any::<bool>(),
    ) {
        let data = vec![0x5a; usize::from(sectors) * SECTOR_SIZE];
        let repr = FrameRepr {
            dst: MacAddr([2, 0, 0, 0, 0, 1]),
            src: MacAddr([2, 0, 0, 0, 0, 2]),
            header: HeaderRepr::request(1, 2, 3),
            body: BodyRepr::Ata { header: AtaRepr::write(lba, sectors, extended), data: &data },
        };
        let mut bytes = emit_vec(&repr);
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(FrameRepr::parse(&bytes), Ok(repr));
    }

    #[test]
    fn read_request_config_string_is_dropped(
        string in vec(any::<u8>(), 0..=1024),
        aoe_version in 0u8..=0x0F,
    ) {
        let sent = ConfigRepr { aoe_version, ..ConfigRepr::request(ConfigCommand::Read, &string) };
        let repr = FrameRepr {
            dst: MacAddr::BROADCAST,
            src: MacAddr([2, 0, 0, 0, 0, 2]),
            header: HeaderRepr::request(0xFFFF, 0xFF, 9),
            body: BodyRepr::Config(sent),
        };
        let bytes = emit_vec(&repr);
        let expected = FrameRepr { body: BodyRepr::Config(ConfigRepr { string: b"", ..sent }), ..repr };
        prop_assert_eq!(FrameRepr::parse(&bytes), Ok(expected));
    }

    #[test]
    fn random_bytes_never_panic_and_reparse_equal(bytes in vec(any::<u8>(), 0..2048)) {
        check_bytes(&bytes)?;
    }

    /// Mostly-valid frames: a real AoE header followed by random bytes, so that the body
    /// parsers are reached far more often than with fully random input.
    #[test]
    fn aoe_frames_with_random_bodies(
        ver_flags in prop_oneof![Just(0x10u8), Just(0x18u8), Just(0x1cu8), 0x10u8..=0x1F, any::<u8>()],
        command in prop_oneof![0u8..=3, any::<u8>()],
        count in any::<u8>(),
        body in vec(any::<u8>(), 0..2200),
    ) {
        let mut bytes = vec![0u8; 24];
        bytes[12..14].copy_from_slice(&[0x88, 0xa2]);
        bytes[14] = ver_flags;
        bytes[19] = command;
        bytes.extend_from_slice(&body);
        // Put a chosen count in the ATA sector count, the low byte of the config string
        // length, the mask directive count or the reserve MAC count.
        let at = [26, 31, 27, 25][usize::from(command & 3)];
        if let Some(b) = bytes.get_mut(at) {
            *b = count;
        }
        check_bytes(&bytes)?;
    }

    #[test]
    fn identify_round_trip(
        serial in any::<[u8; 20]>(),
        firmware in any::<[u8; 8]>(),
        model in vec(any::<u8>(), 40),
        lba48 in any::<bool>(),
        sectors in 0u64..1 << 48,
        max_multiple in any::<u8>(),
        smart in any::<bool>(),
        flush_cache in any::<bool>(),
        flush_cache_ext in any::<bool>(),
    ) {
        // Without LBA48 the capacity lives in words 60-61, capped at 0x0FFF_FFFF.
        let sectors = if lba48 { sectors } else { sectors & 0x0FFF_FFFF };
        let id = Identify { serial, firmware, model: model.try_into().unwrap(), sectors, lba48, max_multiple, smart, flush_cache, flush_cache_ext };
        let mut buf = [0u8; IDENTIFY_LEN];
        id.emit(&mut buf);
        prop_assert_eq!(Identify::parse(&buf), Ok(id));
        prop_assert_eq!(buf.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
    }

    #[test]
    fn identify_new_round_trips_ascii_names(
        model in "[ -~]{0,40}",
        serial in "[!-~]{0,20}",
        firmware in "[!-~]{0,8}",
        sectors in 0u64..1 << 48,
    ) {
        let id = Identify::new(&model, &serial, &firmware, sectors);
        let mut buf = [0u8; IDENTIFY_LEN];
        id.emit(&mut buf);
        let back = Identify::parse(&buf).unwrap();
        prop_assert_eq!(back, id);
        prop_assert_eq!(back.model(), model.trim_end());
        prop_assert_eq!(back.serial(), serial.as_str());
        prop_assert_eq!(back.firmware(), firmware.as_str());
        prop_assert_eq!(back.sectors, sectors);
    }

    #[test]
    fn identify_parse_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        if let Ok(id) = Identify::parse(&bytes) {
            let mut buf = [0u8; IDENTIFY_LEN];
            id.emit(&mut buf);
            let back = Identify::parse(&buf).unwrap();
            if id.lba48 || id.sectors <= 0x0FFF_FFFF {
                prop_assert_eq!(back, id);
            } else {
                // An LBA28 capacity beyond the field's range is emitted capped.
                prop_assert_eq!(back, Identify { sectors: 0x0FFF_FFFF, ..id });
            }
        }
    }
}

/// Parsing arbitrary bytes never panics; what parses re-emits and parses to the same values.
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(frame) = Frame::parse(bytes) else { return Ok(()) };
    let first = frame.repr();
    let again = emit_vec(&first);
    prop_assert!(again.len() <= bytes.len(), "re-emitted frame is longer than the input");
    let second = FrameRepr::parse(&again).unwrap();
    prop_assert_eq!(second, first);
    let mut padded = vec![0u8; first.buffer_len().max(60)];
    prop_assert_eq!(first.emit_padded(&mut padded), Ok(padded.len()));
    prop_assert!(padded.len() >= 60);
    Ok(())
}

#[test]
fn error_codes_round_trip_all_256_values() {
    for v in 0..=255u8 {
        assert_eq!(u8::from(ErrorCode::from(v)), v);
        assert_eq!(u8::from(Command::from(v)), v);
        assert_eq!(u8::from(AtaCommand::from(v)), v);
        assert_eq!(u8::from(ConfigCommand::from(v)), v);
        assert_eq!(u8::from(MaskCommand::from(v)), v);
        assert_eq!(u8::from(MaskError::from(v)), v);
        assert_eq!(u8::from(DirectiveCommand::from(v)), v);
        assert_eq!(u8::from(ReserveCommand::from(v)), v);
        assert_eq!(Directive::new(DirectiveCommand::from(v), MacAddr::ZERO).command, v);
    }
}

#[test]
fn named_codes_have_their_protocol_values() {
    let named: Vec<(ErrorCode, u8)> = (0..=255u8)
        .map(|v| (ErrorCode::from(v), v))
        .filter(|(c, _)| !matches!(c, ErrorCode::Other(_)))
        .collect();
    assert_eq!(
        named,
        [
            (ErrorCode::UnrecognizedCommand, 1),
            (ErrorCode::BadArgument, 2),
            (ErrorCode::DeviceUnavailable, 3),
            (ErrorCode::ConfigStringPresent, 4),
            (ErrorCode::UnsupportedVersion, 5),
            (ErrorCode::TargetReserved, 6),
        ]
    );
    for v in 0..=255u8 {
        let expected = match v {
            0 => Command::Ata,
            1 => Command::QueryConfig,
            2 => Command::MacMask,
            3 => Command::Reserve,
            0xF0..=0xFF => Command::Vendor(v),
            _ => Command::Unknown(v),
        };
        assert_eq!(Command::from(v), expected);
    }
    let ata: Vec<u8> =
        (0..=255u8).filter(|&v| !matches!(AtaCommand::from(v), AtaCommand::Other(_))).collect();
    assert_eq!(ata, [0x20, 0x24, 0x30, 0x34, 0xB0, 0xE5, 0xE7, 0xEA, 0xEC, 0xEF]);
    assert_eq!(AtaCommand::from(0xEC), AtaCommand::IdentifyDevice);
    assert_eq!(ConfigCommand::from(4), ConfigCommand::ForceSet);
    assert_eq!(ConfigCommand::from(5), ConfigCommand::Other(5));
    assert_eq!(MaskCommand::from(1), MaskCommand::Edit);
    assert_eq!(MaskError::from(3), MaskError::Full);
    assert_eq!(DirectiveCommand::from(2), DirectiveCommand::Delete);
    assert_eq!(ReserveCommand::from(2), ReserveCommand::ForceSet);
    assert_eq!(ReserveCommand::from(3), ReserveCommand::Other(3));
}
