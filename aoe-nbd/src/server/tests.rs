use super::*;
use crate::wire::*;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn export() -> Export {
    Export { multi_conn: true, ..Export::new("e1.0", 1 << 20) }
}

fn server(export: Export) -> Server {
    let mut s = Server::new(Config::new(export));
    assert_eq!(s.take_output(), hex("4e42444d41474943 49484156454f5054 0003"));
    s
}

fn events(s: &mut Server) -> Vec<Event> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn option(opt: OptionType, data: &[u8]) -> Vec<u8> {
    let mut v = OptionHeader::new(opt, data.len() as u32).as_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

fn request(cmd: Command, flags: CommandFlags, handle: u64, offset: u64, len: u32) -> Vec<u8> {
    RequestHeader::new(cmd, flags, handle, offset, len).as_bytes().to_vec()
}

/// A server in transmission after the client's flags and EXPORT_NAME.
fn transmitting(export: Export, structured: bool) -> Server {
    let mut s = server(export);
    let mut c = ClientFlagsField::new(ClientFlags::all()).as_bytes().to_vec();
    if structured {
        c.extend(option(OptionType::StructuredReply, &[]));
    }
    c.extend(option(OptionType::ExportName, b""));
    s.receive(&c).unwrap();
    assert_eq!(events(&mut s), [Event::Ready { structured }]);
    s.take_output();
    s
}

fn simple(handle: u64, error: u32) -> Vec<u8> {
    SimpleReplyHeader::new(handle, error).as_bytes().to_vec()
}

/// The bytes nbdinfo (libnbd 1.14) sent to nbdkit 1.32 for `nbdinfo nbd://127.0.0.1:PORT/`,
/// captured with tshark on loopback: flags, STRUCTURED_REPLY, INFO, LIST_META_CONTEXT, GO,
/// a READ of 8 KiB at 0 and DISC.
const NBDINFO_CLIENT: &str = "
    00000003
    49484156454f5054 00000008 00000000
    49484156454f5054 00000006 0000000c 00000000 0003 0003 0001 0002
    49484156454f5054 00000009 00000008 00000000 00000000
    49484156454f5054 00000007 0000000c 00000000 0003 0003 0001 0002
    25609513 0000 0000 0000000000000001 0000000000000000 00002000
    25609513 0000 0002 0000000000000002 0000000000000000 00000000";

#[test]
fn golden_nbdinfo_session() {
    let mut s = server(Export::new("e1.0", 0x10_0000));
    s.receive(&hex(NBDINFO_CLIENT)).unwrap();
    let info_replies = |opt: &str| {
        format!(
            "0003e889045565a9 {opt} 00000003 0000000c 0000 0000000000100000 {flags:04x}
             0003e889045565a9 {opt} 00000003 00000006 0001 65312e30
             0003e889045565a9 {opt} 00000003 0000000e 0003 00000001 00001000 02000000
             0003e889045565a9 {opt} 00000001 00000000",
            flags = 0x4d | 0x800
        )
    };
    let expected = format!(
        "0003e889045565a9 00000008 00000001 00000000
         {}
         0003e889045565a9 00000009 80000001 00000014 {}
         {}",
        info_replies("00000006"),
        b"option not supported".iter().map(|b| format!("{b:02x}")).collect::<String>(),
        info_replies("00000007"),
    );
    assert_eq!(s.take_output(), hex(&expected));
    assert_eq!(
        events(&mut s),
        [
            Event::Ready { structured: true },
            Event::Read { handle: 1, offset: 0, len: 0x2000 },
            Event::Disconnect
        ]
    );
    // The read reply nbdkit sent began with this structured chunk header: one OFFSET_DATA
    // chunk with DONE, offset 0, 8 KiB.
    s.reply_read(1, 0, &[0u8; 0x2000]);
    let out = s.take_output();
    assert_eq!(out[..28], hex("668e33ef 0001 0001 0000000000000001 00002008 0000000000000000"));
    assert_eq!(out.len(), 28 + 0x2000);
    assert!(s.is_closed());
}

/// The bytes `qemu-img info nbd://127.0.0.1:PORT/e1.0` (QEMU 7.2) sent to nbdkit:
/// STRUCTURED_REPLY, SET_META_CONTEXT base:allocation, GO asking for block sizes, a READ of
/// the first sector with a pointer-like handle, and DISC.
const QEMU_IMG_CLIENT: &str = "
    00000003
    49484156454f5054 00000008 00000000
    49484156454f5054 0000000a 0000001f 00000004 65312e30 00000001 0000000f 626173653a616c6c6f636174696f6e
    49484156454f5054 00000007 0000000c 00000004 65312e30 0001 0003
    25609513 0000 0000 000055e7df381e70 0000000000000000 00000200
    25609513 0000 0002 0000000000000000 0000000000000000 00000000";

#[test]
fn golden_qemu_img_session() {
    let mut s = server(Export { read_only: true, ..Export::new("e1.0", 0x10_0000) });
    s.receive(&hex(QEMU_IMG_CLIENT)).unwrap();
    let expected = format!(
        "0003e889045565a9 00000008 00000001 00000000
         0003e889045565a9 0000000a 80000001 00000014 {}
         0003e889045565a9 00000007 00000003 0000000c 0000 0000000000100000 000f
         0003e889045565a9 00000007 00000003 0000000e 0003 00000001 00001000 02000000
         0003e889045565a9 00000007 00000001 00000000",
        b"option not supported".iter().map(|b| format!("{b:02x}")).collect::<String>(),
    );
    assert_eq!(s.take_output(), hex(&expected));
    assert_eq!(
        events(&mut s),
        [
            Event::Ready { structured: true },
            Event::Read { handle: 0x55e7_df38_1e70, offset: 0, len: 512 },
            Event::Disconnect
        ]
    );
}

#[test]
fn export_name_with_and_without_zeroes() {
    for (flags, zeroes) in [(ClientFlags::all(), 0), (ClientFlags::FIXED_NEWSTYLE, 124)] {
        let mut s = server(Export { read_only: true, ..Export::new("e1.0", 4096) });
        let mut c = ClientFlagsField::new(flags).as_bytes().to_vec();
        c.extend(option(OptionType::ExportName, b"e1.0"));
        s.receive(&c).unwrap();
        let mut expected = hex("0000000000001000 000f");
        expected.extend(vec![0u8; zeroes]);
        assert_eq!(s.take_output(), expected);
        assert_eq!(events(&mut s), [Event::Ready { structured: false }]);
        assert_eq!(s.replies(), Some(Replies::new(false)));
    }
}

#[test]
fn export_name_unknown_drops_the_connection() {
    let mut s = server(export());
    let mut c = ClientFlagsField::new(ClientFlags::all()).as_bytes().to_vec();
    c.extend(option(OptionType::ExportName, b"nope"));
    assert_eq!(s.receive(&c), Err(ServerError::UnknownExport));
    assert_eq!(s.receive(b"x"), Err(ServerError::Failed));
}

#[test]
fn bad_client_flags_and_magic() {
    let mut s = server(export());
    assert_eq!(s.receive(&hex("00000004")), Err(ServerError::ClientFlags(4)));
    let mut s = server(export());
    let mut c = hex("00000001");
    c.extend(hex("49484156454f5055 00000001 00000000"));
    assert!(matches!(s.receive(&c), Err(ServerError::Wire(WireError::BadMagic { .. }))));
    let mut s = transmitting(export(), false);
    assert!(matches!(s.receive(&[0u8; 28]), Err(ServerError::Wire(WireError::BadMagic { .. }))));
}

#[test]
fn options_list_unknown_too_big_abort_and_info_errors() {
    let mut s = server(export());
    s.receive(&hex("00000001")).unwrap();
    s.receive(&option(OptionType::List, &[])).unwrap();
    assert_eq!(
        s.take_output(),
        hex("0003e889045565a9 00000003 00000002 00000008 00000004 65312e30
             0003e889045565a9 00000003 00000001 00000000")
    );
    s.receive(&option(OptionType::List, b"x")).unwrap();
    assert_eq!(s.take_output()[12..16], hex("80000003"));
    s.receive(&option(OptionType::StartTls, &[])).unwrap();
    assert_eq!(s.take_output()[12..16], hex("80000001"));
    s.receive(&option(OptionType::Unknown(0x1234), b"abc")).unwrap();
    assert_eq!(s.take_output()[8..16], hex("00001234 80000001"));
    // Too long: skipped without buffering, in pieces, then ERR_TOO_BIG.
    let big = option(OptionType::Info, &vec![7u8; MAX_OPTION_LEN as usize + 1]);
    for piece in big.chunks(1000) {
        s.receive(piece).unwrap();
    }
    assert!(s.partial.capacity() <= 16);
    assert_eq!(s.take_output()[8..16], hex("00000006 80000009"));
    // INFO for another export, and malformed INFO data.
    let mut data = [0u8; 16];
    let n = emit_info_request(b"other", &[], &mut data).unwrap();
    s.receive(&option(OptionType::Info, &data[..n])).unwrap();
    assert_eq!(s.take_output()[12..16], hex("80000006"));
    s.receive(&option(OptionType::Go, &hex("00000009 41"))).unwrap();
    assert_eq!(s.take_output()[12..16], hex("80000003"));
    assert!(!s.in_transmission());
    assert_eq!(s.replies(), None);
    s.receive(&option(OptionType::Abort, &[])).unwrap();
    assert_eq!(s.take_output(), hex("0003e889045565a9 00000002 00000001 00000000"));
    assert_eq!(events(&mut s), [Event::Disconnect]);
    assert!(s.is_closed());
    assert_eq!(s.receive(b"anything after abort"), Ok(()));
}

#[test]
fn requests_are_validated() {
    let mut s = transmitting(export(), false);
    let size = 1u64 << 20;
    let e = CommandFlags::empty();
    let mut c = Vec::new();
    c.extend(request(Command::Read, e, 1, size - 512, 1024)); // past the end
    c.extend(request(Command::Read, e, 2, 0, 0)); // empty
    c.extend(request(Command::Read, e, 3, u64::MAX, 2)); // overflow
    c.extend(request(Command::Read, CommandFlags::NO_HOLE, 4, 0, 512)); // bad flag
    c.extend(request(Command::Write, e, 5, size - 1, 2)); // past the end: payload skipped
    c.extend([0xAA, 0xBB]);
    c.extend(request(Command::Trim, e, 6, 0, 4096));
    c.extend(request(Command::WriteZeroes, CommandFlags::FAST_ZERO, 7, 0, 4096));
    c.extend(request(Command::Flush, e, 8, 0, 1));
    c.extend(request(Command::Write, e, 9, 0, MAX_PAYLOAD + 1)); // too long: skipped
    c.extend(vec![1u8; MAX_PAYLOAD as usize + 1]);
    c.extend(request(Command::BlockStatus, e, 10, 0, 512));
    c.extend(request(Command::Unknown(77), e, 11, 0, 512));
    c.extend(request(Command::Read, CommandFlags::FUA, 12, size - 512, 512)); // fine
    for piece in c.chunks(4096) {
        s.receive(piece).unwrap();
    }
    assert_eq!(events(&mut s), [Event::Read { handle: 12, offset: size - 512, len: 512 }]);
    let expected: Vec<u8> = [
        (1, EINVAL),
        (2, EINVAL),
        (3, EINVAL),
        (4, EINVAL),
        (5, ENOSPC),
        (6, EINVAL),
        (7, ENOTSUP),
        (8, EINVAL),
        (9, EINVAL),
        (10, EINVAL),
        (11, EINVAL),
    ]
    .iter()
    .flat_map(|&(h, e)| simple(h, e))
    .collect();
    assert_eq!(s.take_output(), expected);
}

#[test]
fn read_only_refuses_writes() {
    let mut s = transmitting(Export { read_only: true, ..export() }, true);
    let mut c = request(Command::Write, CommandFlags::FUA, 1, 0, 3);
    c.extend(b"abc");
    c.extend(request(Command::WriteZeroes, CommandFlags::empty(), 2, 0, 3));
    c.extend(request(Command::Flush, CommandFlags::empty(), 3, 0, 0));
    c.extend(request(Command::Read, CommandFlags::empty(), 4, 1 << 20, 1));
    s.receive(&c).unwrap();
    assert_eq!(events(&mut s), [Event::Flush { handle: 3 }]);
    let mut expected = simple(1, EPERM);
    expected.extend(simple(2, EPERM));
    // A refused READ under structured replies is an ERROR chunk with DONE.
    expected.extend(hex("668e33ef 0001 8001 0000000000000004 00000006 00000016 0000"));
    assert_eq!(s.take_output(), expected);
}

#[test]
fn write_fed_byte_by_byte() {
    let mut s = transmitting(export(), false);
    let mut c = request(Command::Write, CommandFlags::FUA, 9, 100, 5);
    c.extend(b"hello");
    c.extend(request(Command::WriteZeroes, CommandFlags::NO_HOLE, 10, 0, 1 << 20));
    c.extend(request(Command::Disc, CommandFlags::empty(), 11, 0, 0));
    c.extend(b"ignored after DISC");
    for b in &c {
        s.receive(core::slice::from_ref(b)).unwrap();
    }
    assert_eq!(
        events(&mut s),
        [
            Event::Write { handle: 9, offset: 100, data: b"hello".to_vec(), fua: true },
            Event::WriteZeroes { handle: 10, offset: 0, len: 1 << 20, fua: false },
            Event::Disconnect,
        ]
    );
    assert!(s.output().is_empty());
}

#[test]
fn replies_simple_and_structured() {
    let r = Replies::new(false);
    let mut out = Vec::new();
    r.read(&mut out, 5, 0, b"ab");
    r.read_error(&mut out, 6, 0);
    r.ok(&mut out, 7);
    r.error(&mut out, 8, ENOSPC);
    let mut expected = simple(5, 0);
    expected.extend(b"ab");
    expected.extend(simple(6, EIO));
    expected.extend(simple(7, 0));
    expected.extend(simple(8, ENOSPC));
    assert_eq!(out, expected);
    let r = Replies::new(true);
    assert_eq!(
        r.read_header(1, 4096, 512).as_bytes(),
        hex("668e33ef 0001 0001 0000000000000001 00000208 0000000000001000")
    );
    let mut out = Vec::new();
    r.read_error(&mut out, 2, EIO);
    assert_eq!(out, hex("668e33ef 0001 8001 0000000000000002 00000006 00000005 0000"));
}

/// One valid transmission request and the event it must become.
#[derive(Debug, Clone)]
enum Op {
    Read(u64, u32),
    Write(u64, Vec<u8>, bool),
    Zero(u64, u32, bool),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let size = 1u64 << 20;
    prop_oneof![
        (0..size - 1)
            .prop_flat_map(move |o| (Just(o), 1..=((size - o).min(70_000) as u32)))
            .prop_map(|(o, l)| Op::Read(o, l)),
        (0..size - 300, proptest::collection::vec(any::<u8>(), 1..300), any::<bool>())
            .prop_map(|(o, d, f)| Op::Write(o, d, f)),
        (0..size / 2, 1..(size / 2) as u32, any::<bool>()).prop_map(|(o, l, f)| Op::Zero(o, l, f)),
        Just(Op::Flush),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), cut in 1usize..64, after_handshake: bool) {
        let mut s = if after_handshake { transmitting(export(), true) } else { server(export()) };
        for piece in bytes.chunks(cut) {
            if s.receive(piece).is_err() {
                break;
            }
        }
        while s.poll_event().is_some() {}
        prop_assert!(s.partial.len() <= MAX_OPTION_LEN as usize);
    }

    #[test]
    fn random_options_never_panic(opts in proptest::collection::vec((0u32..16, proptest::collection::vec(any::<u8>(), 0..40)), 0..20)) {
        let mut s = server(export());
        let mut c = hex("00000003");
        for (o, data) in &opts {
            c.extend(option(OptionType::from(*o), data));
        }
        let _ = s.receive(&c);
        while s.poll_event().is_some() {}
    }

    #[test]
    fn valid_sessions_decode(ops in proptest::collection::vec(op(), 1..40), cut in 1usize..5000, structured: bool) {
        let mut s = transmitting(export(), structured);
        let mut c = Vec::new();
        let mut want = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let h = i as u64 + 1;
            match op.clone() {
                Op::Read(o, l) => {
                    c.extend(request(Command::Read, CommandFlags::empty(), h, o, l));
                    want.push(Event::Read { handle: h, offset: o, len: l });
                }
                Op::Write(o, d, fua) => {
                    let f = if fua { CommandFlags::FUA } else { CommandFlags::empty() };
                    c.extend(request(Command::Write, f, h, o, d.len() as u32));
                    c.extend(&d);
                    want.push(Event::Write { handle: h, offset: o, data: d, fua });
                }
                Op::Zero(o, l, fua) => {
                    let f = if fua { CommandFlags::FUA | CommandFlags::NO_HOLE } else { CommandFlags::empty() };
                    c.extend(request(Command::WriteZeroes, f, h, o, l));
                    want.push(Event::WriteZeroes { handle: h, offset: o, len: l, fua });
                }
                Op::Flush => {
                    c.extend(request(Command::Flush, CommandFlags::empty(), h, 0, 0));
                    want.push(Event::Flush { handle: h });
                }
            }
        }
        for piece in c.chunks(cut) {
            s.receive(piece).unwrap();
        }
        prop_assert_eq!(events(&mut s), want);
        prop_assert!(s.output().is_empty());
    }
}
