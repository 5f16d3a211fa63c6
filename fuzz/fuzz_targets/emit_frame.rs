//! Arbitrary frame values: `FrameRepr::emit` never panics, fails exactly when it should,
//! and what it writes parses back to the values sent (as the parser's rules normalise them).
#![no_main]

use aoe_proto::{
    AtaFlags, AtaRepr, BodyRepr, ConfigCommand, ConfigRepr, Directive, EmitError, Flags, FrameRepr,
    HeaderRepr, MacAddr, MaskCommand, MaskError, MaskRepr, ParseError, ReserveCommand, ReserveRepr,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    dst: [u8; 6],
    src: [u8; 6],
    /// All eight bits: only the low nibble may reach the wire.
    flags: u8,
    error: u8,
    shelf: u16,
    slot: u8,
    tag: u32,
    body: BodyInput,
    /// How many bytes short of (or beyond) the frame the output buffer is.
    slack: i8,
    padded: bool,
}

#[derive(Arbitrary, Debug)]
enum BodyInput {
    Ata {
        aflags: u8,
        err_feature: u8,
        sector_count: u8,
        cmd_status: u8,
        lba: u64,
        data: Vec<u8>,
    },
    Config {
        buffer_count: u16,
        firmware: u16,
        sector_count: u8,
        aoe_version: u8,
        command: u8,
        string: Vec<u8>,
    },
    Mask {
        command: u8,
        error: u8,
        directives: Vec<(u8, u8, [u8; 6])>,
    },
    Reserve {
        command: u8,
        macs: Vec<[u8; 6]>,
    },
    Raw {
        command: u8,
        payload: Vec<u8>,
    },
}

const SECTOR: usize = 512;
const LBA48_MASK: u64 = (1 << 48) - 1;

fuzz_target!(|input: Input| {
    let directives: Vec<Directive>;
    let macs: Vec<MacAddr>;
    let body = match &input.body {
        BodyInput::Ata { aflags, err_feature, sector_count, cmd_status, lba, data } => BodyRepr::Ata {
            header: AtaRepr {
                flags: AtaFlags::from_bits_retain(*aflags),
                err_feature: *err_feature,
                sector_count: *sector_count,
                cmd_status: *cmd_status,
                lba: *lba,
            },
            data,
        },
        BodyInput::Config { buffer_count, firmware, sector_count, aoe_version, command, string } => {
            BodyRepr::Config(ConfigRepr {
                buffer_count: *buffer_count,
                firmware: *firmware,
                sector_count: *sector_count,
                aoe_version: *aoe_version,
                command: ConfigCommand::from(*command),
                string,
            })
        }
        BodyInput::Mask { command, error, directives: d } => {
            directives = d
                .iter()
                .map(|&(reserved, command, mac)| Directive { reserved, command, mac: MacAddr(mac) })
                .collect();
            BodyRepr::Mask(MaskRepr {
                command: MaskCommand::from(*command),
                error: MaskError::from(*error),
                directives: &directives,
            })
        }
        BodyInput::Reserve { command, macs: m } => {
            macs = m.iter().copied().map(MacAddr).collect();
            BodyRepr::Reserve(ReserveRepr { command: ReserveCommand::from(*command), macs: &macs })
        }
        BodyInput::Raw { command, payload } => BodyRepr::Raw { command: *command, payload },
    };
    let repr = FrameRepr {
        dst: MacAddr(input.dst),
        src: MacAddr(input.src),
        header: HeaderRepr {
            flags: Flags::from_bits_retain(input.flags),
            error: input.error,
            shelf: input.shelf,
            slot: input.slot,
            tag: input.tag,
        },
        body,
    };

    let len = repr.buffer_len();
    let need = if input.padded { len.max(60) } else { len };
    let size = need.saturating_add_signed(isize::from(input.slack));
    let mut buf = vec![0xA5u8; size];
    let result = if input.padded { repr.emit_padded(&mut buf) } else { repr.emit(&mut buf) };

    // Which error, if any, emit must report.
    let too_many = match &repr.body {
        BodyRepr::Mask(m) => Some(m.directives.len()).filter(|&n| n > 255),
        BodyRepr::Reserve(r) => Some(r.macs.len()).filter(|&n| n > 255),
        _ => None,
    };
    let too_long = match &repr.body {
        BodyRepr::Config(c) => Some(c.string.len()).filter(|&n| n > 1024),
        _ => None,
    };
    let small = (size < need).then_some(EmitError::BufferTooSmall { need, got: size });
    // emit checks the values first; emit_padded checks the buffer first.
    let value_error = too_long
        .map(|len| EmitError::ConfigStringTooLong { len })
        .or(too_many.map(|count| EmitError::TooManyEntries { count }));
    let expected_error = if input.padded { small.or(value_error) } else { value_error.or(small) };
    if let Some(error) = expected_error {
        assert_eq!(result, Err(error));
        return;
    }
    assert_eq!(result, Ok(need));
    assert!(buf[len..need].iter().all(|&b| b == 0), "padding is not zeros");
    assert!(buf[need..].iter().all(|&b| b == 0xA5), "emit wrote past the frame");

    let bytes = &buf[..len];
    let parsed = FrameRepr::parse(bytes);
    let header = HeaderRepr { flags: Flags::from_bits_retain(input.flags & 0x0F), ..repr.header };
    let is_request = !header.flags.contains(Flags::RESPONSE);
    let expected_body = match repr.body {
        BodyRepr::Ata { header: ata, data } => {
            let ata = AtaRepr { lba: ata.lba & LBA48_MASK, ..ata };
            let want = usize::from(ata.sector_count) * SECTOR;
            // A write request carries exactly its sectors; anything else carries all the
            // bytes after the header (an answer's sector count is not a length).
            let write_request = is_request && ata.flags.contains(AtaFlags::WRITE);
            if write_request && data.len() < want {
                let short =
                    ParseError::WriteDataShort { sectors: ata.sector_count, need: want, got: data.len() };
                assert_eq!(parsed, Err(short));
                return;
            }
            let data = if write_request { &data[..want] } else { data };
            BodyRepr::Ata { header: ata, data }
        }
        BodyRepr::Config(c) => {
            let command = ConfigCommand::from(u8::from(c.command) & 0x0F);
            let read_request = is_request && command == ConfigCommand::Read;
            let string = if read_request { &[][..] } else { c.string };
            BodyRepr::Config(ConfigRepr { aoe_version: c.aoe_version & 0x0F, command, string, ..c })
        }
        BodyRepr::Raw { command, .. } if command <= 3 => {
            // An opaque payload under a defined command is parsed as that command: whatever
            // comes out must itself round-trip.
            aoe_proto_fuzz::check_frame(bytes);
            return;
        }
        other => other,
    };
    assert_eq!(parsed, Ok(FrameRepr { header, body: expected_body, ..repr }));
});
