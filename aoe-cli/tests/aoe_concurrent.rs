//! Several `aoe` processes on one interface at once, against the `aoe-target` program, its
//! engine in this process, and Debian's vblade, on a veth link between two private network
//! namespaces.
//!
//! Every packet socket on an interface sees every answer that reaches it, so each process
//! sees the answers meant for the others: each must take only its own (the tag salt, and
//! every answer checked against its request). Every byte is compared: what readers wrote to
//! their files against the image, and what writers wrote against the image file.
//!
//! The writers also run through a relay that drops and duplicates frames both ways, so that
//! retransmissions and duplicate answers of every process cross on the one interface.
//!
//! Needs root (and vblade for its half); skipped otherwise, unless AOE_REQUIRE_NETNS /
//! AOE_REQUIRE_PEERS say a skip is a failure. Every process is bounded in time.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aoe_testkit::data::{pattern, TempImage, MIB};
use aoe_testkit::netns::{Link, Netns};
use aoe_testkit::privilege::{netns_available, tool_available};
use aoe_testkit::process::vblade;
use aoe_testkit::relay::Relay;
use aoe_testkit::target::{file_export, Targets};
use aoe_transport::fault::Plan;

const AOE: &str = env!("CARGO_BIN_EXE_aoe");
const AOE_TARGET: &str = env!("CARGO_BIN_EXE_aoe-target");
/// Processes at once.
const PROCESSES: usize = 4;
/// Bytes each process moves: its own region of the disk.
const REGION: usize = 16 * MIB;
/// The longest one run of the processes may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Which target serves the image.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// The `aoe-target` program.
    Program,
    /// aoe-target's engine and server in a thread of this process.
    Engine,
    /// Debian's vblade.
    Vblade,
}

/// What joins the initiator to the target.
enum Net {
    /// A veth pair.
    Link(Link),
    /// Two veth pairs and a relay between them that drops and duplicates frames.
    Relay(Box<Relay>),
}

impl Net {
    fn initiator(&self) -> &Netns {
        match self {
            Net::Link(l) => &l.initiator,
            Net::Relay(r) => &r.initiator,
        }
    }

    fn target(&self) -> (&Netns, &str) {
        match self {
            Net::Link(l) => (&l.target, l.target_if()),
            Net::Relay(r) => (&r.target, r.target_if()),
        }
    }
}

/// `peer` serving `image` as e1.0 in the target namespace of `net`. The servers stop
/// before the namespaces go (fields drop in order).
struct Setup {
    _targets: Targets,
    /// vblade or the aoe-target program, when one of them serves.
    _program: Option<aoe_testkit::process::Guarded>,
    net: Net,
}

impl Setup {
    /// On a plain veth link, or through a lossy relay when `lossy` is given.
    fn new(test: &str, peer: Peer, mtu: u32, image: &TempImage, lossy: Option<Plan>) -> Option<Setup> {
        if !netns_available(test) {
            return None;
        }
        if matches!(peer, Peer::Vblade) && !tool_available(test, "vblade") {
            return None;
        }
        let net = match lossy {
            None => Net::Link(Link::new("aoeconc", mtu).unwrap()),
            Some(plan) => Net::Relay(Box::new(
                Relay::new("aoeclos", mtu, plan, Plan { seed: plan.seed + 1, ..plan }).unwrap(),
            )),
        };
        let (ns, ifname) = net.target();
        let mut targets = Targets::default();
        let program = match peer {
            Peer::Engine => {
                targets.serve(ns, ifname, vec![file_export(1, 0, image.path())]);
                None
            }
            Peer::Vblade => Some(vblade(ns, 1, 0, ifname, image.path())),
            Peer::Program => Some(aoe_target(ns, ifname, image.path())),
        };
        Some(Setup { _targets: targets, _program: program, net })
    }
}

/// Starts `aoe-target 1 0 IFNAME FILE` in `ns` and waits for its start-up line.
fn aoe_target(ns: &Netns, ifname: &str, file: &std::path::Path) -> aoe_testkit::process::Guarded {
    let mut cmd = ns.command(AOE_TARGET);
    cmd.args(["1", "0", ifname]).arg(file).env_remove("RUST_LOG");
    let target = aoe_testkit::process::Guarded::spawn(cmd).unwrap();
    let ready = format!("e1.0 on {ifname} (");
    assert!(
        aoe_testkit::process::wait_until(Duration::from_secs(10), || target.stderr().contains(&ready)),
        "aoe-target did not start: {:?}",
        target.stderr()
    );
    target
}

/// Starts `aoe ARGS` in `ns` with its output captured.
fn spawn(ns: &Netns, args: &[String]) -> Child {
    let mut cmd: Command = ns.command(AOE);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("starting aoe")
}

/// Waits for every child, killing those still running at `LIMIT`; panics unless each
/// exited 0. Returns their stderr.
fn wait_all(children: Vec<(String, Child)>) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    let mut errs = Vec::new();
    for (what, mut child) in children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(status.success(), "{what}: {status:?}: {stderr}");
        errs.push(stderr);
    }
    errs
}

fn region_args(i: usize) -> [String; 4] {
    ["--offset".into(), (i * REGION).to_string(), "--length".into(), REGION.to_string()]
}

/// `runs` rounds of PROCESSES concurrent `aoe read`s of disjoint regions, each output file
/// compared with the image.
fn concurrent_readers(test: &str, peer: Peer, mtu: u32, runs: usize) {
    let image = TempImage::new(PROCESSES * REGION, 0xC0FFEE).unwrap();
    let Some(setup) = Setup::new(test, peer, mtu, &image, None) else { return };
    let expected = pattern(0xC0FFEE, PROCESSES * REGION);
    for run in 0..runs {
        let outputs: Vec<TempImage> = (0..PROCESSES).map(|_| TempImage::zeroed(0).unwrap()).collect();
        let children = outputs
            .iter()
            .enumerate()
            .map(|(i, out)| {
                let mut args = vec!["read".to_string()];
                args.extend(region_args(i));
                args.push("e1.0".into());
                args.push(out.path().to_str().unwrap().into());
                (format!("run {run}: aoe {}", args.join(" ")), spawn(setup.net.initiator(), &args))
            })
            .collect();
        let start = Instant::now();
        let errs = wait_all(children);
        for (i, out) in outputs.iter().enumerate() {
            let got = out.read_all();
            let want = &expected[i * REGION..(i + 1) * REGION];
            assert_eq!(got.len(), REGION, "run {run}, reader {i}: {}", errs[i]);
            if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
                panic!("{peer:?} run {run}: reader {i} got wrong data from byte {at} of its region");
            }
        }
        eprintln!(
            "{peer:?} MTU {mtu} run {run}: {PROCESSES} readers in {:.2} s, every byte right",
            start.elapsed().as_secs_f64()
        );
    }
}

/// `runs` rounds of PROCESSES concurrent `aoe write`s of disjoint regions of `region`
/// bytes, each from its own file, then the image file compared with what each wrote.
fn concurrent_writers(test: &str, peer: Peer, mtu: u32, runs: usize, region: usize, lossy: Option<Plan>) {
    let image = TempImage::zeroed(PROCESSES * region).unwrap();
    let Some(setup) = Setup::new(test, peer, mtu, &image, lossy) else { return };
    for run in 0..runs {
        let seeds: Vec<u64> = (0..PROCESSES).map(|i| (run * PROCESSES + i) as u64 + 1).collect();
        let inputs: Vec<TempImage> = seeds.iter().map(|&s| TempImage::new(region, s).unwrap()).collect();
        let children = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let mut args = vec!["write".to_string(), "--offset".into(), (i * region).to_string()];
                args.push("e1.0".into());
                args.push(input.path().to_str().unwrap().into());
                (format!("run {run}: aoe {}", args.join(" ")), spawn(setup.net.initiator(), &args))
            })
            .collect();
        let start = Instant::now();
        wait_all(children);
        for (i, &seed) in seeds.iter().enumerate() {
            let got = image.read_at((i * region) as u64, region).unwrap();
            let want = pattern(seed, region);
            if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
                let sector = (i * region + at) / 512;
                panic!("{peer:?} run {run}: writer {i}'s region differs from byte {at} (sector {sector})");
            }
        }
        eprintln!(
            "{peer:?} MTU {mtu} run {run}: {PROCESSES} writers in {:.2} s, image right",
            start.elapsed().as_secs_f64()
        );
        if let Net::Relay(relay) = &setup.net {
            let (there, back) = (relay.to_target().stats(), relay.to_initiator().stats());
            eprintln!("relay: to the target {there:?}; to the initiators {back:?}");
            assert!(there.dropped > 0 && there.duplicated > 0 && back.dropped > 0 && back.duplicated > 0);
        }
    }
}

#[test]
fn four_readers_at_once_against_aoe_target() {
    concurrent_readers("four_readers_at_once_against_aoe_target", Peer::Program, 9000, 12);
}

#[test]
fn four_readers_at_once_against_vblade() {
    concurrent_readers("four_readers_at_once_against_vblade", Peer::Vblade, 9000, 12);
}

#[test]
fn four_writers_at_once_against_aoe_target() {
    concurrent_writers("four_writers_at_once_against_aoe_target", Peer::Program, 9000, 3, REGION, None);
}

#[test]
fn four_writers_at_once_against_vblade() {
    concurrent_writers("four_writers_at_once_against_vblade", Peer::Vblade, 9000, 3, REGION, None);
}

#[test]
fn four_readers_at_once_at_mtu_1500() {
    concurrent_readers("four_readers_at_once_at_mtu_1500", Peer::Engine, 1500, 2);
}

/// 5 % of the frames dropped and 5 % duplicated, each way, in the relay.
fn lossy() -> Plan {
    Plan { drop: 0.05, duplicate: 0.05, seed: 11, ..Plan::NONE }
}

#[test]
fn four_writers_at_once_through_a_lossy_link_against_aoe_target() {
    let test = "four_writers_at_once_through_a_lossy_link_against_aoe_target";
    concurrent_writers(test, Peer::Program, 9000, 2, 4 * MIB, Some(lossy()));
}

#[test]
fn four_writers_at_once_through_a_lossy_link_against_vblade() {
    let test = "four_writers_at_once_through_a_lossy_link_against_vblade";
    concurrent_writers(test, Peer::Vblade, 9000, 2, 4 * MIB, Some(lossy()));
}
