//! Namespaces and veth pairs (need root; skipped otherwise).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use aoe_testkit::netns::{Link, Netns, Side, Veth};
use aoe_testkit::packet::{ifindex, PacketSocket, ETH_P_ALL};
use aoe_testkit::privilege::netns_available;
use aoe_testkit::process::wait_until;

/// Local experimental EtherType, so no real protocol reacts to test frames.
const ETH_P_TEST: u16 = 0x88B5;

fn netns_list() -> Vec<String> {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn link_show(ns: &Netns, ifname: &str) -> String {
    let out = ns.run("ip", &["-o", "link", "show", "dev", ifname], Duration::from_secs(5)).unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Flags between `<` and `>` in `ip -o link show` output.
fn flags(show: &str) -> Vec<String> {
    let start = show.find('<').unwrap() + 1;
    let end = show.find('>').unwrap();
    show[start..end].split(',').map(str::to_owned).collect()
}

fn thread_netns_id() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[test]
fn link_mtu_macs_enter_and_cleanup() {
    if !netns_available("link_mtu_macs_enter_and_cleanup") {
        return;
    }
    let started = Instant::now();
    let link = Link::new("tklink", 9000).unwrap();
    let names = [link.target.name().to_owned(), link.initiator.name().to_owned()];
    assert_ne!(names[0], names[1]);
    assert!(names[0].starts_with("tklink-t-") && names[1].starts_with("tklink-i-"));
    let listed = netns_list();
    assert!(names.iter().all(|n| listed.contains(n)), "{listed:?}");

    let (a, b) = (link.veth.a_name(), link.veth.b_name());
    assert_ne!(a, b);
    assert!(a.len() <= 15 && b.len() <= 15);
    assert_eq!(link.target_if(), a);
    assert_eq!(link.initiator_if(), b);

    let (a_mac, b_mac) = (link.veth.a_mac(), link.veth.b_mac());
    assert_ne!(a_mac, b_mac);
    for mac in [a_mac, b_mac] {
        assert_eq!(mac[0] & 1, 0, "multicast MAC {mac:02x?}");
        assert_ne!(mac, [0; 6]);
    }

    for (ns, ifname, mac) in [(&link.target, a, a_mac), (&link.initiator, b, b_mac)] {
        let show = link_show(ns, ifname);
        assert!(show.contains(" mtu 9000 "), "{show}");
        assert!(flags(&show).iter().any(|f| f == "UP"), "{show}");
        let mac_text = mac.map(|x| format!("{x:02x}")).join(":");
        assert!(show.contains(&mac_text), "{show} lacks {mac_text}");
    }

    // Inside `enter`, namespace-aware interfaces show the veth...
    let outside = thread_netns_id();
    let (index, dev, sysfs) = link.target.enter(|| {
        assert_ne!(thread_netns_id(), outside);
        (
            ifindex(a).unwrap(),
            std::fs::read_to_string("/proc/thread-self/net/dev").unwrap(),
            std::path::Path::new("/sys/class/net").join(a).exists(),
        )
    });
    assert!(index > 0);
    assert!(dev.contains(&format!("{a}:")), "{dev}");
    // ...but the sysfs mounted by the parent namespace does not.
    assert!(!sysfs, "/sys/class/net inside enter() unexpectedly shows {a}");
    assert_eq!(thread_netns_id(), outside);
    assert!(ifindex(a).is_err(), "{a} visible outside its namespace");
    // `ip netns exec` remounts /sys, so a command run there does see it.
    let ls = link.target.run("ls", &["/sys/class/net"], Duration::from_secs(5)).unwrap();
    let ls = String::from_utf8(ls.stdout).unwrap();
    assert!(ls.lines().any(|l| l == a), "{ls}");
    assert!(!ls.lines().any(|l| l == b || l == "eth0"), "{ls}");

    drop(link);
    let listed = netns_list();
    for name in &names {
        assert!(!listed.contains(name), "{name} still listed: {listed:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn frames_cross_the_veth_and_sockets_keep_their_namespace() {
    if !netns_available("frames_cross_the_veth_and_sockets_keep_their_namespace") {
        return;
    }
    let link = Link::new("tkfrm", 1500).unwrap();
    let tx = PacketSocket::open_in(&link.initiator, link.initiator_if(), ETH_P_TEST).unwrap();
    let rx = PacketSocket::open_in(&link.target, link.target_if(), ETH_P_TEST).unwrap();
    // Both sockets are used from a thread that is back in its own namespace.
    let mut frame = Vec::new();
    frame.extend_from_slice(&link.veth.a_mac());
    frame.extend_from_slice(&link.veth.b_mac());
    frame.extend_from_slice(&ETH_P_TEST.to_be_bytes());
    frame.extend_from_slice(b"aoe-testkit hello");
    tx.send(&frame).unwrap();
    let got = rx
        .recv_matching(Duration::from_secs(3), |f| f.len() >= 14 && f[6..12] == link.veth.b_mac())
        .unwrap()
        .expect("frame did not arrive");
    assert_eq!(rx.recv_timeout(Duration::from_millis(100)).unwrap(), None);
    assert_eq!(got.len(), 60, "short frames are padded to 60 bytes");
    assert_eq!(&got[..frame.len()], &frame[..]);
    // An ETH_P_ALL socket sees outgoing frames too (except its own).
    let sniffer = PacketSocket::open_in(&link.initiator, link.initiator_if(), ETH_P_ALL).unwrap();
    frame.push(b'!');
    tx.send(&frame).unwrap();
    let seen = sniffer.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(&seen[..frame.len()], &frame[..]);
    assert_eq!(tx.recv_timeout(Duration::from_millis(100)).unwrap(), None);
    let got = rx.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(&got[..frame.len()], &frame[..]);

    // Taking an end down reports ENETDOWN once on packet sockets bound to
    // it, and stops the traffic.
    link.veth.set_up(Side::A, false).unwrap();
    let _ = tx.send(&frame);
    let err = rx.recv_timeout(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENETDOWN), "{err}");
    assert_eq!(rx.recv_timeout(Duration::from_millis(200)).unwrap(), None);
}

#[test]
fn enter_restores_after_panic_and_nests() {
    if !netns_available("enter_restores_after_panic_and_nests") {
        return;
    }
    let one = Netns::new("tkent1").unwrap();
    let two = Netns::new("tkent2").unwrap();
    let home = thread_netns_id();
    let result =
        catch_unwind(AssertUnwindSafe(|| one.enter(|| -> () { panic!("boom inside the namespace") })));
    assert!(result.is_err());
    assert_eq!(thread_netns_id(), home);

    let (id_one, id_two, id_one_again) = one.enter(|| {
        let a = thread_netns_id();
        let b = two.enter(thread_netns_id);
        (a, b, thread_netns_id())
    });
    assert_ne!(id_one, home);
    assert_ne!(id_two, home);
    assert_ne!(id_one, id_two);
    assert_eq!(id_one, id_one_again);
    assert_eq!(thread_netns_id(), home);

    // A thread spawned into the namespace lives there.
    let seen = one.spawn_thread(thread_netns_id).join().unwrap();
    assert_eq!(seen, id_one);
}

#[test]
fn spawn_thread_sees_the_veth() {
    if !netns_available("spawn_thread_sees_the_veth") {
        return;
    }
    let link = Link::new("tkthr", 1500).unwrap();
    let a = link.target_if().to_owned();
    let b = link.initiator_if().to_owned();
    let handle = link.target.spawn_thread(move || (ifindex(&a).is_ok(), ifindex(&b).is_ok()));
    assert_eq!(handle.join().unwrap(), (true, false));
}

#[test]
fn set_up_toggles_link_state() {
    if !netns_available("set_up_toggles_link_state") {
        return;
    }
    let link = Link::new("tkupd", 1500).unwrap();
    let (a, b) = (link.target_if(), link.initiator_if());
    let has = |ns: &Netns, ifname: &str, flag: &str| flags(&link_show(ns, ifname)).iter().any(|f| f == flag);
    assert!(wait_until(Duration::from_secs(3), || has(&link.target, a, "LOWER_UP")));

    link.veth.set_up(Side::B, false).unwrap();
    assert!(!has(&link.initiator, b, "UP"));
    assert!(wait_until(Duration::from_secs(3), || has(&link.target, a, "NO-CARRIER")));

    link.veth.set_up(Side::B, true).unwrap();
    assert!(has(&link.initiator, b, "UP"));
    assert!(wait_until(Duration::from_secs(3), || has(&link.target, a, "LOWER_UP")));
}

#[test]
fn several_veths_between_the_same_namespaces() {
    if !netns_available("several_veths_between_the_same_namespaces") {
        return;
    }
    let x = Netns::new("tkmul-x").unwrap();
    let y = Netns::new("tkmul-y").unwrap();
    let one = Veth::new(&x, &y, 1500).unwrap();
    let two = Veth::new(&x, &y, 4000).unwrap();
    assert_ne!(one.a_name(), two.a_name());
    assert_ne!(one.b_name(), two.b_name());
    assert_eq!(one.name(Side::A), one.a_name());
    assert_eq!(two.netns_name(Side::B), y.name());
    assert!(link_show(&y, two.b_name()).contains(" mtu 4000 "));
    let err = Veth::new(&x, &x, 1500).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);

    // Dropping a veth removes both ends; dropping it after its namespace is
    // gone is quiet and harmless.
    let (a1, b1) = (one.a_name().to_owned(), one.b_name().to_owned());
    drop(one);
    assert!(x.enter(|| ifindex(&a1).is_err()));
    assert!(y.enter(|| ifindex(&b1).is_err()));
    drop(x);
    drop(two);
}

#[test]
fn netns_deleted_on_panic_and_leftovers_killed() {
    if !netns_available("netns_deleted_on_panic_and_leftovers_killed") {
        return;
    }
    let mut name = String::new();
    let mut child = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("tkpanic").unwrap();
        name = ns.name().to_owned();
        let spawned = ns.command("sleep").arg("30").spawn().unwrap();
        // Once `ip netns exec` has exec'd sleep, it is inside the namespace.
        let comm = format!("/proc/{}/comm", spawned.id());
        assert!(wait_until(Duration::from_secs(3), || {
            std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
        }));
        child = Some(spawned);
        panic!("test failure while the namespace exists");
    }));
    assert!(result.is_err());
    assert!(!name.is_empty());
    assert!(!netns_list().contains(&name), "{name} survived a panic");
    // The process left inside was killed when the namespace was dropped.
    let mut child = child.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "process in dropped namespace still alive");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
}

#[test]
fn run_collects_output_and_times_out() {
    if !netns_available("run_collects_output_and_times_out") {
        return;
    }
    let ns = Netns::new("tkrun").unwrap();
    let out = ns.run("sh", &["-c", "echo hi; echo err >&2; exit 3"], Duration::from_secs(5)).unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");

    let started = Instant::now();
    let err = ns
        .run("sh", &["-c", "echo partial; echo complaint >&2; sleep 10 & wait"], Duration::from_millis(300))
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    let msg = err.to_string();
    for needle in ["timed out", "partial", "complaint", ns.name()] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }

    let err = ns.run("aoe-testkit-no-such-program", &[], Duration::from_secs(5)).unwrap();
    assert!(!err.status.success());
}
