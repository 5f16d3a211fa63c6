//! Any sequence of frames into the target engine: it never panics, every answer is a
//! well-formed, padded AoE frame, and a memory backend with guard bytes around the export
//! window shows that nothing outside the window was ever read into an answer or written.
#![no_main]

use aoe_proto::{
    AtaFlags, AtaRepr, BodyRepr, ConfigCommand, ConfigRepr, Directive, Frame, FrameRepr, HeaderRepr, MacAddr,
    MaskCommand, MaskError, MaskRepr, ReserveCommand, ReserveRepr,
};
use aoe_target::backend::{Backend, MemoryBackend, Window};
use aoe_target::export::{Export, ExportConfig, Port, Received};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const SECTOR: usize = 512;
const GUARD_SECTORS: usize = 4;
const WINDOW_SECTORS: usize = 24;
/// Guard bytes: a value no export sector ever holds (they start as 0x00..=0x17 and are only
/// ever written with bytes below 0x80).
const GUARD: u8 = 0xA5;
const TARGET: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const INITIATORS: [MacAddr; 3] = [MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 3]), MacAddr::BROADCAST];

#[derive(Arbitrary, Debug)]
struct Input {
    jumbo: bool,
    read_only: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
struct Step {
    src: u8,
    shelf: u8,
    slot: u8,
    flags: u8,
    tag: u32,
    body: Body,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Ata { aflags: u8, feature: u8, count: u8, command: u8, lba: u64, data_sectors: u8, fill: u8 },
    Config { command: u8, string: Vec<u8> },
    Mask { command: u8, directives: Vec<(u8, u8)> },
    Reserve { command: u8, macs: Vec<u8> },
    Raw { command: u8, bytes: Vec<u8> },
}

fn mac(i: u8) -> MacAddr {
    INITIATORS[usize::from(i) % INITIATORS.len()]
}

fuzz_target!(|input: Input| {
    let total = (2 * GUARD_SECTORS + WINDOW_SECTORS) * SECTOR;
    let mut disk = vec![GUARD; total];
    for (i, b) in disk[GUARD_SECTORS * SECTOR..(GUARD_SECTORS + WINDOW_SECTORS) * SECTOR].iter_mut().enumerate() {
        *b = (i / SECTOR) as u8;
    }
    let window = Window::new(
        MemoryBackend::from_vec(disk.clone()),
        (GUARD_SECTORS * SECTOR) as u64,
        Some((WINDOW_SECTORS * SECTOR) as u64),
    )
    .unwrap();
    let mut config = ExportConfig::new(1, 0);
    config.read_only = input.read_only;
    let mut export = Export::new(config, window);
    let mtu = if input.jumbo { 9000 } else { 1500 };
    let port = Port::new(TARGET, mtu);
    let mut request = vec![0u8; 16 * 1024];
    let mut answer = vec![0u8; 14 + mtu];

    for step in input.steps.iter().take(64) {
        let shelf = if step.shelf == 0xFF { 0xFFFF } else { u16::from(step.shelf % 3) };
        let header = HeaderRepr {
            flags: aoe_proto::Flags::from_bits_retain(step.flags & 0x0F),
            error: 0,
            shelf,
            slot: if step.slot == 0xFF { 0xFF } else { step.slot % 3 },
            tag: step.tag,
        };
        let data: Vec<u8>;
        let directives: Vec<Directive>;
        let macs: Vec<MacAddr>;
        let body = match &step.body {
            Body::Ata { aflags, feature, count, command, lba, data_sectors, fill } => {
                data = vec![fill & 0x7F; usize::from(*data_sectors % 20) * SECTOR];
                let mut h = AtaRepr::read(0, *count, false);
                h.flags = AtaFlags::from_bits_retain(*aflags);
                h.err_feature = *feature;
                h.cmd_status = *command;
                // Mostly near the window so that edges get hit, sometimes anywhere.
                h.lba = if lba >> 60 == 0 { lba % 40 } else { lba & ((1 << 48) - 1) };
                BodyRepr::Ata { header: h, data: &data }
            }
            Body::Config { command, string } => BodyRepr::Config(ConfigRepr::request(
                ConfigCommand::from(command & 0x0F),
                &string[..string.len().min(1024)],
            )),
            Body::Mask { command, directives: d } => {
                directives = d.iter().take(255).map(|&(c, m)| Directive { reserved: 0, command: c % 4, mac: mac(m) }).collect();
                BodyRepr::Mask(MaskRepr { command: MaskCommand::from(command % 3), error: MaskError::None, directives: &directives })
            }
            Body::Reserve { command, macs: m } => {
                macs = m.iter().take(255).map(|&i| mac(i)).collect();
                BodyRepr::Reserve(ReserveRepr { command: ReserveCommand::from(command % 4), macs: &macs })
            }
            Body::Raw { command, bytes } => BodyRepr::Raw { command: *command, payload: &bytes[..bytes.len().min(9000)] },
        };
        let frame = FrameRepr { dst: TARGET, src: mac(step.src), header, body };
        let Ok(len) = frame.emit(&mut request) else { continue };
        // Also try the frame cut short, at a point the step chooses.
        let cut = if step.flags & 0x10 != 0 { len - (step.tag as usize % len) } else { len };
        // Frames that are not AoE at all never reach an export.
        let Ok(received) = Received::parse(&request[..cut]) else { continue };
        let outcome = export.handle(&port, &received, &mut answer).expect("an MTU-sized buffer holds any answer");
        let answered = outcome.complete(export.backend(), &mut answer).expect("an MTU-sized buffer holds any answer");
        if let Some(n) = answered {
            assert!(n >= 60 && n <= answer.len(), "answer length {n}");
            let (_, h, _) = aoe_proto::parse_headers(&answer[..n]).expect("answer headers parse");
            assert!(h.is_response());
            assert_eq!(h.tag(), step.tag);
            let read = matches!(&step.body, Body::Ata { command: 0x20 | 0x24, .. });
            if let (true, Ok(Frame { body: aoe_proto::Body::Ata { data, .. }, .. })) = (read, Frame::parse(&answer[..n])) {
                assert!(!data.contains(&GUARD), "guard bytes read into an answer");
            }
        }
    }
    let after = export.backend().inner().snapshot();
    let (lo, hi) = (GUARD_SECTORS * SECTOR, (GUARD_SECTORS + WINDOW_SECTORS) * SECTOR);
    assert!(after[..lo].iter().all(|&b| b == GUARD), "guard before the window written");
    assert!(after[hi..].iter().all(|&b| b == GUARD), "guard after the window written");
    if input.read_only {
        assert_eq!(after, disk, "read-only export changed");
    }
    assert_eq!(export.backend().len(), (WINDOW_SECTORS * SECTOR) as u64);
});
