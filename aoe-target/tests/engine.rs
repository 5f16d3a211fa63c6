//! The target engine, frame by frame: every command and every error path.

use aoe_proto::ata::{AtaCommand, AtaError, AtaFlags, AtaStatus};
use aoe_proto::config::ConfigCommand;
use aoe_proto::header::{ErrorCode, Flags};
use aoe_proto::mask::{Directive, DirectiveCommand, MaskCommand, MaskError};
use aoe_proto::reserve::ReserveCommand;
use aoe_proto::{
    AtaRepr, Body, BodyRepr, ConfigRepr, Frame, FrameRepr, HeaderRepr, Identify, MacAddr, MaskRepr,
    ReserveRepr,
};
use aoe_target::backend::{Backend, MemoryBackend};
use aoe_target::export::{
    Access, AccessRule, AccessRules, Export, ExportConfig, ExportState, Port, Received, StateError,
    MAX_LIST_ENTRIES,
};

const TARGET: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
const HOST: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x20]);
const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x30]);
const SECTORS: u64 = 64;

struct Rig {
    export: Export<MemoryBackend>,
    port: Port,
    out: Vec<u8>,
}

impl Rig {
    fn new() -> Self {
        Self::with(ExportConfig::new(1, 2))
    }
    fn with(config: ExportConfig) -> Self {
        let data: Vec<u8> = (0..SECTORS as usize * 512).map(|i| (i / 512) as u8).collect();
        Rig {
            export: Export::new(config, MemoryBackend::from_vec(data)),
            port: Port::new(TARGET, 1500),
            out: vec![0; 1514],
        }
    }
    /// Sends a request from `src` to e1.2 with `body`; returns the answer's bytes.
    fn send_from(&mut self, src: MacAddr, header: HeaderRepr, body: BodyRepr<'_>) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 9014];
        let len = FrameRepr { dst: TARGET, src, header, body }.emit_padded(&mut buf).unwrap();
        self.raw(&buf[..len])
    }
    fn raw(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let request = Received::parse(frame).ok()?;
        let outcome = self.export.handle(&self.port, &request, &mut self.out).expect("room for the answer");
        let n = outcome.complete(self.export.backend(), &mut self.out).expect("room for the answer")?;
        assert!(n >= 60, "answer of {n} bytes is not padded to 60");
        Some(self.out[..n].to_vec())
    }
    fn send(&mut self, body: BodyRepr<'_>) -> Option<Vec<u8>> {
        self.send_from(HOST, HeaderRepr::request(1, 2, 0xABCD), body)
    }
    fn ata(&mut self, header: AtaRepr, data: &[u8]) -> (AtaRepr, Vec<u8>) {
        let answer = self.send(BodyRepr::Ata { header, data }).expect("ATA answer");
        let frame = Frame::parse(&answer).unwrap();
        assert_eq!(frame.header.flags(), Flags::RESPONSE);
        let Body::Ata { header, data } = frame.body else { panic!("not ATA: {:?}", frame.body) };
        (AtaRepr::parse(header), data.to_vec())
    }
}

fn status(a: &AtaRepr) -> (AtaStatus, AtaError) {
    (AtaStatus::from_bits_retain(a.cmd_status), AtaError::from_bits_retain(a.err_feature))
}

fn aoe_error(answer: &[u8]) -> Option<ErrorCode> {
    Frame::parse(answer).unwrap().header.error_code()
}

#[test]
fn answer_swaps_macs_keeps_tag_and_names_the_target() {
    let mut rig = Rig::new();
    let answer = rig
        .send_from(
            HOST,
            HeaderRepr::request(0xFFFF, 0xFF, 77),
            BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
        )
        .unwrap();
    let f = Frame::parse(&answer).unwrap();
    assert_eq!((f.ethernet.dst, f.ethernet.src), (HOST, TARGET));
    assert_eq!((f.header.shelf(), f.header.slot(), f.header.tag()), (1, 2, 77));
    assert!(f.header.is_response());
    let Body::Config { header, string } = f.body else { panic!() };
    assert_eq!(header.buffer_count.get(), 16);
    assert_eq!(header.sector_count, 2, "MTU 1500 carries 2 sectors");
    assert_eq!(header.aoe_version(), 1);
    assert!(string.is_empty());
}

#[test]
fn sector_count_follows_the_port_mtu() {
    let mut rig = Rig::new();
    rig.port = Port::new(TARGET, 9000);
    rig.out = vec![0; 9014];
    let answer = rig.send(BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""))).unwrap();
    let Body::Config { header, .. } = Frame::parse(&answer).unwrap().body else { panic!() };
    assert_eq!(header.sector_count, 17);
    let (a, data) = rig.ata(AtaRepr::read(0, 17, true), &[]);
    assert_eq!(status(&a), (AtaStatus::DRDY, AtaError::empty()));
    assert_eq!(data.len(), 17 * 512);
}

#[test]
fn ignores_frames_not_for_it() {
    let mut rig = Rig::new();
    let read = BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""));
    assert!(rig.send_from(HOST, HeaderRepr::request(1, 3, 1), read).is_none(), "other slot");
    assert!(rig.send_from(HOST, HeaderRepr::request(2, 2, 1), read).is_none(), "other shelf");
    assert!(rig.send_from(HOST, HeaderRepr::request(1, 0xFF, 1), read).is_some(), "any slot");
    assert!(rig.send_from(HOST, HeaderRepr::request(0xFFFF, 2, 1), read).is_some(), "any shelf");
    let mut response = HeaderRepr::request(1, 2, 1);
    response.flags = Flags::RESPONSE;
    assert!(rig.send_from(HOST, response, read).is_none(), "another target's response");
    let mut buf = vec![0u8; 64];
    let len = FrameRepr { dst: TARGET, src: HOST, header: HeaderRepr::request(1, 2, 1), body: read }
        .emit_padded(&mut buf)
        .unwrap();
    buf[12] = 0x08; // IPv4
    assert!(rig.raw(&buf[..len]).is_none(), "other EtherType");
    assert!(rig.raw(&buf[..20]).is_none(), "shorter than the common header");
}

#[test]
fn unknown_command_and_version_errors() {
    let mut rig = Rig::new();
    let answer = rig.send(BodyRepr::Raw { command: 9, payload: &[1, 2, 3] }).unwrap();
    assert_eq!(aoe_error(&answer), Some(ErrorCode::UnrecognizedCommand));
    let answer = rig.send(BodyRepr::Raw { command: 0xF3, payload: &[] }).unwrap();
    assert_eq!(aoe_error(&answer), Some(ErrorCode::UnrecognizedCommand), "vendor command");

    let mut buf = vec![0u8; 64];
    let len = FrameRepr {
        dst: TARGET,
        src: HOST,
        header: HeaderRepr::request(1, 2, 5),
        body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
    }
    .emit_padded(&mut buf)
    .unwrap();
    buf[14] = 0x20; // version 2
    let answer = rig.raw(&buf[..len]).unwrap();
    let (_, header, _) = aoe_proto::parse_headers(&answer).unwrap();
    assert_eq!(header.error_code(), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(header.tag(), 5);
}

#[test]
fn malformed_body_is_a_bad_argument() {
    let mut rig = Rig::new();
    let mut buf = vec![0u8; 2048];
    let len = FrameRepr {
        dst: TARGET,
        src: HOST,
        header: HeaderRepr::request(1, 2, 5),
        body: BodyRepr::Ata { header: AtaRepr::write(0, 2, true), data: &[0xAA; 1024] },
    }
    .emit(&mut buf)
    .unwrap();
    let before = rig.export.backend().snapshot();
    let answer = rig.raw(&buf[..len - 512]).unwrap();
    assert_eq!(aoe_error(&answer), Some(ErrorCode::BadArgument), "write data shorter than its count");
    assert_eq!(rig.export.backend().snapshot(), before, "nothing written");
}

#[test]
fn reads_lba48_and_lba28() {
    let mut rig = Rig::new();
    let (a, data) = rig.ata(AtaRepr::read(5, 2, true), &[]);
    assert_eq!(status(&a), (AtaStatus::DRDY, AtaError::empty()));
    assert_eq!(a.sector_count, 2);
    assert!(data[..512].iter().all(|&b| b == 5) && data[512..].iter().all(|&b| b == 6));
    // LBA28 with the 0xE0 device bits in byte 3, as Linux sends it
    let (a, data) = rig.ata(AtaRepr::read(7, 1, false), &[]);
    assert_eq!(status(&a).0, AtaStatus::DRDY);
    assert!(data.iter().all(|&b| b == 7));
}

#[test]
fn writes_land_in_the_backend() {
    let mut rig = Rig::new();
    let payload: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    let (a, _) = rig.ata(AtaRepr::write(10, 2, true), &payload);
    assert_eq!(status(&a), (AtaStatus::DRDY, AtaError::empty()));
    assert_eq!(&rig.export.backend().snapshot()[10 * 512..12 * 512], &payload[..]);
    let (a, _) = rig.ata(AtaRepr::write(3, 1, false), &payload[..512]);
    assert_eq!(status(&a).0, AtaStatus::DRDY);
    assert_eq!(&rig.export.backend().snapshot()[3 * 512..4 * 512], &payload[..512]);
}

#[test]
fn out_of_range_and_bad_counts_never_touch_the_backend() {
    let mut rig = Rig::new();
    let before = rig.export.backend().snapshot();
    let fail = (AtaStatus::DRDY | AtaStatus::ERR, AtaError::IDNF | AtaError::ABRT);
    assert_eq!(status(&rig.ata(AtaRepr::read(SECTORS - 1, 2, true), &[]).0), fail, "straddles the end");
    assert_eq!(status(&rig.ata(AtaRepr::read(SECTORS, 1, true), &[]).0), fail, "just past the end");
    assert_eq!(status(&rig.ata(AtaRepr::write(SECTORS - 1, 2, true), &[1; 1024]).0), fail);
    assert_eq!(status(&rig.ata(AtaRepr::read((1 << 48) - 1, 2, true), &[]).0), fail, "LBA overflow");
    let abort = (AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT);
    assert_eq!(status(&rig.ata(AtaRepr::read(0, 0, true), &[]).0), abort, "zero sectors");
    assert_eq!(status(&rig.ata(AtaRepr::read(0, 3, true), &[]).0), abort, "more than MTU 1500 carries");
    let mut no_w = AtaRepr::write(0, 1, true);
    no_w.flags = AtaFlags::EXTENDED;
    assert_eq!(status(&rig.ata(no_w, &[]).0), abort, "write command without the W flag");
    let (a, data) = rig.ata(AtaRepr::read(SECTORS - 1, 2, true), &[]);
    assert!(a.cmd_status & 1 == 1 && data.iter().all(|&b| b == 0), "no data on error");
    assert_eq!(rig.export.backend().snapshot(), before);
}

#[test]
fn read_only_export_refuses_writes() {
    let mut config = ExportConfig::new(1, 2);
    config.read_only = true;
    let mut rig = Rig::with(config);
    let before = rig.export.backend().snapshot();
    let (a, _) = rig.ata(AtaRepr::write(0, 1, true), &[0xEE; 512]);
    assert_eq!(status(&a), (AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT));
    assert_eq!(rig.export.backend().snapshot(), before);
    assert_eq!(status(&rig.ata(AtaRepr::read(0, 1, true), &[]).0).0, AtaStatus::DRDY);
}

#[test]
fn identify_describes_the_export() {
    let mut rig = Rig::new();
    let (a, data) = rig.ata(AtaRepr::command(AtaCommand::IdentifyDevice, 1), &[]);
    assert_eq!(status(&a).0, AtaStatus::DRDY);
    let id = Identify::parse(&data).unwrap();
    assert_eq!(id.sectors, SECTORS);
    assert!(id.lba48);
    assert_eq!(id.serial(), "e1.2");
}

#[test]
fn flush_power_features_smart_and_unknown_opcodes() {
    let mut rig = Rig::new();
    for cmd in [AtaCommand::FlushCache, AtaCommand::FlushCacheExt, AtaCommand::SetFeatures] {
        assert_eq!(status(&rig.ata(AtaRepr::command(cmd, 0), &[]).0), (AtaStatus::DRDY, AtaError::empty()));
    }
    let (a, _) = rig.ata(AtaRepr::command(AtaCommand::CheckPowerMode, 0), &[]);
    assert_eq!((a.sector_count, status(&a).0), (0xFF, AtaStatus::DRDY));
    let mut smart = AtaRepr::command(AtaCommand::Smart, 0);
    smart.err_feature = 0xDA;
    smart.lba = 0x00C2_4F00;
    let (a, _) = rig.ata(smart, &[]);
    assert_eq!(status(&a).0, AtaStatus::DRDY);
    assert_eq!((a.lba >> 8) & 0xFFFF, 0xC24F, "SMART RETURN STATUS: no threshold exceeded");
    smart.err_feature = 0xD0; // READ DATA: not offered
    assert_eq!(status(&rig.ata(smart, &[]).0), (AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT));
    let (a, _) = rig.ata(AtaRepr::command(AtaCommand::Other(0x91), 0), &[]);
    assert_eq!(status(&a), (AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT));
}

fn config(rig: &mut Rig, command: ConfigCommand, s: &[u8]) -> Option<(Option<ErrorCode>, Vec<u8>)> {
    let answer = rig.send(BodyRepr::Config(ConfigRepr::request(command, s)))?;
    let f = Frame::parse(&answer).unwrap();
    let Body::Config { string, header } = f.body else { panic!() };
    assert_eq!(header.command(), command);
    Some((f.header.error_code(), string.to_vec()))
}

#[test]
fn config_string_commands() {
    let mut rig = Rig::new();
    assert_eq!(config(&mut rig, ConfigCommand::Set, b"hello world"), Some((None, b"hello world".to_vec())));
    assert_eq!(config(&mut rig, ConfigCommand::Read, b"ignored"), Some((None, b"hello world".to_vec())));
    assert!(config(&mut rig, ConfigCommand::TestExact, b"hello world").is_some());
    assert!(config(&mut rig, ConfigCommand::TestExact, b"hello").is_none(), "inexact test is silent");
    assert!(config(&mut rig, ConfigCommand::TestPrefix, b"hello").is_some());
    assert!(config(&mut rig, ConfigCommand::TestPrefix, b"world").is_none(), "non-prefix test is silent");
    assert_eq!(
        config(&mut rig, ConfigCommand::Set, b"other"),
        Some((Some(ErrorCode::ConfigStringPresent), b"hello world".to_vec())),
        "set on a non-empty string is refused with the current string"
    );
    assert_eq!(config(&mut rig, ConfigCommand::Set, b"hello world"), Some((None, b"hello world".to_vec())));
    assert_eq!(config(&mut rig, ConfigCommand::ForceSet, b"forced"), Some((None, b"forced".to_vec())));
    assert_eq!(config(&mut rig, ConfigCommand::ForceSet, &[b'x'; 1024]).unwrap().1.len(), 1024);
    let answer = rig.send(BodyRepr::Config(ConfigRepr::request(ConfigCommand::Other(9), b""))).unwrap();
    assert_eq!(aoe_error(&answer), Some(ErrorCode::BadArgument));
}

#[test]
fn aoeping_read_with_a_1024_byte_filler_is_answered() {
    let mut rig = Rig::new();
    let mut frame = hex("ffffffffffff6e26e92569fe88a2100000010001800000000000000000000400");
    frame.extend_from_slice(&[0xED; 1024]);
    frame[18] = 2; // our slot
    let answer = rig.raw(&frame).expect("answer to aoeping");
    assert_eq!(answer.len(), 60);
    let f = Frame::parse(&answer).unwrap();
    assert_eq!(f.header.tag(), 0x8000_0000);
    assert_eq!(f.ethernet.dst, MacAddr([0x6e, 0x26, 0xe9, 0x25, 0x69, 0xfe]));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn mask(
    rig: &mut Rig,
    src: MacAddr,
    command: MaskCommand,
    directives: &[Directive],
) -> Option<(MaskError, Vec<MacAddr>)> {
    let answer = rig.send_from(
        src,
        HeaderRepr::request(1, 2, 1),
        BodyRepr::Mask(MaskRepr { command, error: MaskError::None, directives }),
    )?;
    let Body::Mask { header, directives } = Frame::parse(&answer).unwrap().body else { panic!() };
    assert!(directives.iter().all(|d| d.command() == DirectiveCommand::Add));
    Some((header.error(), directives.iter().map(|d| d.mac).collect()))
}

#[test]
fn mac_mask_list_filters_initiators() {
    let mut rig = Rig::new();
    let add = |m| Directive::new(DirectiveCommand::Add, m);
    assert_eq!(mask(&mut rig, HOST, MaskCommand::Read, &[]), Some((MaskError::None, vec![])));
    assert_eq!(
        mask(&mut rig, HOST, MaskCommand::Edit, &[add(HOST), add(HOST)]),
        Some((MaskError::None, vec![HOST]))
    );
    assert!(mask(&mut rig, OTHER, MaskCommand::Read, &[]).is_none(), "masked-out MAC gets nothing");
    assert!(rig
        .send_from(
            OTHER,
            HeaderRepr::request(1, 2, 1),
            BodyRepr::Ata { header: AtaRepr::read(0, 1, true), data: &[] }
        )
        .is_none());
    let bad = Directive::new(DirectiveCommand::Other(7), OTHER);
    assert_eq!(mask(&mut rig, HOST, MaskCommand::Edit, &[bad]), Some((MaskError::BadDirective, vec![HOST])));
    let del = Directive::new(DirectiveCommand::Delete, HOST);
    assert_eq!(mask(&mut rig, HOST, MaskCommand::Edit, &[del]), Some((MaskError::None, vec![])));
    assert!(mask(&mut rig, OTHER, MaskCommand::Read, &[]).is_some(), "empty mask answers everyone");
}

#[test]
fn mac_mask_list_is_bounded() {
    let mut rig = Rig::new();
    rig.port = Port::new(TARGET, 9000);
    rig.out = vec![0; 9014];
    let many: Vec<Directive> = (0..=MAX_LIST_ENTRIES)
        .map(|i| Directive::new(DirectiveCommand::Add, MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8])))
        .collect();
    let many = [&[Directive::new(DirectiveCommand::Add, HOST)][..], &many].concat();
    let (error, list) = mask(&mut rig, HOST, MaskCommand::Edit, &many).unwrap();
    assert_eq!(error, MaskError::Full);
    assert_eq!(list.len(), MAX_LIST_ENTRIES);
    assert_eq!(list[0], HOST);
}

#[test]
fn initial_mask_from_the_config() {
    let mut config = ExportConfig::new(1, 2);
    config.mask = vec![OTHER];
    let mut rig = Rig::with(config);
    assert!(rig.send(BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""))).is_none());
    assert!(rig
        .send_from(
            OTHER,
            HeaderRepr::request(1, 2, 1),
            BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""))
        )
        .is_some());
}

fn reserve(
    rig: &mut Rig,
    src: MacAddr,
    command: ReserveCommand,
    macs: &[MacAddr],
) -> (Option<ErrorCode>, Vec<MacAddr>) {
    let answer = rig
        .send_from(src, HeaderRepr::request(1, 2, 1), BodyRepr::Reserve(ReserveRepr { command, macs }))
        .unwrap();
    let f = Frame::parse(&answer).unwrap();
    match f.body {
        Body::Reserve { macs, .. } if f.header.error_code().is_none() => (None, macs.to_vec()),
        _ => (f.header.error_code(), vec![]),
    }
}

#[test]
fn reservations_keep_other_initiators_out() {
    let mut rig = Rig::new();
    assert_eq!(reserve(&mut rig, HOST, ReserveCommand::Read, &[]), (None, vec![]));
    assert_eq!(reserve(&mut rig, HOST, ReserveCommand::Set, &[HOST]), (None, vec![HOST]));
    // the other initiator: ATA refused with error 6, IDENTIFY still answered, set refused
    let answer = rig
        .send_from(
            OTHER,
            HeaderRepr::request(1, 2, 1),
            BodyRepr::Ata { header: AtaRepr::read(0, 1, true), data: &[] },
        )
        .unwrap();
    assert_eq!(aoe_error(&answer), Some(ErrorCode::TargetReserved));
    let answer = rig
        .send_from(
            OTHER,
            HeaderRepr::request(1, 2, 1),
            BodyRepr::Ata { header: AtaRepr::command(AtaCommand::IdentifyDevice, 1), data: &[] },
        )
        .unwrap();
    assert_eq!(aoe_error(&answer), None);
    assert_eq!(
        reserve(&mut rig, OTHER, ReserveCommand::Set, &[OTHER]),
        (Some(ErrorCode::TargetReserved), vec![])
    );
    assert_eq!(reserve(&mut rig, OTHER, ReserveCommand::Read, &[]), (None, vec![HOST]));
    // the holder still reads; force set takes over; an empty set releases
    assert_eq!(status(&rig.ata(AtaRepr::read(0, 1, true), &[]).0).0, AtaStatus::DRDY);
    assert_eq!(reserve(&mut rig, OTHER, ReserveCommand::ForceSet, &[OTHER]), (None, vec![OTHER]));
    let answer = rig.send(BodyRepr::Ata { header: AtaRepr::read(0, 1, true), data: &[] }).unwrap();
    assert_eq!(aoe_error(&answer), Some(ErrorCode::TargetReserved));
    assert_eq!(reserve(&mut rig, OTHER, ReserveCommand::Set, &[]), (None, vec![]));
    assert_eq!(status(&rig.ata(AtaRepr::read(0, 1, true), &[]).0).0, AtaStatus::DRDY);
    assert_eq!(reserve(&mut rig, HOST, ReserveCommand::Other(5), &[]).0, Some(ErrorCode::BadArgument));
}

/// e1.2 with rules: HOST read-only, OTHER denied, everyone else as `default`.
fn ruled(default: Access) -> Rig {
    let mut config = ExportConfig::new(1, 2);
    config.access = AccessRules {
        rules: vec![
            AccessRule { initiator: HOST, access: Access::ReadOnly },
            AccessRule { initiator: OTHER, access: Access::Deny },
        ],
        default,
    };
    Rig::with(config)
}

#[test]
fn a_read_only_initiator_reads_but_changes_nothing() {
    let mut rig = ruled(Access::Allow);
    let (a, data) = rig.ata(AtaRepr::read(3, 1, true), &[]);
    assert_eq!(status(&a), (AtaStatus::DRDY, AtaError::empty()));
    assert_eq!(data, vec![3u8; 512]);
    let (a, _) = rig.ata(AtaRepr::write(3, 1, true), &[0xEE; 512]);
    assert_eq!(status(&a), (AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT));
    assert_eq!(rig.export.backend().snapshot()[3 * 512], 3, "the write did not land");
    let (a, _) = rig.ata(AtaRepr::command(AtaCommand::FlushCacheExt, 0), &[]);
    assert_eq!(status(&a).1, AtaError::empty(), "a flush changes nothing and is answered");
    let (a, data) = rig.ata(AtaRepr::command(AtaCommand::IdentifyDevice, 1), &[]);
    assert_eq!((status(&a).1, data.len()), (AtaError::empty(), 512));

    // Reading the config string and the lists is answered; changing them is refused.
    assert_eq!(config(&mut rig, ConfigCommand::Read, b""), Some((None, vec![])));
    for command in [ConfigCommand::Set, ConfigCommand::ForceSet] {
        assert_eq!(config(&mut rig, command, b"mine").map(|a| a.0), Some(Some(ErrorCode::TargetReserved)));
    }
    assert_eq!(rig.export.config_string(), b"");
    assert_eq!(mask(&mut rig, HOST, MaskCommand::Read, &[]), Some((MaskError::None, vec![])));
    let edit = BodyRepr::Mask(MaskRepr {
        command: MaskCommand::Edit,
        error: MaskError::None,
        directives: &[Directive::new(DirectiveCommand::Add, HOST)],
    });
    assert_eq!(aoe_error(&rig.send(edit).unwrap()), Some(ErrorCode::TargetReserved));
    assert!(rig.export.mask().is_empty());
    assert_eq!(reserve(&mut rig, HOST, ReserveCommand::Read, &[]), (None, vec![]));
    for command in [ReserveCommand::Set, ReserveCommand::ForceSet] {
        assert_eq!(reserve(&mut rig, HOST, command, &[HOST]).0, Some(ErrorCode::TargetReserved));
    }
    assert!(rig.export.reservations().is_empty());
}

#[test]
fn a_denied_initiator_gets_no_answer_and_the_default_covers_the_rest() {
    let third = MacAddr([2, 0, 0, 0, 0, 0x40]);
    let read = BodyRepr::Ata { header: AtaRepr::read(0, 1, true), data: &[] };
    let query = BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""));
    let mut rig = ruled(Access::Allow);
    assert!(rig.send_from(OTHER, HeaderRepr::request(1, 2, 1), query).is_none());
    assert!(rig.send_from(OTHER, HeaderRepr::request(1, 2, 1), read).is_none());
    assert!(rig.send_from(third, HeaderRepr::request(1, 2, 1), read).is_some());
    let (a, _) = {
        let answer = rig
            .send_from(
                third,
                HeaderRepr::request(1, 2, 1),
                BodyRepr::Ata { header: AtaRepr::write(0, 1, true), data: &[9; 512] },
            )
            .unwrap();
        let Body::Ata { header, data } = Frame::parse(&answer).unwrap().body else { panic!() };
        (AtaRepr::parse(header), data.to_vec())
    };
    assert_eq!(status(&a).1, AtaError::empty(), "the default allows writes");

    let mut rig = ruled(Access::Deny);
    assert!(rig.send_from(third, HeaderRepr::request(1, 2, 1), query).is_none(), "denied by default");
    assert!(rig.send(query).is_some(), "HOST's rule still lets it read");
}

#[test]
fn the_mask_and_the_rules_both_apply() {
    // OTHER is denied by the rules even though the mask names it.
    let mut config = ExportConfig::new(1, 2);
    config.mask = vec![OTHER, HOST];
    config.access = ruled(Access::Allow).export.config().access.clone();
    let mut rig = Rig::with(config);
    let query = BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""));
    assert!(rig.send_from(OTHER, HeaderRepr::request(1, 2, 1), query).is_none());
    // A MAC the rules allow but the mask leaves out gets nothing either.
    let third = MacAddr([2, 0, 0, 0, 0, 0x40]);
    assert!(rig.send_from(third, HeaderRepr::request(1, 2, 1), query).is_none());
    assert!(rig.send(query).is_some());
}

#[test]
fn the_state_initiators_set_is_read_restored_and_versioned() {
    let mut rig = Rig::new();
    let v0 = rig.export.state_version();
    assert_eq!(rig.export.state(), ExportState::default());

    config(&mut rig, ConfigCommand::Set, b"host=db1").unwrap();
    let v1 = rig.export.state_version();
    assert_ne!(v1, v0, "setting the config string");
    config(&mut rig, ConfigCommand::Set, b"host=db1").unwrap();
    config(&mut rig, ConfigCommand::Read, b"").unwrap();
    assert_eq!(rig.export.state_version(), v1, "the same string again, or a read, changes nothing");
    mask(&mut rig, HOST, MaskCommand::Edit, &[Directive::new(DirectiveCommand::Add, HOST)]).unwrap();
    let v2 = rig.export.state_version();
    assert_ne!(v2, v1, "a mask edit");
    mask(&mut rig, HOST, MaskCommand::Edit, &[Directive::new(DirectiveCommand::Add, HOST)]).unwrap();
    assert_eq!(rig.export.state_version(), v2, "adding a MAC already there");
    reserve(&mut rig, HOST, ReserveCommand::Set, &[HOST]);
    assert_ne!(rig.export.state_version(), v2, "a reservation");

    let state = rig.export.state();
    assert_eq!(
        state,
        ExportState { config_string: b"host=db1".to_vec(), mask: vec![HOST], reserve: vec![HOST] }
    );

    // A new export (a restart) takes the state back and behaves as the old one did.
    let mut again = Rig::new();
    again.export.restore(state.clone()).unwrap();
    assert_eq!(again.export.state(), state);
    assert!(mask(&mut again, OTHER, MaskCommand::Read, &[]).is_none(), "the mask is enforced");
    assert_eq!(config(&mut again, ConfigCommand::Read, b""), Some((None, b"host=db1".to_vec())));

    // What the protocol cannot carry is refused whole.
    let long = ExportState { config_string: vec![b'x'; 1025], ..ExportState::default() };
    assert_eq!(again.export.restore(long), Err(StateError::ConfigStringTooLong(1025)));
    let many = ExportState { reserve: vec![HOST; MAX_LIST_ENTRIES + 1], ..ExportState::default() };
    assert_eq!(again.export.restore(many), Err(StateError::ListTooLong { list: "reserve", len: 129 }));
    assert_eq!(again.export.state(), state);
}

#[test]
fn group_addresses_are_never_initiators() {
    let mut rig = Rig::new();
    let query = BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""));
    for src in [MacAddr::BROADCAST, MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]), MacAddr([0x33, 0x33, 0, 0, 0, 1])] {
        assert!(
            rig.send_from(src, HeaderRepr::request(1, 2, 1), query).is_none(),
            "{src}: no answer to everyone"
        );
    }
    let group = Directive::new(DirectiveCommand::Add, MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]));
    assert_eq!(mask(&mut rig, HOST, MaskCommand::Edit, &[group]), Some((MaskError::BadDirective, vec![])));
    assert_eq!(
        reserve(&mut rig, HOST, ReserveCommand::Set, &[HOST, MacAddr::BROADCAST]).0,
        Some(ErrorCode::BadArgument)
    );
    assert!(rig.export.reservations().is_empty());
}

/// A backend whose every read, write and flush fails with one OS error.
struct Failing(i32);

impl Backend for Failing {
    fn len(&self) -> u64 {
        SECTORS * 512
    }
    fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(self.0))
    }
    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(self.0))
    }
    fn flush(&self) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(self.0))
    }
}

#[test]
fn store_errors_become_registers_that_say_why() {
    let (ok, err, df) =
        (AtaStatus::DRDY, AtaStatus::DRDY | AtaStatus::ERR, AtaStatus::DRDY | AtaStatus::ERR | AtaStatus::DF);
    let _ = ok;
    let cases = [
        (libc::ENOSPC, (df, AtaError::UNC), (df, AtaError::UNC), (df, AtaError::UNC)),
        (libc::EROFS, (df, AtaError::ABRT), (df, AtaError::ABRT), (df, AtaError::ABRT)),
        (libc::EIO, (err, AtaError::UNC), (err, AtaError::UNC), (df, AtaError::ABRT)),
    ];
    for (errno, read, write, flush) in cases {
        let port = Port::new(TARGET, 1500);
        let mut export = Export::new(ExportConfig::new(1, 2), Failing(errno));
        let mut run = |header: AtaRepr, data: &[u8]| {
            let mut buf = vec![0u8; 1514];
            let len = FrameRepr {
                dst: TARGET,
                src: HOST,
                header: HeaderRepr::request(1, 2, 9),
                body: BodyRepr::Ata { header, data },
            }
            .emit_padded(&mut buf)
            .unwrap();
            let request = Received::parse(&buf[..len]).unwrap();
            let mut out = vec![0u8; 1514];
            let outcome = export.handle(&port, &request, &mut out).unwrap();
            let n = outcome.complete(export.backend(), &mut out).unwrap().unwrap();
            let Body::Ata { header, data } = Frame::parse(&out[..n]).unwrap().body else { panic!() };
            assert!(data.iter().all(|&b| b == 0), "a failed read carries no sectors");
            status(&AtaRepr::parse(header))
        };
        assert_eq!(run(AtaRepr::read(1, 1, true), &[]), read, "read, errno {errno}");
        assert_eq!(run(AtaRepr::write(1, 1, true), &[7; 512]), write, "write, errno {errno}");
        assert_eq!(run(AtaRepr::command(AtaCommand::FlushCacheExt, 0), &[]), flush, "flush, errno {errno}");
    }
}

#[test]
fn a_truncated_file_answers_idnf_past_its_new_end_and_identify_follows() {
    use aoe_target::backend::{FileBackend, FileOptions};
    let path = std::env::temp_dir().join(format!("aoe-engine-trunc-{}.img", std::process::id()));
    std::fs::write(&path, vec![7u8; 64 * 512]).unwrap();
    let port = Port::new(TARGET, 9000);
    let mut export =
        Export::new(ExportConfig::new(1, 2), FileBackend::open(&path, FileOptions::default()).unwrap());
    let run = |export: &mut Export<FileBackend>, header: AtaRepr| {
        let mut buf = vec![0u8; 9014];
        let body = BodyRepr::Ata { header, data: &[] };
        let len = FrameRepr { dst: TARGET, src: HOST, header: HeaderRepr::request(1, 2, 9), body }
            .emit_padded(&mut buf)
            .unwrap();
        let request = Received::parse(&buf[..len]).unwrap();
        let mut out = vec![0u8; 9014];
        let outcome = export.handle(&port, &request, &mut out).unwrap();
        let n = outcome.complete(export.backend(), &mut out).unwrap().unwrap();
        let Body::Ata { header, data } = Frame::parse(&out[..n]).unwrap().body else { panic!() };
        (status(&AtaRepr::parse(header)), data.to_vec())
    };
    assert_eq!(run(&mut export, AtaRepr::read(40, 8, true)).0, (AtaStatus::DRDY, AtaError::empty()));

    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(32 * 512).unwrap();
    // A server looks every second (Server::check_sizes); here, at once.
    assert_eq!(export.backend().refresh_len().unwrap(), 32 * 512);
    let (registers, _) = run(&mut export, AtaRepr::read(40, 8, true));
    assert_eq!(registers, (AtaStatus::DRDY | AtaStatus::ERR, AtaError::IDNF | AtaError::ABRT));
    assert_eq!(export.sectors(), 32);
    let (registers, data) = run(&mut export, AtaRepr::command(AtaCommand::IdentifyDevice, 1));
    assert_eq!(
        (registers.1, Identify::parse(&data).map(|id| id.sectors).ok()),
        (AtaError::empty(), Some(32))
    );
    let (registers, data) = run(&mut export, AtaRepr::read(24, 8, true));
    assert_eq!(
        (registers, data),
        ((AtaStatus::DRDY, AtaError::empty()), vec![7u8; 8 * 512]),
        "what is left reads"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn announcement_is_a_broadcast_config_answer() {
    let rig = Rig::new();
    let mut out = [0u8; 1514];
    let n = rig.export.announce(&rig.port, &mut out).unwrap();
    let f = Frame::parse(&out[..n]).unwrap();
    assert_eq!(n, 60);
    assert_eq!(f.ethernet.dst, MacAddr::BROADCAST);
    assert!(f.header.is_response());
    assert!(matches!(f.body, Body::Config { .. }));
}

#[test]
fn export_capacity_is_whole_sectors() {
    let e = Export::new(ExportConfig::new(0, 0), MemoryBackend::new(1000));
    assert_eq!(e.sectors(), 1);
    assert_eq!(e.backend().len(), 1000);
}

/// `handle` as the engine says it: why a frame is ignored, which requests wait for sector
/// I/O, and that an answer buffer too small is an error, not a silent drop.
#[test]
fn outcomes_name_what_is_left_to_do() {
    use aoe_proto::EmitError;
    use aoe_target::export::{Ignored, Outcome, SectorOp};
    let mut rig = Rig::new();
    let emit = |src: MacAddr, header: HeaderRepr, body: BodyRepr<'_>| {
        let mut buf = vec![0u8; 9014];
        let len = FrameRepr { dst: TARGET, src, header, body }.emit_padded(&mut buf).unwrap();
        buf.truncate(len);
        buf
    };
    /// An outcome without the request it borrows from.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Ignored(Ignored),
        Answered(usize),
        NeedsIo(SectorOp, u64, usize),
    }
    let outcome = |rig: &mut Rig, frame: &[u8], out_len: usize| {
        let request = Received::parse(frame).unwrap();
        let mut out = vec![0u8; out_len];
        rig.export.handle(&rig.port, &request, &mut out).map(|o| match o {
            Outcome::NeedsIo(io) => Seen::NeedsIo(io.op(), io.offset(), io.len()),
            Outcome::Answered(n) => Seen::Answered(n),
            Outcome::Ignored(why) => Seen::Ignored(why),
        })
    };
    let read_cfg = BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""));
    let mut response = HeaderRepr::request(1, 2, 1);
    response.flags = Flags::RESPONSE;
    let cases = [
        (emit(HOST, response, read_cfg), Ignored::Response),
        (emit(HOST, HeaderRepr::request(1, 3, 1), read_cfg), Ignored::NotAddressed),
        (emit(HOST, HeaderRepr::request(2, 2, 1), read_cfg), Ignored::NotAddressed),
        (
            emit(
                HOST,
                HeaderRepr::request(1, 2, 1),
                BodyRepr::Config(ConfigRepr::request(ConfigCommand::TestExact, b"x")),
            ),
            Ignored::ConfigMismatch,
        ),
    ];
    for (frame, why) in &cases {
        assert_eq!(outcome(&mut rig, frame, 1514), Ok(Seen::Ignored(*why)));
    }
    let read = emit(
        HOST,
        HeaderRepr::request(1, 2, 1),
        BodyRepr::Ata { header: AtaRepr::read(3, 2, true), data: &[] },
    );
    assert_eq!(outcome(&mut rig, &read, 1514), Ok(Seen::NeedsIo(SectorOp::Read, 3 * 512, 1024)));
    let data = vec![7u8; 512];
    let write = emit(
        HOST,
        HeaderRepr::request(1, 2, 1),
        BodyRepr::Ata { header: AtaRepr::write(5, 1, true), data: &data },
    );
    assert_eq!(outcome(&mut rig, &write, 1514), Ok(Seen::NeedsIo(SectorOp::Write, 5 * 512, 512)));
    let flush = emit(
        HOST,
        HeaderRepr::request(1, 2, 1),
        BodyRepr::Ata { header: AtaRepr::command(AtaCommand::FlushCacheExt, 0), data: &[] },
    );
    assert_eq!(outcome(&mut rig, &flush, 1514), Ok(Seen::NeedsIo(SectorOp::Flush, 0, 0)));
    // IDENTIFY needs 36 + 512 bytes.
    let identify = emit(
        HOST,
        HeaderRepr::request(1, 2, 1),
        BodyRepr::Ata { header: AtaRepr::command(AtaCommand::IdentifyDevice, 1), data: &[] },
    );
    assert_eq!(outcome(&mut rig, &identify, 100), Err(EmitError::BufferTooSmall { need: 548, got: 100 }));
    assert_eq!(outcome(&mut rig, &identify, 548), Ok(Seen::Answered(548)));
    // A masked initiator is ignored once the mask holds someone else.
    rig.export = Export::new(
        ExportConfig { mask: vec![OTHER], ..ExportConfig::new(1, 2) },
        MemoryBackend::new(SECTORS as usize * 512),
    );
    let masked = emit(HOST, HeaderRepr::request(1, 2, 1), read_cfg);
    assert_eq!(outcome(&mut rig, &masked, 1514), Ok(Seen::Ignored(Ignored::Masked)));
}
