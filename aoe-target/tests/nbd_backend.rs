//! The NBD backend against a real server (nbdkit): many callers on one connection, a
//! read-only export, and a server stopped and started again under load. Skipped without
//! nbdkit unless AOE_REQUIRE_PEERS says a skip is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aoe_target::backend::nbd::{NbdAddress, NbdBackend, NbdOptions};
use aoe_target::backend::Backend;
use aoe_testkit::data::pattern;
use aoe_testkit::privilege::tool_available;
use aoe_testkit::process::{wait_until, Guarded};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn scratch(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "aoe-nbd-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `nbdkit ARGS` in the foreground on a Unix socket, once the socket is there.
fn nbdkit(socket: &Path, args: &[&str]) -> Guarded {
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-U"]).arg(socket).args(args);
    let server = Guarded::spawn(cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || socket.exists()), "nbdkit {args:?}: {}", server.stderr());
    server
}

fn unix(socket: &Path) -> NbdAddress {
    format!("nbd+unix:///?socket={}", socket.display()).parse().unwrap()
}

#[test]
fn many_callers_share_one_connection() {
    if !tool_available("many_callers_share_one_connection", "nbdkit") {
        return;
    }
    let socket = scratch("sock");
    let _server = nbdkit(&socket, &["memory", "16M"]);
    let nbd = NbdBackend::open(&unix(&socket), NbdOptions::default()).unwrap();
    assert_eq!((nbd.len(), nbd.connections()), (16 << 20, 1));
    assert!(!nbd.read_only() && nbd.info().can_flush());
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let nbd = &nbd;
            s.spawn(move || {
                for i in 0..64u64 {
                    let offset = (t * 64 + i) * 8192;
                    let data = pattern(t * 1000 + i, 8192);
                    nbd.write_at(&data, offset).unwrap();
                    let mut back = vec![0; 8192];
                    nbd.read_at(&mut back, offset).unwrap();
                    assert_eq!(back, data, "thread {t} block {i}");
                }
                nbd.flush().unwrap();
            });
        }
    });
    // Larger than the server's largest request (32 MiB cap aside): split, still right.
    let big = pattern(7, 4 << 20);
    nbd.write_at(&big, 512).unwrap();
    let mut back = vec![0; 4 << 20];
    nbd.read_at(&mut back, 512).unwrap();
    assert!(back == big);
    assert!(nbd.read_at(&mut back[..512], 16 << 20).is_err(), "past the end");
    assert_eq!(nbd.connections(), 1, "one connection carried it all");
}

#[test]
fn tcp_and_a_read_only_export() {
    if !tool_available("tcp_and_a_read_only_export", "nbdkit") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-r", "-i", "127.0.0.1", "-p", &port.to_string(), "pattern", "1M"]);
    let server = Guarded::spawn(cmd).unwrap();
    let address: NbdAddress = format!("nbd://127.0.0.1:{port}/").parse().unwrap();
    let mut nbd = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            nbd = NbdBackend::open(&address, NbdOptions::default()).ok();
            nbd.is_some()
        }),
        "{}",
        server.stderr()
    );
    let nbd = nbd.unwrap();
    assert!(nbd.read_only());
    // The pattern plugin: each 8-byte word holds its own offset, big-endian.
    let mut buf = vec![0; 1024];
    nbd.read_at(&mut buf, 4096).unwrap();
    assert_eq!(&buf[8..16], &4104u64.to_be_bytes());
    let err = nbd.write_at(&buf, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn a_restarted_server_is_reconnected_and_requests_in_flight_retried() {
    if !tool_available("a_restarted_server_is_reconnected_and_requests_in_flight_retried", "nbdkit") {
        return;
    }
    let socket = scratch("sock");
    let image = scratch("img");
    std::fs::write(&image, vec![0u8; 8 << 20]).unwrap();
    let file_arg = image.to_str().unwrap().to_owned();
    let mut server = nbdkit(&socket, &["file", &file_arg]);
    let options = NbdOptions { io_timeout: Duration::from_secs(20), ..NbdOptions::default() };
    let nbd = NbdBackend::open(&unix(&socket), options).unwrap();
    let written = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (nbd, written) = (&nbd, &written);
            s.spawn(move || {
                for i in 0..256u64 {
                    let offset = (t * 256 + i) * 8192;
                    nbd.write_at(&pattern(t << 32 | i, 8192), offset).unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Mid-transfer: stop the server, and start another on the same file.
        assert!(wait_until(Duration::from_secs(10), || written.load(Ordering::Relaxed) > 100));
        server.terminate().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server = nbdkit(&socket, &["file", &file_arg]);
    });
    assert_eq!(written.load(Ordering::Relaxed), 1024);
    assert!(nbd.connections() >= 2, "the server was restarted: connected again");
    let all = std::fs::read(&image).unwrap();
    for t in 0..4u64 {
        for i in 0..256u64 {
            let offset = ((t * 256 + i) * 8192) as usize;
            assert!(all[offset..offset + 8192] == pattern(t << 32 | i, 8192)[..], "thread {t} block {i}");
        }
    }
    drop(nbd);
    drop(server);
    std::fs::remove_file(&image).unwrap();
}

#[test]
fn a_server_back_with_another_size_fails_every_request() {
    if !tool_available("a_server_back_with_another_size_fails_every_request", "nbdkit") {
        return;
    }
    let socket = scratch("sock");
    let mut server = nbdkit(&socket, &["memory", "1M"]);
    let options = NbdOptions { io_timeout: Duration::from_secs(5), ..NbdOptions::default() };
    let nbd = NbdBackend::open(&unix(&socket), options).unwrap();
    nbd.write_at(&[1; 512], 0).unwrap();
    server.terminate().unwrap();
    let _server = nbdkit(&socket, &["memory", "2M"]);
    let mut buf = [0; 512];
    let err = nbd.read_at(&mut buf, 0).unwrap_err().to_string();
    assert!(err.contains("came back with another export") || err.contains("unreachable"), "{err}");
    // Once seen, it stays failed.
    assert!(wait_until(Duration::from_secs(5), || nbd
        .read_at(&mut buf, 0)
        .is_err_and(|e| e.to_string().contains("came back with another export"))));
}

#[test]
fn a_server_that_stays_away_fails_requests_after_the_timeout() {
    if !tool_available("a_server_that_stays_away_fails_requests_after_the_timeout", "nbdkit") {
        return;
    }
    let socket = scratch("sock");
    let mut server = nbdkit(&socket, &["memory", "1M"]);
    let options = NbdOptions { io_timeout: Duration::from_secs(1), ..NbdOptions::default() };
    let nbd = NbdBackend::open(&unix(&socket), options).unwrap();
    server.terminate().unwrap();
    let mut buf = [0; 512];
    let err = nbd.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn a_server_that_stops_answering_is_connected_to_again() {
    if !tool_available("a_server_that_stops_answering_is_connected_to_again", "nbdkit") {
        return;
    }
    let socket = scratch("sock");
    // Reads take 30 s; writes are answered at once.
    let _server = nbdkit(&socket, &["--filter=delay", "memory", "1M", "rdelay=30"]);
    let options = NbdOptions { io_timeout: Duration::from_secs(1), ..NbdOptions::default() };
    let nbd = NbdBackend::open(&unix(&socket), options).unwrap();
    let mut buf = [0; 512];
    let err = nbd.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // The connection that hung was ended; a new one carries the write.
    nbd.write_at(&[3; 512], 512).unwrap();
    assert_eq!(nbd.connections(), 2);
}

#[test]
fn a_server_restarted_while_idle_is_found_out_by_the_next_request() {
    if !tool_available("a_server_restarted_while_idle_is_found_out_by_the_next_request", "nbdkit") {
        return;
    }
    let socket = scratch("sock");
    let image = scratch("img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let file_arg = image.to_str().unwrap().to_owned();
    let mut server = nbdkit(&socket, &["file", &file_arg]);
    let nbd = NbdBackend::open(&unix(&socket), NbdOptions::default()).unwrap();
    nbd.write_at(&pattern(9, 4096), 8192).unwrap();
    server.terminate().unwrap();
    let _server = nbdkit(&socket, &["file", &file_arg]);
    let mut back = vec![0; 4096];
    nbd.read_at(&mut back, 8192).unwrap();
    assert!(back == pattern(9, 4096));
    assert_eq!(nbd.connections(), 2);
    drop(nbd);
    std::fs::remove_file(&image).unwrap();
}
