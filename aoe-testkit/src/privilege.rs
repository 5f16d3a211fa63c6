//! Deciding whether a test can run on this machine.
//!
//! Tests that need root, network namespaces or external peer programs call
//! these functions first and return early when they get `false`. A skipped
//! test prints one line starting with `SKIP:` (and one with the reason) to
//! the process's stderr, bypassing the test harness's output capture, so
//! that skips are visible in the test output.
//!
//! CI sets `AOE_REQUIRE_NETNS=1` and/or `AOE_REQUIRE_PEERS=1`: then a missing
//! capability is a failure (the function panics) instead of a silent skip.
//! The variables count as set when their value is `1`, `true` or `yes`
//! (any case).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable that turns a missing namespace capability into a
/// test failure.
pub const REQUIRE_NETNS_ENV: &str = "AOE_REQUIRE_NETNS";

/// Environment variable that turns a missing external peer program into a
/// test failure.
pub const REQUIRE_PEERS_ENV: &str = "AOE_REQUIRE_PEERS";

/// Returns true when the test can use network namespaces: the effective user
/// is root, `ip` (iproute2) is on `PATH`, and `ip netns add` actually works
/// (checked by adding and deleting a throw-away namespace).
///
/// Otherwise prints `SKIP: {test}: needs root and iproute2 for network
/// namespaces` to stderr and returns false, unless `AOE_REQUIRE_NETNS=1` is
/// set, in which case it panics with that message (and the reason).
pub fn netns_available(test: &str) -> bool {
    match probe_netns() {
        Ok(()) => true,
        Err(reason) => skip_or_panic(
            REQUIRE_NETNS_ENV,
            &format!("SKIP: {test}: needs root and iproute2 for network namespaces"),
            &reason,
        ),
    }
}

/// Returns true when `program` (for example `"vblade"` or `"aoeping"`) is an
/// executable file on `PATH` (or, if it contains a `/`, at that path).
///
/// Otherwise prints `SKIP: {test}: needs {program} on PATH` to stderr and
/// returns false, unless `AOE_REQUIRE_PEERS=1` is set, in which case it
/// panics with that message.
pub fn tool_available(test: &str, program: &str) -> bool {
    if find_program(program).is_some() {
        true
    } else {
        skip_or_panic(REQUIRE_PEERS_ENV, &format!("SKIP: {test}: needs {program} on PATH"), "not found")
    }
}

/// Full path of `program` as `execvp` would find it, if any.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

fn env_flag(var: &str) -> bool {
    match std::env::var(var) {
        Ok(v) => matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        Err(_) => false,
    }
}

fn skip_or_panic(var: &str, line: &str, reason: &str) -> bool {
    if env_flag(var) {
        panic!("{line} ({reason}; {var} is set, so this is a failure)");
    }
    // Written to the real stderr, not through `eprintln!`, so that the line
    // shows even while the test harness captures the test's output.
    let _ = writeln!(std::io::stderr(), "{line}\n      ({reason})");
    false
}

fn probe_netns() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("effective uid is {euid}, not 0"));
    }
    if find_program("ip").is_none() {
        return Err("`ip` not found on PATH".into());
    }
    let name = format!("aoetk-probe-{}-{}", std::process::id(), crate::next_id());
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`ip {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(&["netns", "add", &name])?;
    if let Err(e) = run(&["netns", "del", &name]) {
        eprintln!("aoe-testkit: could not delete probe namespace {name}: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs() {
        assert!(find_program("sh").is_some());
        assert_eq!(find_program("/bin/sh").as_deref(), Some(Path::new("/bin/sh")));
        assert!(find_program("").is_none());
        assert!(find_program("/nonexistent/sh").is_none());
        assert!(find_program("aoe-testkit-no-such-program").is_none());
        assert!(tool_available("finds_programs", "sh"));
    }

    #[test]
    fn missing_tool_skips_or_fails() {
        let missing = || tool_available("missing_tool_skips_or_fails", "aoe-testkit-no-such-program");
        if env_flag(REQUIRE_PEERS_ENV) {
            let err = std::panic::catch_unwind(missing).unwrap_err();
            let msg = err.downcast_ref::<String>().unwrap();
            assert!(msg
                .starts_with("SKIP: missing_tool_skips_or_fails: needs aoe-testkit-no-such-program on PATH"));
        } else {
            assert!(!missing());
        }
    }
}
