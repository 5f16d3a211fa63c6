//! Any bytes from a client into the NBD server state machine: it never panics, every event
//! it yields fits the export (in bounds, within the maximum payload, writable when it
//! writes), and the server's own output is well framed.
//!
//! Input: byte 0 picks the options (bit 0: start after a canned handshake so the fuzzer
//! reaches the transmission phase at once; bit 1: read-only export; bit 2: structured
//! replies in the canned handshake), byte 1 the size of the pieces fed to `receive`, and the
//! rest is what the client sends.
#![no_main]

use aoe_nbd::server::{Config, Event, Export, Server};
use aoe_nbd::wire::{self, ClientFlags, ClientFlagsField, OptionHeader, OptionType};
use libfuzzer_sys::fuzz_target;
use zerocopy::IntoBytes;

const SIZE: u64 = 1 << 20;
const MAX: u32 = 256 * 1024;

fuzz_target!(|input: &[u8]| {
    let [opts, cut, client @ ..] = input else { return };
    let mut export = Export::new("e1.0", SIZE);
    export.read_only = opts & 2 != 0;
    let mut config = Config::new(export);
    config.max_payload = MAX;
    let mut server = Server::new(config);
    assert_eq!(&server.take_output()[..16], b"NBDMAGICIHAVEOPT");
    let mut bytes = Vec::new();
    if opts & 1 != 0 {
        bytes.extend_from_slice(ClientFlagsField::new(ClientFlags::all()).as_bytes());
        if opts & 4 != 0 {
            bytes.extend_from_slice(OptionHeader::new(OptionType::StructuredReply, 0).as_bytes());
        }
        bytes.extend_from_slice(OptionHeader::new(OptionType::ExportName, 0).as_bytes());
    }
    bytes.extend_from_slice(client);
    let cut = usize::from(*cut).max(1);
    for piece in bytes.chunks(cut) {
        if server.receive(piece).is_err() {
            break;
        }
        while let Some(event) = server.poll_event() {
            check(&mut server, event);
        }
    }
    // Whatever is left is well framed: option replies before transmission, replies after.
    check_output(&server.take_output(), server.in_transmission() || server.replies().is_some());
});

/// Walks the server's output: every message starts with its magic and its length fits.
fn check_output(mut out: &[u8], transmission: bool) {
    while !out.is_empty() {
        if let Ok((h, rest)) = wire::OptionReplyHeader::parse(out) {
            out = rest.get(h.length() as usize..).expect("option reply longer than the output");
        } else if let Ok((_, rest)) = wire::SimpleReplyHeader::parse(out) {
            assert!(transmission, "a transmission reply during the handshake");
            // Simple replies the server makes itself are errors and carry no data.
            out = rest;
        } else if let Ok((h, rest)) = wire::StructuredReplyHeader::parse(out) {
            assert!(transmission, "a transmission reply during the handshake");
            out = rest.get(h.length() as usize..).expect("chunk longer than the output");
        } else {
            // The reply to NBD_OPT_EXPORT_NAME has no magic: size, flags, maybe zeroes.
            let (r, rest) = wire::ExportNameReply::parse(out).expect("unframed output");
            assert_eq!(r.size(), SIZE);
            // No message starts with a zero byte, so zeroes here are the 124 reserved ones.
            out = match rest.get(..wire::EXPORT_NAME_ZEROES) {
                Some(z) if z.iter().all(|&b| b == 0) => &rest[wire::EXPORT_NAME_ZEROES..],
                _ => rest,
            };
        }
    }
}

fn check(server: &mut Server, event: Event) {
    // What the server wrote by itself so far (handshake replies, refusals) must be framed.
    let transmission = server.replies().is_some();
    check_output(&server.take_output(), transmission);
    let read_only = server.config().export.read_only;
    let fits = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|end| end <= SIZE);
    // Answers go through the encoder the runtime would use, into a scratch buffer.
    let replies = server.replies();
    let mut out = Vec::new();
    match event {
        Event::Read { handle, offset, len } => {
            assert!(len >= 1 && len <= MAX && fits(offset, len.into()));
            let r = replies.expect("a request before the handshake ended");
            r.read(&mut out, handle, offset, &vec![0u8; len as usize]);
            assert_eq!(out.len(), len as usize + if r.structured() { 28 } else { 16 });
        }
        Event::Write { handle, offset, data, .. } => {
            assert!(!read_only && !data.is_empty() && data.len() <= MAX as usize);
            assert!(fits(offset, data.len() as u64));
            replies.expect("a request before the handshake ended").ok(&mut out, handle);
        }
        Event::WriteZeroes { handle, offset, len, .. } => {
            assert!(!read_only && len >= 1 && fits(offset, len.into()));
            replies.expect("a request before the handshake ended").error(&mut out, handle, wire::EIO);
        }
        Event::Flush { handle } => {
            replies.expect("a request before the handshake ended").ok(&mut out, handle)
        }
        Event::Ready { .. } => assert!(replies.is_some()),
        Event::Disconnect => assert!(server.is_closed()),
    }
}
