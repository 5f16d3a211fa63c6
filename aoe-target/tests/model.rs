//! Random sequences of reads, writes and flushes through the engine match a plain byte
//! vector, including requests that straddle or pass the end of the export window, and no
//! byte outside the window is ever touched: with the export in memory and its sector I/O
//! done inline, in a mapped file whose read answers leave their sectors in the mapping, and
//! with sector I/O detached from its request and completed apart from the engine.

use aoe_proto::ata::{AtaError, AtaStatus};
use aoe_proto::{AtaCommand, AtaRepr, Body, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr, SECTOR_SIZE};
use aoe_target::backend::{Backend, FileBackend, FileOptions, MemoryBackend, Window};
use aoe_target::export::{Export, ExportConfig, Outcome, Port, Received, SectorOp};
use aoe_testkit::data::TempImage;
use proptest::prelude::*;

const GUARD: usize = 3 * SECTOR_SIZE;
const SECTORS: u64 = 40;
const T: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const I: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

#[derive(Debug, Clone)]
enum Op {
    Read { lba: u64, count: u8, ext: bool },
    Write { lba: u64, count: u8, ext: bool, seed: u8 },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    // LBAs run past the end so that some requests straddle it; counts include 0 and one
    // more than the frame carries.
    prop_oneof![
        (0..SECTORS + 4, 0u8..=18, any::<bool>()).prop_map(|(lba, count, ext)| Op::Read { lba, count, ext }),
        (0..SECTORS + 4, 0u8..=18, any::<bool>(), any::<u8>())
            .prop_map(|(lba, count, ext, seed)| Op::Write { lba, count, ext, seed }),
        Just(Op::Flush),
    ]
}

/// Where the export's bytes live and how its sector I/O is done: memory, inline
/// ([`Outcome::complete`]); or a mapped file, reads answered with tails
/// ([`SectorIo::tail`](aoe_target::export::SectorIo::tail)); or memory, the I/O detached
/// from its request and completed later ([`SectorIo::detach`](aoe_target::export::SectorIo::detach)).
#[derive(Debug, Clone, Copy)]
enum Store {
    Memory,
    MappedFile,
    Deferred,
}

/// True for an answer padded to the Ethernet minimum: headers only.
fn frame_is_short(frame: &[u8]) -> bool {
    frame.len() == 60
}

fn check(ops: &[Op], store: Store) -> Result<(), TestCaseError> {
    let window_len = SECTORS as usize * SECTOR_SIZE;
    let mut disk = vec![0xA5u8; GUARD + window_len + GUARD];
    for (i, b) in disk[GUARD..GUARD + window_len].iter_mut().enumerate() {
        *b = (i / 7) as u8;
    }
    let image = TempImage::zeroed(disk.len()).unwrap();
    let backend: Box<dyn Backend> = match store {
        Store::Memory | Store::Deferred => Box::new(MemoryBackend::from_vec(disk.clone())),
        Store::MappedFile => {
            std::fs::write(image.path(), &disk).unwrap();
            let file = FileBackend::open(image.path(), FileOptions::default()).unwrap();
            assert!(file.mapping().is_some(), "a file on the temporary directory is mapped");
            Box::new(file)
        }
    };
    let window = Window::new(backend, GUARD as u64, Some(window_len as u64)).unwrap();
    let mut export = Export::new(ExportConfig::new(0, 0), window);
    let port = Port::new(T, 9000);
    let mut model = disk[GUARD..GUARD + window_len].to_vec();
    let (mut request, mut answer) = (vec![0u8; 10_000], vec![0u8; 9014]);

    for (tag, op) in ops.iter().enumerate() {
        let payload: Vec<u8>;
        let (header, data, expect_ok) = match *op {
            Op::Read { lba, count, ext } => {
                let ok = (1..=17).contains(&count) && lba + u64::from(count) <= SECTORS;
                (AtaRepr::read(lba, count, ext), &[][..], ok)
            }
            Op::Write { lba, count, ext, seed } => {
                payload = (0..usize::from(count) * SECTOR_SIZE).map(|i| seed.wrapping_add(i as u8)).collect();
                let ok = (1..=17).contains(&count) && lba + u64::from(count) <= SECTORS;
                (AtaRepr::write(lba, count, ext), &payload[..], ok)
            }
            Op::Flush => (AtaRepr::command(AtaCommand::FlushCacheExt, 0), &[][..], true),
        };
        let len = FrameRepr {
            dst: T,
            src: I,
            header: HeaderRepr::request(0, 0, tag as u32),
            body: BodyRepr::Ata { header, data },
        }
        .emit_padded(&mut request)
        .unwrap();
        let received = Received::parse(&request[..len]).unwrap();
        // Whatever the buffer held before must not leak into the answer.
        answer.fill(0xEE);
        let outcome = export.handle(&port, &received, &mut answer).unwrap();
        prop_assert!(!matches!(outcome, Outcome::Ignored(_)), "every ATA request is answered");
        let needs_io = matches!(outcome, Outcome::NeedsIo(_));
        prop_assert_eq!(needs_io, expect_ok, "I/O asked for every good read, write and flush, only");
        let whole = match (store, outcome) {
            (Store::Memory, outcome) => {
                let n = outcome.complete(export.backend(), &mut answer).unwrap().unwrap();
                answer[..n].to_vec()
            }
            (Store::MappedFile, Outcome::NeedsIo(io)) => {
                let tail = io.tail(export.backend());
                prop_assert_eq!(
                    tail.is_some(),
                    io.op() == SectorOp::Read,
                    "a tail for every good read and nothing else"
                );
                match tail {
                    Some(tail) => [&answer[..36], tail.bytes()].concat(),
                    None => {
                        let n = io.complete(export.backend(), &mut answer).unwrap();
                        answer[..n].to_vec()
                    }
                }
            }
            (Store::Deferred, Outcome::NeedsIo(io)) => {
                let io = io.detach(&mut answer).unwrap();
                // The request is gone by the time the I/O is done.
                request.fill(0x77);
                let n = io.complete(export.shared_backend().as_ref(), &mut answer).unwrap();
                answer[..n].to_vec()
            }
            (_, Outcome::Answered(n)) => answer[..n].to_vec(),
            (_, Outcome::Ignored(_)) => unreachable!(),
        };
        let frame = Frame::parse(&whole[..]).unwrap();
        if frame_is_short(&whole) {
            prop_assert!(whole[whole.len().min(36)..].iter().all(|&b| b == 0), "padding is zeros");
        }
        prop_assert_eq!(frame.header.tag(), tag as u32);
        let Body::Ata { header: a, data: got } = frame.body else { panic!("not ATA") };
        let status = AtaStatus::from_bits_retain(a.cmd_status);
        prop_assert_eq!(status.contains(AtaStatus::ERR), !expect_ok, "{:?} -> {:?}", op, status);
        if !expect_ok {
            let error = AtaError::from_bits_retain(a.err_feature);
            prop_assert!(error.contains(AtaError::ABRT));
            continue;
        }
        match *op {
            Op::Read { lba, count, .. } => {
                let at = lba as usize * SECTOR_SIZE;
                prop_assert_eq!(got, &model[at..at + usize::from(count) * SECTOR_SIZE]);
            }
            Op::Write { lba, .. } => {
                let at = lba as usize * SECTOR_SIZE;
                model[at..at + data.len()].copy_from_slice(data);
            }
            Op::Flush => {}
        }
    }
    let mut after = vec![0; disk.len()];
    export.backend().inner().read_at(&mut after, 0).unwrap();
    if let Store::MappedFile = store {
        drop(export);
        prop_assert_eq!(
            &std::fs::read(image.path()).unwrap(),
            &after,
            "the file holds what the backend reads"
        );
    }
    prop_assert_eq!(&after[..GUARD], &disk[..GUARD], "guard before the window touched");
    prop_assert_eq!(
        &after[GUARD + window_len..],
        &disk[GUARD + window_len..],
        "guard after the window touched"
    );
    prop_assert_eq!(&after[GUARD..GUARD + window_len], &model[..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn engine_matches_a_byte_vector(ops in proptest::collection::vec(op(), 1..60)) {
        check(&ops, Store::Memory)?;
    }

    /// The same through a mapped file, reads answered with tails of the mapping.
    #[test]
    fn engine_with_tails_matches_a_byte_vector(ops in proptest::collection::vec(op(), 1..60)) {
        check(&ops, Store::MappedFile)?;
    }

    /// The same with every read, write and flush deferred and then completed.
    #[test]
    fn deferred_engine_matches_a_byte_vector(ops in proptest::collection::vec(op(), 1..60)) {
        check(&ops, Store::Deferred)?;
    }
}
