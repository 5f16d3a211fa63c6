//! `aoe demo`: the whole stack on one machine without touching any of its networks.
//!
//! Two network namespaces are made with [`aoe_testkit::netns`] (the code the tests build
//! their private links with), joined by a veth pair created directly inside them (so nothing
//! appears in the caller's namespace, whatever names it already uses). A thread moves into
//! the target namespace and serves an in-memory disk with [`aoe_target::server::Server`];
//! another moves into the initiator namespace and runs the initiator side with the same code
//! as `aoe discover`, `aoe write` and `aoe read`.
//! The namespaces (and with them the veth pair) are deleted on the way out, on errors, and on
//! SIGINT or SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use aoe_initiator::Device;
use aoe_proto::MacAddr;
use aoe_target::backend::MemoryBackend;
use aoe_target::export::{Export, ExportConfig};
use aoe_target::server::Server;
use aoe_testkit::netns::{self, Netns, Veth};
use aoe_transport::afpacket::{AfPacket, AfPacketOptions};
use aoe_transport::Transport;

use super::bench::{self, Plan};
use super::progress::summary;
use super::rng;
use super::{discover, format, iface, sys, Cli, DemoArgs, DiskName, Failure};

/// MTU of the veth pair: jumbo frames, 17 sectors per AoE frame.
const MTU: u32 = 9000;
/// Size of the in-memory disk.
const DISK_BYTES: usize = 256 << 20;
/// Random data written, read back and compared.
const DATA_BYTES: usize = 64 << 20;
/// The demo disk's address.
const DISK: DiskName = DiskName { shelf: 1, slot: 0 };
/// Interface names inside the two namespaces.
const TARGET_IF: &str = "veth-target";
const INITIATOR_IF: &str = "veth-init";
/// How long the target thread may take to start serving.
const TARGET_START: Duration = Duration::from_secs(10);

pub(crate) fn run(cli: &Cli, args: &DemoArgs) -> Result<(), Failure> {
    if !sys::is_root() {
        return Err(Failure::usage(
            "aoe demo needs root: it builds two private network namespaces joined by a veth pair",
        )
        .unprefixed());
    }
    let signals = watch_signals()?;
    let result = demo(cli, args);
    signals.close();
    result
}

fn demo(cli: &Cli, args: &DemoArgs) -> Result<(), Failure> {
    println!(
        "aoe demo: an AoE target and an initiator in two private network namespaces, joined by a \
         veth pair at MTU {MTU}"
    );
    let target_ns =
        Netns::new("aoe-demo-target").map_err(|e| Failure::io("cannot create the target's namespace", e))?;
    let initiator_ns =
        Netns::new("aoe-demo-init").map_err(|e| Failure::io("cannot create the initiator's namespace", e))?;
    let (t, i) = (target_ns.name(), initiator_ns.name());
    let veth = Veth::named(&target_ns, TARGET_IF, &initiator_ns, INITIATOR_IF, MTU)
        .map_err(|e| Failure::io("cannot create the veth pair", e))?;

    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let target = std::thread::Builder::new()
            .name("aoe-demo-target".into())
            .spawn_scoped(scope, || target_ns.enter(|| serve(&stop, ready_tx)))
            .map_err(|e| Failure::io("cannot start the target thread", e))?;
        let outcome = match ready_rx.recv_timeout(TARGET_START) {
            Ok(Ok(mac)) => {
                println!(
                    "target:    namespace {t}, interface {TARGET_IF} ({mac}), serving {DISK}: {} in memory",
                    format::bytes(DISK_BYTES as u64)
                );
                std::thread::Builder::new()
                    .name("aoe-demo-initiator".into())
                    .spawn_scoped(scope, || initiator_ns.enter(|| initiate(cli, args, i)))
                    .map_err(|e| Failure::io("cannot start the initiator thread", e))?
                    .join()
                    .unwrap_or_else(|_| Err(Failure::new("the initiator thread panicked")))
            }
            Ok(Err(message)) => Err(Failure::new(format!("the demo target did not start: {message}"))),
            Err(_) => Err(Failure::new("the demo target did not start within 10 s")),
        };
        stop.store(true, Ordering::Relaxed);
        let served = target.join().unwrap_or_else(|_| Err("the target thread panicked".into()));
        match (outcome, served) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(Failure::new(format!("the demo target failed: {e}"))),
            (Ok(()), Ok(())) => Ok(()),
        }
    });
    let names = format!("{t} and {i}");
    drop(veth);
    drop(initiator_ns);
    drop(target_ns);
    println!("cleaned up: namespaces {names} and the veth pair between them are gone");
    result
}

/// The target side, on a thread inside the target namespace: serves the in-memory disk on
/// [`TARGET_IF`] until `stop`.
fn serve(stop: &AtomicBool, ready: mpsc::Sender<Result<MacAddr, String>>) -> Result<(), String> {
    let start = || -> Result<_, String> {
        // As aoe-target opens it.
        let opts = AfPacketOptions { rx_ring: true, ..AfPacketOptions::default() };
        let link = AfPacket::open(TARGET_IF, opts).map_err(|e| e.to_string())?;
        let config = ExportConfig {
            model: "aoe-rs demo disk (in memory)".into(),
            ..ExportConfig::new(DISK.shelf, DISK.slot)
        };
        let export = Export::new(config, MemoryBackend::new(DISK_BYTES));
        let mac = link.mac();
        let mut server = Server::new(link, vec![Arc::new(Mutex::new(export))]);
        server.announce().map_err(|e| format!("announcing on {TARGET_IF}: {e}"))?;
        Ok((server, mac))
    };
    let mut server = match start() {
        Ok((server, mac)) => {
            let _ = ready.send(Ok(mac));
            server
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    server.run(stop).map_err(|e| format!("serving on {TARGET_IF}: {e}"))
}

/// The initiator side, on a thread inside the initiator namespace `ns`.
fn initiate(cli: &Cli, args: &DemoArgs, ns: &str) -> Result<(), Failure> {
    let on = |e| Failure::disk(DISK, e);
    let names = iface::default_interfaces()?;
    println!(
        "initiator: namespace {ns}, interfaces that are up, Ethernet and not loopback: {}",
        names.join(", ")
    );
    let mut links = iface::open(&names)?;
    println!("\n$ aoe discover");
    let targets = discover::find(cli, &mut links)?;
    print!("{}", discover::table(&targets));
    let info = targets
        .into_iter()
        .find(|t| (t.shelf, t.slot) == (DISK.shelf, DISK.slot))
        .ok_or_else(|| Failure::new(format!("the demo disk {DISK} did not answer discovery")))?;
    println!();
    let mut dev = Device::with_target(links, info, &cli.device_options()).map_err(on)?;
    let mut data = vec![0u8; DATA_BYTES];
    rng::from_time().fill(&mut data);
    let n = DATA_BYTES as u64;

    let start = Instant::now();
    dev.write_at(&data, 0).map_err(on)?;
    println!("{}", summary("wrote", &format!("of random data to {DISK}"), n, start.elapsed()));

    let start = Instant::now();
    dev.flush().map_err(on)?;
    println!("flushed {DISK} (FLUSH CACHE EXT) in {}", format::secs(start.elapsed()));

    let mut back = vec![0u8; DATA_BYTES];
    let start = Instant::now();
    dev.read_at(&mut back, 0).map_err(on)?;
    println!("{}", summary("read", &format!("back from {DISK}"), n, start.elapsed()));

    if let Some(i) = data.iter().zip(&back).position(|(a, b)| a != b) {
        return Err(Failure::new(format!(
            "verify failed: byte {i} of {DISK} reads back 0x{:02x}, 0x{:02x} was written",
            back[i], data[i]
        )));
    }
    println!("verified: the {n} bytes read back are the bytes written");
    let s = dev.stats();
    println!(
        "frames: {} sent, {} retransmitted, {} answers; round trip {} µs",
        s.sent,
        s.retransmitted,
        s.answers,
        dev.session().srtt().map_or(0, |d| d.as_micros())
    );
    drop(dev);
    if args.bench {
        println!("\n$ aoe bench --write {DISK}");
        let plan = Plan { size: None, write: true, seconds: Duration::from_secs(2) };
        bench::bench(cli, &names, DISK, plan)?;
    }
    println!();
    Ok(())
}

/// On SIGINT or SIGTERM: delete the namespaces this process made (their drops will not run),
/// then exit with 128 + signal.
fn watch_signals() -> Result<signal_hook::iterator::Handle, Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::io("cannot handle SIGINT and SIGTERM", e))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("aoe-demo-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("aoe: interrupted; removing the demo's namespaces");
                netns::remove_all_made_by(std::process::id());
                std::process::exit(128 + signal);
            }
        })
        .map_err(|e| Failure::io("cannot start the signal thread", e))?;
    Ok(handle)
}
