//! CPU time (user + system) of a process or thread, from `/proc/.../stat`.
//!
//! The kernel counts in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 per second on common
//! kernels), so a reading is good to about 10 ms: measure over seconds, not milliseconds.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;
use std::time::Duration;

/// CPU time of process `pid`, all its threads together.
pub fn process(pid: u32) -> io::Result<Duration> {
    read(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

/// CPU time of thread `tid` of this process.
pub fn thread(tid: i32) -> io::Result<Duration> {
    read(&Path::new("/proc/self/task").join(tid.to_string()).join("stat"))
}

/// The calling thread's id, for [`thread`].
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn read(path: &Path) -> io::Result<Duration> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    let ticks = parse_stat(&text).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a stat line", path.display()))
    })?;
    let hz = ticks_per_second();
    Ok(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

/// utime + stime (fields 14 and 15) of a `stat` line, in ticks. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(line), Some(267));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_and_thread_use_cpu() {
        let tid = current_tid();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(thread(tid).unwrap() > Duration::ZERO);
        assert!(process(std::process::id()).unwrap() >= thread(tid).unwrap());
        assert!(thread(-5).is_err());
    }
}
