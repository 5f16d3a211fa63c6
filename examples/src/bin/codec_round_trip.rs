//! A codec round trip: build an aoeping-style discovery frame and a target's answer,
//! parse both back and print what they say.

use aoe_proto::{
    Body, BodyRepr, ConfigCommand, ConfigRepr, Flags, Frame, FrameRepr, HeaderRepr, MacAddr, SHELF_BROADCAST,
    SLOT_BROADCAST,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let initiator = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    let target = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

    let mut query = [0u8; 64];
    let len = FrameRepr {
        dst: MacAddr::BROADCAST,
        src: initiator,
        header: HeaderRepr::request(SHELF_BROADCAST, SLOT_BROADCAST, 1),
        body: BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b"")),
    }
    .emit_padded(&mut query)?;
    let request = Frame::parse(&query[..len])?;
    println!(
        "query:  {len} bytes, to {} shelf {:#x} slot {:#x}",
        request.ethernet.dst,
        request.header.shelf(),
        request.header.slot()
    );

    let mut answer = [0u8; 64];
    let len = FrameRepr {
        dst: initiator,
        src: target,
        header: HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 1 },
        body: BodyRepr::Config(ConfigRepr {
            buffer_count: 16,
            firmware: 0x4100,
            sector_count: aoe_proto::max_sectors(9000),
            aoe_version: 1,
            command: ConfigCommand::Read,
            string: b"demo",
        }),
    }
    .emit_padded(&mut answer)?;
    let frame = Frame::parse(&answer[..len])?;
    if let Body::Config { header, string } = frame.body {
        println!(
            "answer: {len} bytes from {}: e{}.{} bufcnt {} sectors/frame {} config {:?}",
            frame.ethernet.src,
            frame.header.shelf(),
            frame.header.slot(),
            header.buffer_count.get(),
            header.sector_count,
            String::from_utf8_lossy(string)
        );
    }
    Ok(())
}
