//! The `aoe` program on a veth link at MTU 9000 between two private network namespaces,
//! against an in-process aoe-target `Server` serving a 16 MiB in-memory disk as e1.0.
//! Needs root; skipped otherwise, unless AOE_REQUIRE_NETNS says a skip is a failure.
//!
//! Every run of the program is bounded in time and every namespace is removed on drop.

use std::io::Write;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aoe_proto::{AtaCommand, Body, Frame, MacAddr};
use aoe_target::backend::{Backend, MemoryBackend};
use aoe_target::export::{Export, ExportConfig, Port, Received};
use aoe_target::server::Server;
use aoe_testkit::data::pattern;
use aoe_testkit::netns::Link;
use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::{wait_until, Guarded};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::{FrameBatch, Transport};

const AOE: &str = env!("CARGO_BIN_EXE_aoe");
/// The longest one run of the program may take.
const LIMIT: Duration = Duration::from_secs(60);
const DISK_BYTES: usize = 16 << 20;
/// A MAC no interface has.
const STRANGER: &str = "02:aa:bb:cc:dd:01";

type SharedExport = Arc<Mutex<Export<Arc<MemoryBackend>>>>;

/// A namespace pair with a target serving e1.0 in the target namespace.
struct Setup {
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
    export: SharedExport,
    backend: Arc<MemoryBackend>,
    link: Link,
}

impl Setup {
    /// Serves with the aoe-target `Server`.
    fn new(name: &str) -> Option<Setup> {
        Setup::with_loop(name, |link, export, stop| {
            let mut server = Server::new(link, vec![export]);
            server.announce().unwrap();
            server.run(&stop).unwrap();
        })
    }

    /// Serves with `serve(transport, export, stop)` on a thread inside the target namespace.
    fn with_loop(
        name: &str,
        serve: impl FnOnce(AfPacket, SharedExport, Arc<AtomicBool>) + Send + 'static,
    ) -> Option<Setup> {
        if !netns_available(name) {
            return None;
        }
        let link = Link::new("aoecli", 9000).unwrap();
        let backend = Arc::new(MemoryBackend::new(DISK_BYTES));
        let export: SharedExport =
            Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), Arc::clone(&backend))));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ifname = link.target_if().to_owned();
        let (e, s) = (Arc::clone(&export), Arc::clone(&stop));
        let server = link.target.spawn_thread(move || {
            let transport = AfPacket::open(&ifname, AfPacketOptions::default()).unwrap();
            ready_tx.send(()).unwrap();
            serve(transport, e, s);
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("the target thread did not start");
        Some(Setup { stop, server: Some(server), export, backend, link })
    }

    /// A target that answers every frame but the ATA commands in `silent`, which it never
    /// answers: a disk that went silent for them.
    fn silent_for(name: &str, silent: &'static [AtaCommand]) -> Option<Setup> {
        Setup::with_loop(name, move |mut link, export, stop| {
            let port = Port::new(link.mac(), link.mtu());
            let mut rx = FrameBatch::new(64, 14 + link.mtu());
            let mut tx = FrameBatch::new(64, 14 + link.mtu());
            while !stop.load(Ordering::Relaxed) {
                link.recv_batch(&mut rx, Some(Duration::from_millis(100))).unwrap();
                tx.clear();
                for frame in rx.iter() {
                    let ignored = Frame::parse(frame).is_ok_and(|f| match f.body {
                        Body::Ata { header, .. } => silent.contains(&header.command()),
                        _ => false,
                    });
                    if !ignored {
                        let mut export = export.lock().unwrap();
                        tx.push_with(|buf| answer(&mut export, &port, frame, buf));
                    }
                }
                link.send_batch(&tx).unwrap();
            }
        })
    }

    /// Runs `aoe ARGS` in the initiator namespace.
    fn aoe(&self, args: &[&str]) -> Output {
        let out = self.link.initiator.run(AOE, args, LIMIT).unwrap();
        eprintln!("$ aoe {}\n{:?}\n{}{}", args.join(" "), out.status, text(&out.stdout), text(&out.stderr));
        out
    }

    /// Runs `aoe ARGS`, checks it succeeded, returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.aoe(args);
        assert!(out.status.success(), "aoe {args:?} failed: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs `aoe ARGS`, checks it failed with status 1 and one stderr line containing
    /// `want`; returns the line.
    fn fails(&self, args: &[&str], want: &str) -> String {
        let out = self.aoe(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "aoe {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "aoe {args:?}: not one line: {err:?}");
        assert!(err.starts_with("aoe: ") && err.contains(want), "aoe {args:?}: {err:?} lacks {want:?}");
        err
    }

    /// Runs `aoe ARGS` with `input` on stdin.
    fn aoe_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = self.link.initiator.command(AOE);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let out = match rx.recv_timeout(LIMIT) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                signal(pid, "KILL");
                panic!("aoe {args:?} did not finish within {LIMIT:?}");
            }
        };
        feeder.join().unwrap();
        eprintln!("$ aoe {} <input\n{:?}\n{}", args.join(" "), out.status, text(&out.stderr));
        out
    }

    fn initiator_mac(&self) -> String {
        mac(self.link.veth.b_mac())
    }

    fn target_mac(&self) -> String {
        mac(self.link.veth.a_mac())
    }

    fn export(&self) -> std::sync::MutexGuard<'_, Export<Arc<MemoryBackend>>> {
        self.export.lock().unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// The target engine's answer to `frame` in `buf`, its sector I/O done inline; 0 for none.
fn answer<B: Backend>(export: &mut Export<B>, port: &Port, frame: &[u8], buf: &mut [u8]) -> usize {
    let Ok(request) = Received::parse(frame) else { return 0 };
    let outcome = export.handle(port, &request, buf).unwrap();
    outcome.complete(export.backend(), buf).unwrap().unwrap_or(0)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mac(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

/// A scratch file path, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        Scratch(dir.join(format!("aoe-cli-{}-{tag}", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn discover_json_and_table() {
    let Some(s) = Setup::new("discover_json_and_table") else { return };
    let json = s.ok(&["discover", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let disks = v.as_array().unwrap();
    assert_eq!(disks.len(), 1, "{json}");
    let d = &disks[0];
    assert_eq!(d["name"], "e1.0");
    assert_eq!((d["shelf"].as_u64(), d["slot"].as_u64()), (Some(1), Some(0)));
    assert_eq!(d["bytes"].as_u64(), Some(DISK_BYTES as u64));
    assert_eq!(d["sectors"].as_u64(), Some(DISK_BYTES as u64 / 512));
    assert_eq!(d["sectors_per_frame"], 17, "MTU 9000 carries 17 sectors");
    assert_eq!(d["buffer_count"], 16);
    assert_eq!(d["firmware"].as_u64(), Some(u64::from(aoe_target::export::FIRMWARE_VERSION)));
    assert_eq!(d["lba48"], true);
    assert_eq!(d["model"], "Rust AoE target");
    assert_eq!(d["serial"], "e1.0");
    assert_eq!(d["config"], "");
    assert_eq!(d["paths"][0]["iface"], s.link.initiator_if());
    assert_eq!(d["paths"][0]["mac"], s.target_mac());

    // The table, with the interface named as an argument and a config string to show.
    s.ok(&["config", "e1.0", "set", "host=a b"]);
    let table = s.ok(&["discover", s.link.initiator_if(), "--timeout", "500ms"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("DISK  PATHS (IFACE→MAC)"), "{table}");
    let path = format!("{}→{}", s.link.initiator_if(), s.target_mac());
    for cell in ["e1.0", path.as_str(), "16 MiB", "32768", "17", "16", "0x4100", "yes", "Rust AoE target"] {
        assert!(lines[1].contains(cell), "{cell:?} missing from {table}");
    }
    assert!(lines[1].ends_with("host=a b"), "{table}");
}

#[test]
fn identify_shows_the_fields() {
    let Some(s) = Setup::new("identify_shows_the_fields") else { return };
    let out = s.ok(&["identify", "e1.0"]);
    for want in [
        "model            Rust AoE target",
        "serial           e1.0",
        "capacity         16 MiB (16777216 bytes, 32768 sectors of 512 bytes)",
        "LBA48            yes",
        "FLUSH CACHE EXT  yes",
    ] {
        assert!(out.contains(want), "{want:?} missing from {out}");
    }
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["identify", "--json", "e1.0"])).unwrap();
    assert_eq!(v["sectors"].as_u64(), Some(32768));
    assert_eq!(v["serial"], "e1.0");
    let raw = s.ok(&["identify", "--raw", "e1.0"]);
    assert_eq!(raw.lines().count(), 32, "256 words, 8 per line: {raw}");
}

#[test]
fn config_set_read_test() {
    let Some(s) = Setup::new("config_set_read_test") else { return };
    let read = s.ok(&["config", "e1.0"]);
    assert!(read.contains("config       \"\"\n"), "{read}");
    assert!(read.contains("bufcnt       16") && read.contains("sect/frame   17"), "{read}");

    assert_eq!(s.ok(&["config", "e1.0", "set", "host=a"]), "e1.0: config string is now \"host=a\"\n");
    assert_eq!(s.export().config_string(), b"host=a");
    // set again, with the same string: fine; with another: refused
    s.ok(&["config", "e1.0", "set", "host=a"]);
    s.fails(&["config", "e1.0", "set", "host=b"], "already has config string \"host=a\"");
    s.ok(&["config", "e1.0", "force", "host=b"]);
    assert_eq!(s.export().config_string(), b"host=b");
    assert!(s.ok(&["config", "e1.0", "read"]).contains("config       \"host=b\""));

    assert_eq!(s.ok(&["config", "e1.0", "test", "host=b"]), "e1.0: config string equals \"host=b\"\n");
    assert_eq!(s.ok(&["config", "e1.0", "prefix", "host="]), "e1.0: config string starts with \"host=\"\n");
    let start = Instant::now();
    s.fails(&["config", "e1.0", "test", "host=c", "--timeout", "300ms"], "config string does not match");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    s.fails(&["config", "e1.0", "prefix", "guest", "--timeout", "300ms"], "does not match");
}

#[test]
fn write_verify_and_read_back() {
    let Some(s) = Setup::new("write_verify_and_read_back") else { return };
    let data = pattern(42, 4 << 20);
    let input = Scratch::new("in");
    let output = Scratch::new("out");
    std::fs::write(input.path(), &data).unwrap();

    // An offset that is not a multiple of 512: the edges are read, patched and written.
    let out = s.aoe(&["write", "--verify", "--offset", "1000", "e1.0", input.path()]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("wrote 4194304 bytes (4 MiB) to e1.0 in "), "{err}");
    assert!(err.contains(" MB/s") && err.contains("verified: 4194304 bytes"), "{err}");
    let disk = s.backend.snapshot();
    assert!(disk[..1000].iter().all(|&b| b == 0));
    assert!(disk[1000..1000 + data.len()] == data[..], "the disk holds the file");
    assert!(disk[1000 + data.len()..].iter().all(|&b| b == 0));

    let out = s.aoe(&["read", "--offset", "1000", "--length", "4M", "e1.0", output.path()]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).starts_with("read 4194304 bytes (4 MiB) from e1.0 in "),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read(output.path()).unwrap() == data, "the file read back differs");

    // To stdout and from stdin.
    let out = s.aoe(&["read", "--offset", "1001", "--length", "3", "e1.0", "-"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, &data[1..4]);
    let out = s.aoe_with_input(&["write", "--offset", "8M", "e1.0", "-"], b"hello, disk");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(&s.backend.snapshot()[8 << 20..(8 << 20) + 11], b"hello, disk");

    // The whole disk to a file.
    let out = s.aoe(&["read", "e1.0", output.path()]);
    assert!(out.status.success());
    assert!(std::fs::read(output.path()).unwrap() == s.backend.snapshot());
}

/// Copies of several chunks (the tool keeps two in flight) land exactly, whatever their
/// alignment: a sector-aligned start with an odd tail, an unaligned start, and reads that
/// cross chunk boundaries at odd offsets.
#[test]
fn copies_of_many_chunks_land_exactly() {
    let Some(s) = Setup::new("copies_of_many_chunks_land_exactly") else { return };
    let data = pattern(7, (9 << 20) + 700);
    let input = Scratch::new("in");
    let output = Scratch::new("out");
    std::fs::write(input.path(), &data).unwrap();
    let mut model = vec![0u8; 16 << 20];
    for (offset, verify) in [(512usize, false), (3 << 20, true), (4097, false)] {
        let mut args = vec!["write", "--offset"];
        let at = offset.to_string();
        args.push(&at);
        if verify {
            args.push("--verify");
        }
        args.extend(["e1.0", input.path()]);
        let out = s.aoe(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        model[offset..offset + data.len()].copy_from_slice(&data);
        assert!(s.backend.snapshot() == model, "write at {offset} (verify: {verify})");
    }
    for (offset, length) in
        [(0usize, 16usize << 20), (512, (9 << 20) + 700), (4095, (8 << 20) + 3), (1 << 20, 12 << 20)]
    {
        let (at, len) = (offset.to_string(), length.to_string());
        let out = s.aoe(&["read", "--offset", &at, "--length", &len, "e1.0", output.path()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(std::fs::read(output.path()).unwrap() == model[offset..offset + length], "read at {offset}");
    }
}

#[test]
fn out_of_range_and_short_input() {
    let Some(s) = Setup::new("out_of_range_and_short_input") else { return };
    s.fails(
        &["read", "--offset", "17M", "e1.0", "-"],
        "out of range: offset 17825792 is beyond the end of e1.0",
    );
    s.fails(
        &["read", "--offset", "15M", "--length", "2M", "e1.0", "-"],
        "out of range: 2097152 bytes from offset",
    );
    let input = Scratch::new("big");
    std::fs::write(input.path(), vec![7u8; 8192]).unwrap();
    s.fails(&["write", "--offset", "16380K", "e1.0", input.path()], "out of range");
    assert!(s.backend.snapshot().iter().all(|&b| b == 0), "nothing was written");
    s.fails(
        &["write", "--length", "9000", "e1.0", input.path()],
        "holds 8192 bytes, fewer than --length 9000",
    );
    // stdin longer than the room left: what fits is written, then the overflow is reported
    let out = s.aoe_with_input(&["write", "--offset", "16380K", "e1.0", "-"], &[9u8; 8192]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("runs past the end of e1.0"), "{}", text(&out.stderr));
    assert!(s.backend.snapshot()[16380 << 10..].iter().all(|&b| b == 9));
}

#[test]
fn a_local_file_that_fails_is_one_clear_error() {
    let Some(s) = Setup::new("a_local_file_that_fails_is_one_clear_error") else { return };
    // A full disk on the local side: every write to /dev/full fails with ENOSPC.
    s.fails(&["read", "e1.0", "/dev/full"], "aoe: writing /dev/full: No space left on device");
    // An input that cannot be read past its start: a directory opens, and reads fail.
    s.fails(&["write", "e1.0", "/"], "aoe: reading /: Is a directory");
    assert!(s.backend.snapshot().iter().all(|&b| b == 0), "nothing was written");
}

#[test]
fn mask_list_add_del() {
    let Some(s) = Setup::new("mask_list_add_del") else { return };
    let me = s.initiator_mac();
    assert_eq!(s.ok(&["mask", "e1.0"]), "e1.0: mask list is empty (every initiator is answered)\n");
    // Our own MAC goes in with the stranger's, or the disk would stop answering us.
    let out = s.ok(&["mask", "e1.0", "add", &me, STRANGER]);
    assert!(out.contains(&me) && out.contains(STRANGER), "{out}");
    assert_eq!(s.export().mask().len(), 2);
    let out = s.ok(&["mask", "e1.0", "list"]);
    assert!(out.starts_with("e1.0: mask list: ") && out.contains(&me) && out.contains(STRANGER), "{out}");
    assert_eq!(s.ok(&["mask", "e1.0", "del", "02AABBCCDD01"]), format!("e1.0: mask list: {me}\n"));
    assert_eq!(
        s.ok(&["mask", "e1.0", "del", &me]),
        "e1.0: mask list is empty (every initiator is answered)\n"
    );
    assert!(s.export().mask().is_empty());
}

#[test]
fn reserve_set_list_release() {
    let Some(s) = Setup::new("reserve_set_list_release") else { return };
    let me = s.initiator_mac();
    assert_eq!(s.ok(&["reserve", "e1.0"]), "e1.0: not reserved\n");
    assert_eq!(s.ok(&["reserve", "e1.0", "set", &me]), format!("e1.0: reserved for {me}\n"));
    assert_eq!(s.ok(&["reserve", "e1.0", "list"]), format!("e1.0: reserved for {me}\n"));
    assert_eq!(s.export().reservations().len(), 1);
    // we hold it, so I/O works
    s.ok(&["read", "--length", "4K", "e1.0", "/dev/null"]);
    assert_eq!(s.ok(&["reserve", "e1.0", "set"]), "e1.0: not reserved\n", "set with no MAC releases");

    // Someone else holds it: our I/O and a plain set are refused, force takes it.
    s.ok(&["reserve", "e1.0", "force", STRANGER]);
    s.fails(&["read", "--length", "4K", "e1.0", "/dev/null"], "e1.0: AoE error 6: target is reserved");
    s.fails(&["reserve", "e1.0", "set", &me], &format!("e1.0: reserved by {STRANGER}, not changed"));
    assert_eq!(s.ok(&["reserve", "e1.0", "force", &me]), format!("e1.0: reserved for {me}\n"));
    assert_eq!(s.ok(&["reserve", "e1.0", "release"]), "e1.0: not reserved\n");
    assert!(s.export().reservations().is_empty());
}

#[test]
fn bench_reads_only_by_default() {
    let Some(s) = Setup::new("bench_reads_only_by_default") else { return };
    s.backend.write_at(&pattern(1, 4 << 20), 0).unwrap();
    let before = s.backend.snapshot();
    let out = s.ok(&["bench", "--size", "4M", "--seconds", "200ms", "e1.0"]);
    for want in ["sequential read", "4 MiB", "MB/s", "skipped: --write runs it", "QD 1", "QD 32", "IOPS"] {
        assert!(out.contains(want), "{want:?} missing from {out}");
    }
    assert!(s.backend.snapshot() == before, "bench without --write changed the disk");
    let out = s.ok(&["bench", "--size", "1M", "--seconds", "100ms", "--write", "e1.0"]);
    assert!(out.contains("sequential write + flush"), "{out}");
}

#[test]
fn errors_name_what_went_wrong() {
    let Some(s) = Setup::new("errors_name_what_went_wrong") else { return };
    let ifname = s.link.initiator_if();
    s.fails(
        &["identify", "e9.9", "--timeout", "300ms"],
        &format!("aoe: no such disk: e9.9 not found on {ifname}"),
    );
    s.fails(&["-i", "nosuch0", "discover"], "aoe: no such interface: nosuch0");
    // A second interface, down: a veth pair with both ends in the initiator namespace.
    let add = ["link", "add", "aoedown0", "type", "veth", "peer", "name", "aoedown1"];
    let out = s.link.initiator.run("ip", &add, LIMIT).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.fails(&["-i", "aoedown0", "discover"], "aoe: interface aoedown0 is down");
    // Not root: no raw socket.
    let out = s
        .link
        .initiator
        .run(
            "setpriv",
            &["--reuid=65534", "--regid=65534", "--clear-groups", AOE, "-i", ifname, "discover"],
            LIMIT,
        )
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!("aoe: permission denied opening a raw socket on {ifname} (needs root or CAP_NET_RAW)\n")
    );
}

#[test]
fn a_target_that_goes_silent_is_given_up() {
    // Answers everything but reads: discovery and IDENTIFY work, the read never completes.
    let reads = &[AtaCommand::ReadSectors, AtaCommand::ReadSectorsExt];
    let Some(s) = Setup::silent_for("a_target_that_goes_silent_is_given_up", reads) else { return };
    let start = Instant::now();
    s.fails(
        &["read", "--length", "4K", "--dead-timeout", "1s", "e1.0", "/dev/null"],
        "aoe: e1.0: target went silent: no answer for 1s, declared dead",
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
}

/// A write to a target that goes silent fails after one dead timeout, not two: the flush
/// of what was written before the failure waits a moment only.
#[test]
fn a_write_to_a_target_that_goes_silent_fails_after_one_dead_timeout() {
    // Answers everything but writes and flushes.
    let writes = &[
        AtaCommand::WriteSectors,
        AtaCommand::WriteSectorsExt,
        AtaCommand::FlushCache,
        AtaCommand::FlushCacheExt,
    ];
    let name = "a_write_to_a_target_that_goes_silent_fails_after_one_dead_timeout";
    let Some(s) = Setup::silent_for(name, writes) else { return };
    let start = Instant::now();
    s.fails(
        &["write", "--length", "1M", "--dead-timeout", "3s", "e1.0", "/dev/zero"],
        "aoe: e1.0: target went silent: no answer for 3s, declared dead",
    );
    // A second dead timeout would end it after 6 s.
    assert!(start.elapsed() < Duration::from_millis(5500), "{:?}", start.elapsed());
}

/// `aoe demo` itself: it needs root, which these tests have.
#[test]
fn demo_runs_and_cleans_up() {
    if !netns_available("demo_runs_and_cleans_up") {
        return;
    }
    let mut demo = Guarded::spawn({
        let mut cmd = Command::new(AOE);
        cmd.arg("demo").env_remove("RUST_LOG");
        cmd
    })
    .unwrap();
    let status: Option<ExitStatus> = demo.wait_timeout(LIMIT).unwrap();
    let (out, err) = (demo.stdout(), demo.stderr());
    eprintln!("$ aoe demo\n{status:?}\n{out}{err}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    for want in [
        "veth pair at MTU 9000",
        "serving e1.0: 256 MiB in memory",
        "DISK  PATHS (IFACE→MAC)",
        "wrote 67108864 bytes (64 MiB) of random data to e1.0 in ",
        "read 67108864 bytes (64 MiB) back from e1.0 in ",
        "verified: the 67108864 bytes read back are the bytes written",
        "cleaned up",
    ] {
        assert!(out.contains(want), "{want:?} missing from {out}");
    }
    assert!(err.is_empty(), "{err}");
    assert_no_demo_namespaces(demo.pid());
}

/// Interrupted, the demo still removes its namespaces.
#[test]
fn demo_cleans_up_on_sigint() {
    if !netns_available("demo_cleans_up_on_sigint") {
        return;
    }
    let mut demo = Guarded::spawn({
        let mut cmd = Command::new(AOE);
        cmd.arg("demo").env_remove("RUST_LOG");
        cmd
    })
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || demo.stdout().contains("target:")),
        "the demo did not start: {}",
        demo.stderr()
    );
    let pid = demo.pid();
    signal(pid, "INT");
    let status = demo.wait_timeout(Duration::from_secs(20)).unwrap();
    let code = status.and_then(|s| s.code());
    eprintln!("aoe demo, interrupted: {status:?}\n{}{}", demo.stdout(), demo.stderr());
    // Usually interrupted (130); a demo that had just finished exits 0.
    assert!(matches!(code, Some(130) | Some(0)), "{status:?}: {}", demo.stderr());
    if code == Some(130) {
        assert!(
            demo.stderr().contains("aoe: interrupted; removing the demo's namespaces"),
            "{}",
            demo.stderr()
        );
    }
    assert_no_demo_namespaces(pid);
}

/// Sends SIGname to process `pid` (not yet reaped, so the pid is still ours).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([format!("-{name}"), pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

fn assert_no_demo_namespaces(pid: u32) {
    let left: Vec<String> = aoe_testkit::netns::list()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with("aoe-demo-") && aoe_testkit::netns::made_by(name, pid))
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

/// Transmitted packets per interface, from the namespace's `/proc/net/dev`.
fn tx_packets(ns: &aoe_testkit::netns::Netns) -> std::collections::HashMap<String, u64> {
    let out = ns.run("cat", &["/proc/net/dev"], LIMIT).unwrap();
    text(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, counters)| {
            let tx = counters.split_whitespace().nth(9).and_then(|n| n.parse().ok()).unwrap_or(0);
            (name.trim().to_owned(), tx)
        })
        .collect()
}

/// Two veth pairs between the namespaces, the target serving on both: one disk, two paths,
/// and the initiator spreads its frames over both.
#[test]
fn multipath_uses_both_links() {
    if !netns_available("multipath_uses_both_links") {
        return;
    }
    let link = Link::new("aoemp", 9000).unwrap();
    let second = aoe_testkit::netns::Veth::new(&link.target, &link.initiator, 9000).unwrap();
    let backend = Arc::new(MemoryBackend::new(DISK_BYTES));
    let export: SharedExport =
        Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), Arc::clone(&backend))));
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<JoinHandle<()>> = [link.target_if().to_owned(), second.a_name().to_owned()]
        .into_iter()
        .map(|ifname| {
            let (e, s) = (Arc::clone(&export), Arc::clone(&stop));
            let (tx, rx) = mpsc::channel();
            let handle = link.target.spawn_thread(move || {
                let transport = AfPacket::open(&ifname, AfPacketOptions::default()).unwrap();
                tx.send(()).unwrap();
                let mut server = Server::new(transport, vec![e]);
                server.run(&s).unwrap();
            });
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
            handle
        })
        .collect();
    let run = |args: &[&str]| {
        let out = link.initiator.run(AOE, args, LIMIT).unwrap();
        eprintln!("$ aoe {}\n{:?}\n{}{}", args.join(" "), out.status, text(&out.stdout), text(&out.stderr));
        assert!(out.status.success());
        text(&out.stdout)
    };

    let v: serde_json::Value = serde_json::from_str(&run(&["discover", "--json"])).unwrap();
    let paths = v[0]["paths"].as_array().unwrap();
    let ifaces: Vec<&str> = paths.iter().map(|p| p["iface"].as_str().unwrap()).collect();
    let mut want = vec![link.initiator_if(), second.b_name()];
    want.sort();
    assert_eq!(ifaces, want, "{v}");

    let input = Scratch::new("mp");
    let data = pattern(7, 8 << 20);
    std::fs::write(input.path(), &data).unwrap();
    let before = tx_packets(&link.initiator);
    run(&["-i", link.initiator_if(), "-i", second.b_name(), "write", "--verify", "e1.0", input.path()]);
    let after = tx_packets(&link.initiator);
    assert!(backend.snapshot()[..data.len()] == data[..]);
    for ifname in [link.initiator_if(), second.b_name()] {
        let sent = after[ifname] - before[ifname];
        // 8 MiB at 17 sectors a frame is about 964 write frames, as many reads back.
        assert!(sent > 300, "only {sent} frames left on {ifname}: {before:?} -> {after:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}

/// A target that corrupts one byte of what it reads back: `write --verify` must notice and
/// name the first differing byte.
#[test]
fn verify_reports_the_first_difference() {
    // The byte of the disk whose reads come back flipped.
    const BAD: usize = 3 * 512 + 7;
    let Some(s) = Setup::with_loop("verify_reports_the_first_difference", |mut link, export, stop| {
        let port = Port::new(link.mac(), link.mtu());
        let mut rx = FrameBatch::new(64, 14 + link.mtu());
        let mut tx = FrameBatch::new(64, 14 + link.mtu());
        while !stop.load(Ordering::Relaxed) {
            link.recv_batch(&mut rx, Some(Duration::from_millis(100))).unwrap();
            tx.clear();
            for frame in rx.iter() {
                let read_lba = Frame::parse(frame).ok().and_then(|f| match f.body {
                    Body::Ata { header, .. }
                        if matches!(
                            header.command(),
                            AtaCommand::ReadSectors | AtaCommand::ReadSectorsExt
                        ) =>
                    {
                        Some((header.lba48() & 0x0FFF_FFFF_FFFF, usize::from(header.sector_count)))
                    }
                    _ => None,
                });
                let mut export = export.lock().unwrap();
                tx.push_with(|buf| {
                    let n = answer(&mut export, &port, frame, buf);
                    if let Some((lba, sectors)) = read_lba {
                        let first = lba as usize * 512;
                        if (first..first + sectors * 512).contains(&BAD) && n > 0 {
                            // Read data starts after the 14 + 10 + 12 header bytes.
                            buf[36 + BAD - first] ^= 0xFF;
                        }
                    }
                    n
                });
            }
            link.send_batch(&tx).unwrap();
        }
    }) else {
        return;
    };
    let input = Scratch::new("bad");
    std::fs::write(input.path(), pattern(3, 64 << 10)).unwrap();
    let line = s.fails(&["write", "--verify", "--offset", "512", "e1.0", input.path()], "verify failed: ");
    let want = format!("byte {BAD} of e1.0 (byte {} of {})", BAD - 512, input.path());
    assert!(line.contains(&want), "{line:?} lacks {want:?}");
}

#[test]
fn demo_needs_root() {
    if !netns_available("demo_needs_root") {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", AOE, "demo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "aoe demo needs root: it builds two private network namespaces joined by a veth pair\n"
    );
    assert!(out.stdout.is_empty());
}

/// Regression: `aoe bench ... | grep -q read` panicked with "failed printing to stdout:
/// Broken pipe" (exit 101), and `aoe read ... >&-` exited 0 having written nothing.
#[test]
fn a_closed_pipe_or_stdout_is_handled() {
    use std::os::unix::process::ExitStatusExt;
    let Some(s) = Setup::new("a_closed_pipe_or_stdout_is_handled") else { return };
    for args in [&["read", "e1.0", "-"][..], &["discover"], &["bench", "--size", "1M", "e1.0"]] {
        let mut cmd = s.link.initiator.command(AOE);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // The reader goes away before the tool writes anything.
        drop(child.stdout.take());
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let out = match rx.recv_timeout(LIMIT) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                signal(pid, "KILL");
                panic!("aoe {args:?} did not finish within {LIMIT:?}");
            }
        };
        let err = text(&out.stderr);
        assert!(!err.contains("panicked") && out.status.code() != Some(101), "aoe {args:?}: {err}");
        assert_eq!(err, "", "aoe {args:?}: quiet, as other tools");
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
            "aoe {args:?}: {:?}",
            out.status
        );
    }
    // No standard output at all: a failure, not a silent success.
    let out = s
        .link
        .initiator
        .run("sh", &["-c", &format!("exec {AOE} read --length 64K e1.0 - >&-")], LIMIT)
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end(), "aoe: stdout is closed: nowhere to write e1.0's data");
    // Explicitly to /dev/null is still fine.
    let out = s
        .link
        .initiator
        .run("sh", &["-c", &format!("exec {AOE} read --length 64K e1.0 - >/dev/null")], LIMIT)
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Regression: two different disks (16 MiB and 4 MiB) that both answer as e1.0 were merged
/// into one disk with two paths, and a read mixed the sectors of both. Now discover shows a
/// conflict and read and write refuse the disk, naming both MACs.
#[test]
fn two_disks_at_one_address_are_refused() {
    if !netns_available("two_disks_at_one_address_are_refused") {
        return;
    }
    let link = Link::new("aoeconf", 9000).unwrap();
    let second = aoe_testkit::netns::Veth::new(&link.target, &link.initiator, 9000).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<JoinHandle<()>> =
        [(link.target_if().to_owned(), DISK_BYTES), (second.a_name().to_owned(), 4 << 20)]
            .into_iter()
            .map(|(ifname, bytes)| {
                let backend = Arc::new(MemoryBackend::new(bytes));
                let export: SharedExport =
                    Arc::new(Mutex::new(Export::new(ExportConfig::new(1, 0), backend)));
                let s = Arc::clone(&stop);
                let (tx, rx) = mpsc::channel();
                let handle = link.target.spawn_thread(move || {
                    let transport = AfPacket::open(&ifname, AfPacketOptions::default()).unwrap();
                    tx.send(()).unwrap();
                    let mut server = Server::new(transport, vec![export]);
                    server.run(&s).unwrap();
                });
                rx.recv_timeout(Duration::from_secs(10)).unwrap();
                handle
            })
            .collect();
    let run = |args: &[&str]| {
        let out = link.initiator.run(AOE, args, LIMIT).unwrap();
        eprintln!("$ aoe {}\n{:?}\n{}{}", args.join(" "), out.status, text(&out.stdout), text(&out.stderr));
        out
    };
    let (one, two) = (mac(link.veth.a_mac()), mac(second.a_mac()));

    let out = run(&["discover"]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    let conflict =
        table.lines().find(|l| l.starts_with("conflict: e1.0")).unwrap_or_else(|| panic!("{table}"));
    assert!(conflict.contains(&one) && conflict.contains(&two), "{conflict}");
    assert!(conflict.contains("16 MiB") && conflict.contains("4 MiB"), "{conflict}");
    let v: serde_json::Value = serde_json::from_str(&text(&run(&["discover", "--json"]).stdout)).unwrap();
    assert_eq!(v[0]["paths"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["conflicts"].as_array().unwrap().len(), 1, "{v}");

    let out_file = Scratch::new("conflict");
    for args in [&["read", "--length", "64K", "e1.0", out_file.path()][..], &["write", "e1.0", "/dev/null"]] {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "aoe {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("aoe: e1.0") && err.contains(&one) && err.contains(&two), "{err}");
    }
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}
