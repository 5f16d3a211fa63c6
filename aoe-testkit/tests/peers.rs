//! Real AoE peers (vblade, aoeping) on a private link. Need root and the
//! Debian packages vblade and aoetools; skipped otherwise.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use aoe_testkit::data::{pattern, TempImage};
use aoe_testkit::netns::Link;
use aoe_testkit::packet::{PacketSocket, ETH_P_ALL, ETH_P_AOE};
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{wait_until, Guarded};

const SHELF: u16 = 1;
const SLOT: u8 = 2;
const ETH_HDR: usize = 14;
const AOE_HDR: usize = 10;
const ATA_HDR: usize = 12;
const CMD_ATA: u8 = 0;
const CMD_CONFIG: u8 = 1;
const FLAG_RESPONSE: u8 = 0x08;
const FLAG_ERROR: u8 = 0x04;

/// Ethernet + AoE header of a request from `src` to `dst`.
fn aoe_request(dst: [u8; 6], src: [u8; 6], command: u8, tag: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_AOE.to_be_bytes());
    f.push(0x10); // version 1, no flags
    f.push(0); // error
    f.extend_from_slice(&SHELF.to_be_bytes());
    f.push(SLOT);
    f.push(command);
    f.extend_from_slice(&tag.to_be_bytes());
    f
}

fn query_config(dst: [u8; 6], src: [u8; 6], tag: u32) -> Vec<u8> {
    let mut f = aoe_request(dst, src, CMD_CONFIG, tag);
    // buffer count, firmware version, sector count, version|ccmd (read),
    // string length: all zero in a read request.
    f.extend_from_slice(&[0; 8]);
    f
}

/// An LBA48 ATA command (`aflags` E bit set).
fn ata(dst: [u8; 6], src: [u8; 6], tag: u32, cmd: u8, lba: u64, count: u8) -> Vec<u8> {
    let mut f = aoe_request(dst, src, CMD_ATA, tag);
    f.push(0x40); // aflags: extended (LBA48)
    f.push(0); // feature
    f.push(count);
    f.push(cmd);
    f.extend_from_slice(&lba.to_le_bytes()[..6]);
    f.extend_from_slice(&[0, 0]);
    f
}

fn tag_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[ETH_HDR + 6..ETH_HDR + 10].try_into().unwrap())
}

/// Waits for the response with `tag` from `src`.
fn response(sock: &PacketSocket, src: [u8; 6], tag: u32) -> Vec<u8> {
    let frame = sock
        .recv_matching(Duration::from_secs(3), |f| {
            f.len() >= ETH_HDR + AOE_HDR
                && f[6..12] == src
                && f[12..14] == ETH_P_AOE.to_be_bytes()
                && f[ETH_HDR] & FLAG_RESPONSE != 0
                && tag_of(f) == tag
        })
        .unwrap()
        .unwrap_or_else(|| panic!("no response with tag {tag:#x}"));
    assert_eq!(frame[ETH_HDR] & FLAG_ERROR, 0, "error response {frame:02x?}");
    assert_eq!(frame[ETH_HDR] >> 4, 1, "AoE version");
    assert_eq!(u16::from_be_bytes([frame[ETH_HDR + 2], frame[ETH_HDR + 3]]), SHELF);
    assert_eq!(frame[ETH_HDR + 4], SLOT);
    frame
}

fn start_vblade(link: &Link, image: &TempImage) -> Guarded {
    let mut cmd = link.target.command("vblade");
    cmd.arg(SHELF.to_string()).arg(SLOT.to_string()).arg(link.target_if()).arg(image.path());
    let vblade = Guarded::spawn(cmd).unwrap();
    // vblade announces itself with "pid N: e1.2, 2048 sectors O_RDWR".
    let banner = format!("e{SHELF}.{SLOT}, {} sectors", image.len() / 512);
    assert!(
        wait_until(Duration::from_secs(5), || {
            vblade.stdout().contains(&banner) || vblade.stderr().contains(&banner)
        }),
        "vblade did not start: stdout {:?} stderr {:?}",
        vblade.stdout(),
        vblade.stderr()
    );
    vblade
}

#[test]
fn vblade_serves_an_image_over_veth() {
    if !netns_available("vblade_serves_an_image_over_veth")
        || !tool_available("vblade_serves_an_image_over_veth", "vblade")
    {
        return;
    }
    let started = Instant::now();
    let link = Link::new("tkvb", 1500).unwrap();
    let (a_mac, b_mac) = (link.veth.a_mac(), link.veth.b_mac());
    let image = TempImage::new(1 << 20, 7).unwrap();
    let sock = PacketSocket::open_in(&link.initiator, link.initiator_if(), ETH_P_AOE).unwrap();
    let mut vblade = start_vblade(&link, &image);

    // Query config, broadcast like an initiator that knows no MAC yet.
    sock.send(&query_config([0xff; 6], b_mac, 0x1001)).unwrap();
    let cfg = response(&sock, a_mac, 0x1001);
    assert_eq!(cfg[ETH_HDR + 5], CMD_CONFIG);
    assert_eq!(cfg[..6], b_mac);
    // vblade sends its config answer unpadded (32 bytes) on a veth, where
    // nothing pads it to the Ethernet minimum of 60.
    assert!(cfg.len() >= ETH_HDR + AOE_HDR + 8, "{}", cfg.len());
    let c = &cfg[ETH_HDR + AOE_HDR..];
    let buffers = u16::from_be_bytes([c[0], c[1]]);
    let max_sectors = c[4];
    assert!(buffers > 0);
    // (1500 - AoE and ATA headers) / 512 = 2 sectors per frame.
    assert_eq!(max_sectors, 2, "config answer {c:02x?}");

    // ATA IDENTIFY DEVICE: LBA48 capacity in words 100..104.
    sock.send(&ata(a_mac, b_mac, 0x1002, 0xEC, 0, 1)).unwrap();
    let id = response(&sock, a_mac, 0x1002);
    let data = &id[ETH_HDR + AOE_HDR + ATA_HDR..];
    assert!(data.len() >= 512, "{}", data.len());
    let word = |i: usize| u64::from(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]));
    let capacity = word(100) | word(101) << 16 | word(102) << 32 | word(103) << 48;
    assert_eq!(capacity, (image.len() / 512) as u64);

    // READ SECTORS EXT of sectors 5 and 6 returns the image's pattern.
    sock.send(&ata(a_mac, b_mac, 0x1003, 0x24, 5, 2)).unwrap();
    let rd = response(&sock, a_mac, 0x1003);
    let ata_resp = &rd[ETH_HDR + AOE_HDR..];
    assert_eq!(ata_resp[3] & 0x01, 0, "ATA status has ERR: {:02x}", ata_resp[3]);
    assert!(rd[ETH_HDR + AOE_HDR + ATA_HDR..] == pattern(7, 7 * 512)[5 * 512..]);

    // Still serving a second later, and stops cleanly on SIGTERM.
    assert_eq!(vblade.wait_timeout(Duration::from_secs(1)).unwrap(), None);
    let stop = Instant::now();
    let status = vblade.terminate().unwrap();
    assert!(stop.elapsed() < Duration::from_secs(2), "{:?}", stop.elapsed());
    assert!(
        status.success() || status.signal() == Some(libc::SIGTERM),
        "vblade ended with {status:?}; stderr {:?}",
        vblade.stderr()
    );
    drop(vblade);
    drop(link);
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn aoeping_talks_to_vblade() {
    let name = "aoeping_talks_to_vblade";
    if !netns_available(name) || !tool_available(name, "vblade") || !tool_available(name, "aoeping") {
        return;
    }
    let link = Link::new("tkping", 1500).unwrap();
    let (a_mac, b_mac) = (link.veth.a_mac(), link.veth.b_mac());
    let image = TempImage::zeroed(1 << 20).unwrap();
    let sniffer = PacketSocket::open_in(&link.initiator, link.initiator_if(), ETH_P_ALL).unwrap();
    let _vblade = start_vblade(&link, &image);

    // `aoeping -s SECONDS SHELF SLOT IFACE`. On a veth it never sees the
    // answer: it ignores frames shorter than 60 bytes and vblade's 32-byte
    // config answer is not padded, so it ends by its own SIGALRM after 1 s.
    let out = link
        .initiator
        .run(
            "aoeping",
            &["-s", "1", &SHELF.to_string(), &SLOT.to_string(), link.initiator_if()],
            Duration::from_secs(10),
        )
        .unwrap();
    eprintln!(
        "aoeping: {:?}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGALRM),
        "aoeping failed to run: {out:?}"
    );

    // On the wire: aoeping's broadcast query and vblade's answer to it.
    let is_aoe = |f: &[u8]| f.len() >= ETH_HDR + AOE_HDR && f[12..14] == ETH_P_AOE.to_be_bytes();
    let query = sniffer
        .recv_matching(Duration::from_secs(2), |f| {
            is_aoe(f) && f[6..12] == b_mac && f[ETH_HDR] & FLAG_RESPONSE == 0
        })
        .unwrap()
        .expect("aoeping sent no query");
    assert_eq!(query[..6], [0xff; 6]);
    assert_eq!(query[ETH_HDR + 5], CMD_CONFIG);
    let answer = sniffer
        .recv_matching(Duration::from_secs(2), |f| {
            is_aoe(f) && f[6..12] == a_mac && tag_of(f) == tag_of(&query)
        })
        .unwrap()
        .expect("vblade did not answer aoeping");
    assert_eq!(answer[ETH_HDR] & (FLAG_RESPONSE | FLAG_ERROR), FLAG_RESPONSE);
    eprintln!("vblade's answer to aoeping: {} bytes", answer.len());
}
