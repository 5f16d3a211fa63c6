//! Any bytes from a server into the NBD client state machine: it never panics, and every
//! reply it yields answers a request in flight, once, with as many bytes as that request read.
//!
//! Input: byte 0 picks the options (bit 0: start after a canned handshake so the fuzzer
//! reaches the transmission phase at once), byte 1 the size of the pieces fed to `receive`,
//! and the rest is what the server sends.
#![no_main]

use std::collections::BTreeMap;

use aoe_nbd::client::{Handshake, Request, RequestKind, Transmission};
use libfuzzer_sys::fuzz_target;

/// NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES; NBD_REP_INFO (NBD_INFO_EXPORT: 1 MiB,
/// HAS_FLAGS | SEND_FLUSH), NBD_REP_ACK.
fn canned() -> Vec<u8> {
    let mut b = b"NBDMAGICIHAVEOPT\x00\x03".to_vec();
    let reply = |b: &mut Vec<u8>, kind: u32, data: &[u8]| {
        b.extend_from_slice(&0x0003_e889_0455_65a9u64.to_be_bytes());
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
    };
    let mut info = 0u16.to_be_bytes().to_vec();
    info.extend_from_slice(&(1u64 << 20).to_be_bytes());
    info.extend_from_slice(&5u16.to_be_bytes());
    reply(&mut b, 3, &info);
    reply(&mut b, 1, &[]);
    b
}

fn requests(t: &mut Transmission, sent: &mut BTreeMap<u64, (RequestKind, u32)>) {
    for (i, request) in [Request::read(0, 512), Request::read(4096, 1024), Request::write(512, 512), Request::flush()]
        .into_iter()
        .enumerate()
    {
        if let Ok((cookie, header)) = t.request(request) {
            assert_eq!(header.len(), 28);
            assert!(sent.insert(cookie, (request.kind, request.len)).is_none(), "cookie {cookie} twice ({i})");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [opts, cut, server @ ..] = input else { return };
    let mut bytes = if opts & 1 != 0 { canned() } else { Vec::new() };
    bytes.extend_from_slice(server);
    let cut = usize::from(*cut).max(1);
    let mut handshake = Handshake::new("disk").unwrap();
    let mut transmission: Option<Transmission> = None;
    let mut sent = BTreeMap::new();
    for piece in bytes.chunks(cut) {
        match &mut transmission {
            None => match handshake.receive(piece) {
                Ok(Some(mut t)) => {
                    let _ = handshake.take_output();
                    requests(&mut t, &mut sent);
                    transmission = Some(t);
                }
                Ok(None) => {
                    let _ = handshake.take_output();
                    assert!(handshake.wants() >= 1);
                }
                Err(_) => return,
            },
            Some(t) => {
                if t.receive(piece).is_err() {
                    return;
                }
                while let Some(reply) = t.poll_reply() {
                    let (kind, len) = sent.remove(&reply.cookie).expect("a reply for a request in flight, once");
                    assert_eq!(reply.kind, kind);
                    if let Ok(data) = &reply.result {
                        let want = if kind == RequestKind::Read { len as usize } else { 0 };
                        assert_eq!(data.len(), want);
                    }
                }
                if sent.is_empty() {
                    requests(t, &mut sent);
                }
            }
        }
    }
});
