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
    let out = server.take_output();
    assert!(out.len() >= wire::Greeting::LEN);
});

fn check(server: &mut Server, event: Event) {
    let read_only = server.config().export.read_only;
    let fits = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|end| end <= SIZE);
    match event {
        Event::Read { handle, offset, len } => {
            assert!(len >= 1 && len <= MAX && fits(offset, len.into()));
            server.reply_read(handle, offset, &vec![0u8; len as usize]);
        }
        Event::Write { handle, offset, data, .. } => {
            assert!(!read_only && !data.is_empty() && data.len() <= MAX as usize);
            assert!(fits(offset, data.len() as u64));
            server.reply_ok(handle);
        }
        Event::WriteZeroes { handle, offset, len, .. } => {
            assert!(!read_only && len >= 1 && fits(offset, len.into()));
            server.reply_error(handle, wire::EIO);
        }
        Event::Flush { handle } => server.reply_ok(handle),
        Event::Ready { .. } => assert!(server.replies().is_some()),
        Event::Disconnect => assert!(server.is_closed()),
    }
    // Replies accumulate only as fast as requests arrive; drain them like a writer would.
    if server.in_transmission() {
        server.take_output();
    }
}
