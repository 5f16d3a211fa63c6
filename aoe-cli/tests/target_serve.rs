//! The `aoe-target` program on a veth link between two private network namespaces, driven by
//! aoetools (aoeping, aoecfg) and by raw AoE frames crafted here. Needs root (and aoetools
//! for the peer tests); skipped otherwise, unless AOE_REQUIRE_NETNS / AOE_REQUIRE_PEERS say
//! a skip is a failure.

// kill has no safe wrapper in std.
#![allow(unsafe_code)]

use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use aoe_proto::ata::{AtaCommand, AtaError, AtaStatus};
use aoe_proto::config::ConfigCommand;
use aoe_proto::header::ErrorCode;
use aoe_proto::mask::{Directive, DirectiveCommand, MaskCommand, MaskError};
use aoe_proto::reserve::ReserveCommand;
use aoe_proto::{
    AtaRepr, Body, BodyRepr, ConfigRepr, Frame, FrameRepr, HeaderRepr, Identify, MacAddr, MaskRepr,
    ReserveRepr,
};
use aoe_testkit::data::{pattern, TempImage};
use aoe_testkit::netns::{Link, Side, Veth};
use aoe_testkit::packet::{PacketSocket, ETH_P_AOE};
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::{wait_until, Guarded};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::{FrameBatch, Transport};

const BIN: &str = env!("CARGO_BIN_EXE_aoe-target");
/// How long to wait for an answer that should come.
const ANSWER: Duration = Duration::from_secs(3);
/// How long to wait to be sure no answer comes.
const SILENCE: Duration = Duration::from_millis(400);
/// A source MAC no interface has: raw sockets may send from any address.
const STRANGER: MacAddr = MacAddr([0x02, 0xAA, 0xBB, 0xCC, 0xDD, 0x01]);

/// Starts `aoe-target ARGS` in the target namespace and waits for its start-up line for
/// `name` (e.g. "e1.0") on `interface`.
fn start(link: &Link, args: &[&str], ready: &[(&str, &str)]) -> Guarded {
    let mut cmd = link.target.command(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    let target = Guarded::spawn(cmd).unwrap();
    let lines: Vec<String> =
        ready.iter().map(|(name, interface)| format!("{name} on {interface} (")).collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let err = target.stderr();
            lines.iter().all(|l| err.contains(l.as_str()))
        }),
        "aoe-target {args:?} did not start: stderr {:?}",
        target.stderr()
    );
    target
}

/// Stops the target with `signal` and checks it exits 0 within 2 s, saying so.
fn stop(mut target: Guarded, signal: libc::c_int) -> String {
    let pid = libc::pid_t::try_from(target.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let status: Option<ExitStatus> = target.wait_timeout(Duration::from_secs(2)).unwrap();
    let stderr = target.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "status {status:?}, stderr {stderr:?}");
    assert!(stderr.trim_end().ends_with("stopped"), "{stderr:?}");
    stderr
}

/// Runs an aoetools program in the initiator namespace (at most 10 s).
fn peer(link: &Link, program: &str, args: &[&str]) -> Output {
    let out = link.initiator.run(program, args, Duration::from_secs(10)).unwrap();
    eprintln!(
        "{program} {}: {:?}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The bytes of aoeping's hex dump that follows the line `heading`.
fn hex_after(stdout: &str, heading: &str) -> Vec<u8> {
    let mut lines = stdout.lines().skip_while(|l| *l != heading).skip(1);
    let mut bytes = Vec::new();
    for line in lines.by_ref() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || !words.iter().all(|w| w.len() == 2 && u8::from_str_radix(w, 16).is_ok()) {
            break;
        }
        bytes.extend(words.iter().map(|w| u8::from_str_radix(w, 16).unwrap()));
    }
    bytes
}

fn word(data: &[u8], i: usize) -> u64 {
    u64::from(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]))
}

/// An initiator made of an AF_PACKET socket in the initiator namespace, speaking raw frames.
struct Initiator {
    port: AfPacket,
    target: MacAddr,
    shelf: u16,
    slot: u8,
    tag: u32,
    tx: FrameBatch,
    rx: FrameBatch,
}

/// An answer, or why there is none.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// An ATA answer: status, error, data.
    Ata(AtaStatus, AtaError, Vec<u8>),
    /// An AoE error answer.
    Error(ErrorCode),
    /// Any other answer, whole.
    Frame(Vec<u8>),
    /// Nothing came.
    Silence,
}

impl Initiator {
    fn open(link: &Link, interface: &str, target: MacAddr) -> Initiator {
        let port = link.initiator.enter(|| AfPacket::open(interface, AfPacketOptions::default())).unwrap();
        let capacity = 14 + port.mtu();
        Initiator {
            port,
            target,
            shelf: 1,
            slot: 0,
            tag: 0x100,
            tx: FrameBatch::new(1, capacity),
            rx: FrameBatch::new(16, capacity),
        }
    }

    fn mac(&self) -> MacAddr {
        self.port.mac()
    }

    /// Sends `body` from `src` (any MAC) and waits `wait` for the answer with its tag.
    fn ask(&mut self, src: MacAddr, body: BodyRepr<'_>, wait: Duration) -> Reply {
        self.tag += 1;
        let (tag, dst) = (self.tag, self.target);
        let header = HeaderRepr::request(self.shelf, self.slot, tag);
        self.tx.clear();
        assert!(self.tx.push_with(|buf| FrameRepr { dst, src, header, body }.emit_padded(buf).unwrap()));
        assert_eq!(self.port.send_batch(&self.tx).unwrap(), 1);
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Reply::Silence;
            }
            self.port.recv_batch(&mut self.rx, Some(left)).unwrap();
            for f in self.rx.iter() {
                let Ok(frame) = Frame::parse(f) else { continue };
                if !frame.header.is_response() || frame.header.tag() != tag || frame.ethernet.dst != src {
                    continue;
                }
                assert!(f.len() >= 60, "answer of {} bytes is not padded", f.len());
                assert_eq!(frame.ethernet.src, self.target);
                assert_eq!((frame.header.shelf(), frame.header.slot()), (self.shelf, self.slot));
                if let Some(code) = frame.header.error_code() {
                    return Reply::Error(code);
                }
                return match frame.body {
                    // An answer without data may still carry Ethernet padding.
                    Body::Ata { header, data } => {
                        let data = if data.len() % 512 == 0 { data.to_vec() } else { Vec::new() };
                        Reply::Ata(header.status(), header.error(), data)
                    }
                    _ => Reply::Frame(f.to_vec()),
                };
            }
        }
    }

    fn ata(&mut self, src: MacAddr, header: AtaRepr, data: &[u8]) -> Reply {
        self.ask(src, BodyRepr::Ata { header, data }, ANSWER)
    }

    fn read(&mut self, lba: u64, count: u8, extended: bool) -> Vec<u8> {
        match self.ata(self.mac(), AtaRepr::read(lba, count, extended), &[]) {
            Reply::Ata(AtaStatus::DRDY, e, data) if e.is_empty() => data,
            other => panic!("read of {count} at {lba}: {other:?}"),
        }
    }

    fn write(&mut self, lba: u64, data: &[u8], extended: bool) -> Reply {
        let count = u8::try_from(data.len() / 512).unwrap();
        self.ata(self.mac(), AtaRepr::write(lba, count, extended), data)
    }
}

fn ok() -> Reply {
    Reply::Ata(AtaStatus::DRDY, AtaError::empty(), Vec::new())
}

fn gate(test: &str, tools: &[&str]) -> bool {
    netns_available(test) && tools.iter().all(|t| tool_available(test, t))
}

// ---- aoeping --------------------------------------------------------------------------------

fn aoeping(mtu: u32) {
    let started = Instant::now();
    let link = Link::new("tgping", mtu).unwrap();
    let (t_mac, i_mac) = (MacAddr(link.veth.a_mac()), MacAddr(link.veth.b_mac()));
    let image = TempImage::new(4096 * 512, 1).unwrap();
    let (iface, img) = (link.initiator_if(), image.path().to_str().unwrap());
    // Opened before the target starts, to see its announcement.
    let sniffer = PacketSocket::open_in(&link.initiator, iface, ETH_P_AOE).unwrap();
    let target = start(
        &link,
        &["-b", "8", "-o", "16", "-l", "2000", "1", "0", link.target_if(), img],
        &[("e1.0", link.target_if())],
    );
    let sectors_per_frame = aoe_proto::max_sectors(mtu as usize);
    assert!(target.stderr().contains(&format!(
        "e1.0 on {} ({t_mac}): 2000 sectors, {sectors_per_frame} sectors/frame, bufcnt 8, file {img} \
         (read-write, offset 16 sectors)",
        link.target_if()
    )));

    // The start-up announcement: an unsolicited query-config answer to everyone.
    let hello = sniffer.recv_timeout(ANSWER).unwrap().expect("no announcement");
    let frame = Frame::parse(&hello).unwrap();
    assert_eq!((frame.ethernet.dst, frame.ethernet.src), (MacAddr::BROADCAST, t_mac));
    assert!(frame.header.is_response() && frame.header.error_code().is_none());
    let Body::Config { header, .. } = frame.body else { panic!("{frame:?}") };
    assert_eq!((header.buffer_count.get(), header.sector_count), (8, sectors_per_frame));
    assert!(hello.len() >= 60);

    // Plain: the query-config answer, dumped by -v.
    let out = peer(&link, "aoeping", &["-v", "-s", "5", "1", "0", iface]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let mac_hex: String = t_mac.0.iter().map(|b| format!("{b:02x}")).collect();
    assert!(stdout.contains(&format!("found e1.0 with mac {mac_hex}")), "{stdout}");
    let cfg = hex_after(&stdout, "config query response:");
    assert_eq!(cfg.len(), 60, "answer padded to the Ethernet minimum: {cfg:02x?}");
    assert_eq!((&cfg[..6], &cfg[6..12]), (&i_mac.0[..], &t_mac.0[..]));
    assert_eq!(&cfg[12..20], &[0x88, 0xa2, 0x18, 0x00, 0x00, 0x01, 0x00, 0x01]);
    assert_eq!(u16::from_be_bytes([cfg[24], cfg[25]]), 8, "buffer count");
    assert_eq!(cfg[28], sectors_per_frame, "sectors per frame at MTU {mtu}");
    assert_eq!(cfg[29], 0x10, "AoE version 1, CCmd read");

    // -i: IDENTIFY as a hex dump; the capacity is the window, not the file.
    let out = peer(&link, "aoeping", &["-i", "-s", "5", "1", "0", iface]);
    assert!(out.status.success());
    let id = hex_after(&text(&out.stdout), "device identify response:");
    assert_eq!(id.len(), 512);
    assert_eq!(word(&id, 100) | word(&id, 101) << 16 | word(&id, 102) << 32 | word(&id, 103) << 48, 2000);
    assert_eq!(word(&id, 60) | word(&id, 61) << 16, 2000);
    assert_eq!(Identify::parse(&id).unwrap().sectors, 2000);

    // -I: IDENTIFY fields.
    let out = peer(&link, "aoeping", &["-I", "-s", "5", "1", "0", iface]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for want in [
        "serial_number: e1.0",
        concat!("firmware_rev: ", env!("CARGO_PKG_VERSION")),
        "model: Rust AoE target",
    ] {
        assert!(stdout.lines().any(|l| l.trim_end() == want), "{want:?} not in {stdout}");
    }

    // -S: SMART RETURN STATUS: LBA mid/high 0x4f/0xc2 is "no threshold exceeded".
    let out = peer(&link, "aoeping", &["-S", "return_status", "-s", "5", "1", "0", iface]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    for want in ["ATA registers:", "LBA Mid: 0x4f", "LBA High: 0xc2", "Status: 0x40"] {
        assert!(stdout.contains(want), "{want:?} not in {stdout}");
    }
    let out = peer(&link, "aoeping", &["-S", "enable", "-s", "5", "1", "0", iface]);
    assert!(out.status.success() && text(&out.stdout).contains("Status: 0x40"), "{out:?}");
    // SMART READ DATA is not implemented: aborted, which aoeping reports.
    let out = peer(&link, "aoeping", &["-S", "read_data", "-s", "5", "1", "0", iface]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("SMART command aborted on target."), "{out:?}");

    stop(target, libc::SIGTERM);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn aoeping_at_mtu_1500() {
    if gate("aoeping_at_mtu_1500", &["aoeping"]) {
        aoeping(1500);
    }
}

#[test]
fn aoeping_at_mtu_9000() {
    if gate("aoeping_at_mtu_9000", &["aoeping"]) {
        aoeping(9000);
    }
}

// ---- aoecfg ---------------------------------------------------------------------------------

fn aoecfg(mtu: u32) {
    let started = Instant::now();
    let link = Link::new("tgcfg", mtu).unwrap();
    let image = TempImage::zeroed(1 << 20).unwrap();
    let iface = link.initiator_if();
    let target = start(
        &link,
        &["2", "5", link.target_if(), image.path().to_str().unwrap()],
        &[("e2.5", link.target_if())],
    );

    // `aoecfg [-c cmd] [-s cfgstr] [-t timeout] shelf slot netif` prints the target's config
    // string, or *badcfg* for error 4; a test that does not match gets no answer, so aoecfg
    // prints nothing and exits 0 when its timeout passes.
    let cfg = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["2", "5", iface]);
        let out = peer(&link, "aoecfg", &all);
        assert!(out.status.success(), "{out:?}");
        text(&out.stdout)
    };
    assert_eq!(cfg(&["-t", "2"]), "\n", "empty at start");
    assert_eq!(cfg(&["-c", "set", "-s", "alpha", "-t", "2"]), "alpha\n");
    assert_eq!(cfg(&["-c", "set", "-s", "beta", "-t", "2"]), "*badcfg*\n", "error 4: already set");
    assert_eq!(cfg(&["-c", "set", "-s", "alpha", "-t", "2"]), "alpha\n", "setting the same string is fine");
    assert_eq!(cfg(&["-c", "read", "-t", "2"]), "alpha\n");
    assert_eq!(cfg(&["-c", "test", "-s", "alpha", "-t", "2"]), "alpha\n");
    assert_eq!(cfg(&["-c", "prefix", "-s", "alp", "-t", "2"]), "alpha\n");
    assert_eq!(cfg(&["-c", "fset", "-s", "gamma ray", "-t", "2"]), "gamma ray\n");
    let quiet = Instant::now();
    assert_eq!(cfg(&["-c", "test", "-s", "gamma", "-t", "1"]), "", "no answer to a test that fails");
    assert_eq!(cfg(&["-c", "prefix", "-s", "ray", "-t", "1"]), "");
    assert!(quiet.elapsed() >= Duration::from_secs(1));
    // Without shelf and slot aoecfg broadcasts to every target and names each answer.
    let out = peer(&link, "aoecfg", &["-t", "2", iface]);
    assert_eq!(text(&out.stdout), "2.5\tgamma ray\n");

    stop(target, libc::SIGINT);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn aoecfg_at_mtu_1500() {
    if gate("aoecfg_at_mtu_1500", &["aoecfg"]) {
        aoecfg(1500);
    }
}

#[test]
fn aoecfg_at_mtu_9000() {
    if gate("aoecfg_at_mtu_9000", &["aoecfg"]) {
        aoecfg(9000);
    }
}

// ---- raw frames: writes, windows, masks, reservations, read-only ----------------------------

/// Writes through the network land in the file at the offset, reads return them, and
/// nothing outside the window changes. `options` are more options (-d, -s, --no-rx-ring,
/// --io-threads).
fn writes_reach_the_file(mtu: u32, options: &[&str]) {
    let started = Instant::now();
    let link = Link::new("tgwr", mtu).unwrap();
    const SEED: u64 = 11;
    const FILE_SECTORS: usize = 2048;
    const OFFSET: usize = 8;
    const LENGTH: usize = 1024;
    let image = TempImage::new(FILE_SECTORS * 512, SEED).unwrap();
    let img = image.path().to_str().unwrap();
    let mut args = options.to_vec();
    args.extend(["-o", "8", "-l", "1024", "1", "0", link.target_if(), img]);
    let target = start(&link, &args, &[("e1.0", link.target_if())]);
    let mode = match options.contains(&"-d") {
        false => "(read-write, offset 8 sectors)",
        true => "(read-write, O_DIRECT, O_SYNC, offset 8 sectors)",
    };
    assert!(target.stderr().contains(mode), "{}", target.stderr());
    // I/O threads: as asked, else 16 for O_DIRECT, else none.
    let threads = match options.iter().position(|&o| o == "--io-threads") {
        Some(at) => options[at + 1],
        None if options.contains(&"-d") => "16",
        None => "0",
    };
    let says_threads = target.stderr().contains(&format!("{}: {threads} I/O threads", link.target_if()));
    assert_eq!(says_threads, threads != "0", "{}", target.stderr());
    if options.contains(&"--af-xdp") {
        // Up to MTU 4000 the answers leave through AF_XDP; above, through sendmmsg.
        let says = match mtu {
            ..=4000 => format!("{}: answers sent through an AF_XDP socket", link.target_if()),
            _ => format!("{}: no AF_XDP socket (", link.target_if()),
        };
        assert!(target.stderr().contains(&says), "{}", target.stderr());
    }
    if options.contains(&"--tx-ring") {
        let says = format!("{}: frames sent through transmit rings", link.target_if());
        assert!(target.stderr().contains(&says), "{}", target.stderr());
    }
    let mut ini = Initiator::open(&link, link.initiator_if(), MacAddr(link.veth.a_mac()));
    let n = aoe_proto::max_sectors(mtu as usize);
    let mut expect = pattern(SEED, FILE_SECTORS * 512);

    // LBA48 and LBA28 writes of a full frame each, at the start and at the end of the window.
    let writes = [(0u64, true), (100, false), ((LENGTH - usize::from(n)) as u64, true)];
    for (i, &(lba, extended)) in writes.iter().enumerate() {
        let data = pattern(1000 + i as u64, usize::from(n) * 512);
        assert_eq!(ini.write(lba, &data, extended), ok(), "write at {lba}");
        let at = (OFFSET + lba as usize) * 512;
        expect[at..at + data.len()].copy_from_slice(&data);
        // Read back through the network, both ways of addressing.
        assert_eq!(ini.read(lba, n, extended), data);
        assert_eq!(ini.read(lba, n, !extended), data);
    }
    // Outside the window: refused, nothing written.
    let junk = vec![0xEE; 512];
    let idnf = Reply::Ata(AtaStatus::DRDY | AtaStatus::ERR, AtaError::IDNF | AtaError::ABRT, Vec::new());
    assert_eq!(ini.write(LENGTH as u64, &junk, true), idnf);
    let two = vec![0xEE; 1024];
    if n >= 2 {
        assert_eq!(ini.write(LENGTH as u64 - 1, &two, true), idnf, "straddles the end");
    }
    // More sectors than the MTU carries: refused.
    let too_many = AtaRepr::read(0, n + 1, true);
    assert!(matches!(ini.ata(ini.mac(), too_many, &[]), Reply::Ata(s, _, _) if s.contains(AtaStatus::ERR)));
    // FLUSH CACHE EXT succeeds.
    assert_eq!(ini.ata(ini.mac(), AtaRepr::command(AtaCommand::FlushCacheExt, 0), &[]), ok());

    // SIGTERM flushes and exits; the file holds exactly what was written.
    stop(target, libc::SIGTERM);
    let got = image.read_all();
    assert!(got == expect, "file differs from the expected content");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn writes_reach_the_file_at_mtu_1500() {
    if gate("writes_reach_the_file_at_mtu_1500", &[]) {
        writes_reach_the_file(1500, &[]);
    }
}

#[test]
fn writes_reach_the_file_at_mtu_9000_with_o_direct_and_o_sync() {
    if gate("writes_reach_the_file_at_mtu_9000_with_o_direct_and_o_sync", &[]) {
        writes_reach_the_file(9000, &["-d", "-s"]);
    }
}

#[test]
fn writes_reach_the_file_through_io_threads() {
    if gate("writes_reach_the_file_through_io_threads", &[]) {
        writes_reach_the_file(1500, &["--io-threads", "3"]);
    }
}

#[test]
fn writes_reach_the_file_through_io_threads_received_with_recvmmsg() {
    if gate("writes_reach_the_file_through_io_threads_received_with_recvmmsg", &[]) {
        writes_reach_the_file(9000, &["--io-threads", "2", "--no-rx-ring"]);
    }
}

#[test]
fn writes_reach_the_file_answered_through_af_xdp() {
    if gate("writes_reach_the_file_answered_through_af_xdp", &[]) {
        writes_reach_the_file(1500, &["--af-xdp"]);
    }
}

#[test]
fn writes_reach_the_file_through_io_threads_beside_af_xdp() {
    if gate("writes_reach_the_file_through_io_threads_beside_af_xdp", &[]) {
        writes_reach_the_file(1500, &["--af-xdp", "--io-threads", "2"]);
    }
}

#[test]
fn writes_reach_the_file_answered_through_a_tx_ring() {
    if gate("writes_reach_the_file_answered_through_a_tx_ring", &[]) {
        writes_reach_the_file(9000, &["--tx-ring"]);
        writes_reach_the_file(1500, &["--tx-ring", "--io-threads", "2"]);
    }
}

#[test]
fn af_xdp_at_mtu_9000_falls_back_to_sendmmsg() {
    if gate("af_xdp_at_mtu_9000_falls_back_to_sendmmsg", &[]) {
        writes_reach_the_file(9000, &["--af-xdp"]);
    }
}

#[test]
fn writes_reach_the_file_received_with_recvmmsg() {
    if gate("writes_reach_the_file_received_with_recvmmsg", &[]) {
        writes_reach_the_file(9000, &["--no-rx-ring"]);
    }
}

#[test]
fn masks_and_reservations_refuse_other_initiators() {
    let name = "masks_and_reservations_refuse_other_initiators";
    if !gate(name, &["aoeping"]) {
        return;
    }
    let started = Instant::now();
    let link = Link::new("tgmask", 1500).unwrap();
    let image = TempImage::new(64 * 512, 3).unwrap();
    let img = image.path().to_str().unwrap();
    // vblade's bare 12-digit form, upper case.
    let stranger_hex: String = STRANGER.0.iter().map(|b| format!("{b:02X}")).collect();
    let target =
        start(&link, &["-m", &stranger_hex, "1", "0", link.target_if(), img], &[("e1.0", link.target_if())]);
    let mut ini = Initiator::open(&link, link.initiator_if(), MacAddr(link.veth.a_mac()));
    let me = ini.mac();
    let read = AtaRepr::read(0, 1, true);
    let query = || BodyRepr::Config(ConfigRepr::request(ConfigCommand::Read, b""));

    // Masked: no answer at all to us, neither to aoeping, nor to a crafted frame.
    let out = peer(&link, "aoeping", &["-s", "1", "1", "0", link.initiator_if()]);
    assert!(!out.status.success(), "aoeping got an answer through the mask: {out:?}");
    assert_eq!(ini.ask(me, BodyRepr::Ata { header: read, data: &[] }, SILENCE), Reply::Silence);
    assert_eq!(ini.ask(me, query(), SILENCE), Reply::Silence);
    // The stranger in the mask is answered.
    assert!(matches!(ini.ata(STRANGER, read, &[]), Reply::Ata(AtaStatus::DRDY, _, d) if d.len() == 512));
    // The stranger opens the mask to everyone (an empty list) by deleting itself.
    let delete = [Directive::new(DirectiveCommand::Delete, STRANGER)];
    let edit =
        BodyRepr::Mask(MaskRepr { command: MaskCommand::Edit, error: MaskError::None, directives: &delete });
    let Reply::Frame(answer) = ini.ask(STRANGER, edit, ANSWER) else { panic!("no mask answer") };
    let Body::Mask { header, directives } = Frame::parse(&answer).unwrap().body else { panic!() };
    assert_eq!((header.error(), directives.len()), (MaskError::None, 0));
    assert!(matches!(ini.ata(me, read, &[]), Reply::Ata(AtaStatus::DRDY, _, _)));
    let out = peer(&link, "aoeping", &["-s", "2", "1", "0", link.initiator_if()]);
    assert!(out.status.success(), "{out:?}");

    // The stranger reserves the target: our ATA commands get error 6, IDENTIFY still works,
    // and so does a forced release.
    let mine = [STRANGER];
    fn reserve(command: ReserveCommand, macs: &[MacAddr]) -> BodyRepr<'_> {
        BodyRepr::Reserve(ReserveRepr { command, macs })
    }
    assert!(matches!(ini.ask(STRANGER, reserve(ReserveCommand::Set, &mine[..]), ANSWER), Reply::Frame(_)));
    assert_eq!(ini.ata(me, read, &[]), Reply::Error(ErrorCode::TargetReserved));
    assert_eq!(ini.write(0, &[1; 512], true), Reply::Error(ErrorCode::TargetReserved));
    assert_eq!(
        ini.ask(me, reserve(ReserveCommand::Set, &[me][..]), ANSWER),
        Reply::Error(ErrorCode::TargetReserved)
    );
    let id = AtaRepr::command(AtaCommand::IdentifyDevice, 1);
    assert!(matches!(ini.ata(me, id, &[]), Reply::Ata(AtaStatus::DRDY, _, d) if d.len() == 512));
    assert!(matches!(ini.ata(STRANGER, read, &[]), Reply::Ata(AtaStatus::DRDY, _, _)));
    assert!(matches!(ini.ask(me, reserve(ReserveCommand::ForceSet, &[][..]), ANSWER), Reply::Frame(_)));
    assert!(matches!(ini.ata(me, read, &[]), Reply::Ata(AtaStatus::DRDY, _, _)));

    stop(target, libc::SIGTERM);
    assert!(image.read_all() == pattern(3, 64 * 512), "a refused write changed the file");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn read_only_export_refuses_writes() {
    if !gate("read_only_export_refuses_writes", &[]) {
        return;
    }
    let link = Link::new("tgro", 9000).unwrap();
    let image = TempImage::new(64 * 512, 5).unwrap();
    let img = image.path().to_str().unwrap();
    let target = start(&link, &["-r", "1", "0", link.target_if(), img], &[("e1.0", link.target_if())]);
    assert!(target.stderr().contains("(read-only)"));
    let mut ini = Initiator::open(&link, link.initiator_if(), MacAddr(link.veth.a_mac()));
    let abort = Reply::Ata(AtaStatus::DRDY | AtaStatus::ERR, AtaError::ABRT, Vec::new());
    assert_eq!(ini.write(0, &[0xAB; 17 * 512], true), abort);
    assert_eq!(ini.write(10, &[0xAB; 512], false), abort);
    assert_eq!(ini.read(0, 17, true), pattern(5, 17 * 512));
    stop(target, libc::SIGINT);
    assert!(image.read_all() == pattern(5, 64 * 512), "the read-only file changed");
}

/// One process, a configuration file, two exports, two interfaces of different MTUs; the
/// export offered on both is one disk (its config string is shared).
#[test]
fn config_file_serves_exports_on_several_interfaces() {
    let name = "config_file_serves_exports_on_several_interfaces";
    if !gate(name, &["aoecfg"]) {
        return;
    }
    let started = Instant::now();
    let link = Link::new("tgconf", 1500).unwrap();
    let jumbo = Veth::new(&link.target, &link.initiator, 9000).unwrap();
    let (if1, if2) = (link.target_if(), jumbo.name(Side::A));
    let disk0 = TempImage::zeroed(256 * 512).unwrap();
    let disk1 = TempImage::new(32 * 512, 9).unwrap();
    let config = TempImage::zeroed(0).unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[[export]]\nshelf = 1\nslot = 0\ninterfaces = [\"{if1}\", \"{if2}\"]\nfile = \"{}\"\n\n\
             [[export]]\nshelf = 1\nslot = 1\ninterfaces = [\"{if1}\"]\nfile = \"{}\"\nread_only = true\n\
             buffer_count = 4\n",
            disk0.path().display(),
            disk1.path().display()
        ),
    )
    .unwrap();
    let target = start(
        &link,
        &["--config", config.path().to_str().unwrap()],
        &[("e1.0", if1), ("e1.0", if2), ("e1.1", if1)],
    );
    let log = target.stderr();
    assert!(
        log.contains(&format!("e1.0 on {if2} (")) && log.contains("256 sectors, 17 sectors/frame"),
        "{log}"
    );
    assert!(log.contains("32 sectors, 2 sectors/frame, bufcnt 4"), "{log}");

    // A broadcast read on the first link finds both exports.
    let out = peer(&link, "aoecfg", &["-t", "1", link.initiator_if()]);
    let mut found: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    found.sort();
    assert_eq!(found, ["1.0\t", "1.1\t"]);
    // Set through one interface, read through the other: the same disk.
    let out = peer(&link, "aoecfg", &["-c", "set", "-s", "shared", "-t", "2", "1", "0", link.initiator_if()]);
    assert_eq!(text(&out.stdout), "shared\n");
    let out = peer(&link, "aoecfg", &["-t", "2", "1", "0", jumbo.name(Side::B)]);
    assert_eq!(text(&out.stdout), "shared\n");
    let out = peer(&link, "aoecfg", &["-t", "1", "1", "1", jumbo.name(Side::B)]);
    assert_eq!(text(&out.stdout), "", "e1.1 is not offered on the second interface");

    // A write of 17 sectors through the jumbo link lands in disk0.
    let mut ini = Initiator::open(&link, jumbo.name(Side::B), MacAddr(jumbo.a_mac()));
    let data = pattern(77, 17 * 512);
    assert_eq!(ini.write(200, &data, true), ok());
    stop(target, libc::SIGTERM);
    assert!(disk0.read_at(200 * 512, data.len()).unwrap() == data);
    assert!(disk1.read_all() == pattern(9, 32 * 512));
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn interface_down_is_refused() {
    if !gate("interface_down_is_refused", &[]) {
        return;
    }
    let link = Link::new("tgdown", 1500).unwrap();
    link.veth.set_up(Side::A, false).unwrap();
    let image = TempImage::zeroed(64 * 512).unwrap();
    let out = link
        .target
        .run(BIN, &["1", "0", link.target_if(), image.path().to_str().unwrap()], Duration::from_secs(10))
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!("aoe-target: e1.0: interfaces: interface {} is down\n", link.target_if())
    );
}

/// An interface that goes down and up again is one path lost for a while: the target keeps
/// running and answers on it again.
#[test]
fn an_interface_that_goes_down_and_up_is_served_again() {
    if gate("an_interface_that_goes_down_and_up_is_served_again", &[]) {
        interface_goes_down_and_up(&[]);
    }
}

#[test]
fn an_interface_that_goes_down_and_up_is_served_again_by_recvmmsg() {
    if gate("an_interface_that_goes_down_and_up_is_served_again_by_recvmmsg", &[]) {
        interface_goes_down_and_up(&["--no-rx-ring"]);
    }
}

#[test]
fn an_interface_that_goes_down_and_up_is_served_again_through_af_xdp() {
    if gate("an_interface_that_goes_down_and_up_is_served_again_through_af_xdp", &[]) {
        interface_goes_down_and_up(&["--af-xdp"]);
    }
}

/// The target, started with `options`, says its interface went down, stays up, and answers
/// again once the interface is back.
fn interface_goes_down_and_up(options: &[&str]) {
    let link = Link::new("tgflap", 1500).unwrap();
    let image = TempImage::new(64 * 512, 6).unwrap();
    let mut args = options.to_vec();
    args.extend(["1", "0", link.target_if(), image.path().to_str().unwrap()]);
    let mut target = start(&link, &args, &[("e1.0", link.target_if())]);
    if options.is_empty() {
        assert!(!target.stderr().contains("refused a receive ring"), "{}", target.stderr());
    }
    let mut ini = Initiator::open(&link, link.initiator_if(), MacAddr(link.veth.a_mac()));
    assert_eq!(ini.read(3, 1, true), pattern(6, 4 * 512)[3 * 512..]);
    link.veth.set_up(Side::A, false).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || target.stderr().contains("went down")),
        "{}",
        target.stderr()
    );
    assert_eq!(target.try_wait().unwrap(), None, "the target exited: {}", target.stderr());
    link.veth.set_up(Side::A, true).unwrap();
    let read = AtaRepr::read(3, 1, true);
    let back = wait_until(Duration::from_secs(5), || {
        matches!(
            ini.ask(ini.mac(), BodyRepr::Ata { header: read, data: &[] }, SILENCE),
            Reply::Ata(AtaStatus::DRDY, _, _)
        )
    });
    assert!(back, "no answer after the interface came back: {}", target.stderr());
    stop(target, libc::SIGTERM);
}
