//! Random sequences of reads, writes and flushes through the engine match a plain byte
//! vector, including requests that straddle or pass the end of the export window, and no
//! byte outside the window is ever touched.

use aoe_proto::ata::{AtaError, AtaStatus};
use aoe_proto::{AtaCommand, AtaRepr, Body, BodyRepr, Frame, FrameRepr, HeaderRepr, MacAddr, SECTOR_SIZE};
use aoe_target::backend::{Backend, MemoryBackend, Window};
use aoe_target::export::{Export, ExportConfig, Port};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn engine_matches_a_byte_vector(ops in proptest::collection::vec(op(), 1..60)) {
        let window_len = SECTORS as usize * SECTOR_SIZE;
        let mut disk = vec![0xA5u8; GUARD + window_len + GUARD];
        for (i, b) in disk[GUARD..GUARD + window_len].iter_mut().enumerate() {
            *b = (i / 7) as u8;
        }
        let window = Window::new(MemoryBackend::from_vec(disk.clone()), GUARD as u64, Some(window_len as u64)).unwrap();
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
            let len = FrameRepr { dst: T, src: I, header: HeaderRepr::request(0, 0, tag as u32), body: BodyRepr::Ata { header, data } }
                .emit_padded(&mut request)
                .unwrap();
            let n = export.handle(&port, &request[..len], &mut answer).expect("every ATA request is answered");
            let frame = Frame::parse(&answer[..n]).unwrap();
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
        let after = export.backend().inner().snapshot();
        prop_assert_eq!(&after[..GUARD], &disk[..GUARD], "guard before the window touched");
        prop_assert_eq!(&after[GUARD + window_len..], &disk[GUARD + window_len..], "guard after the window touched");
        prop_assert_eq!(&after[GUARD..GUARD + window_len], &model[..]);
        prop_assert_eq!(export.backend().len(), window_len as u64);
    }
}
