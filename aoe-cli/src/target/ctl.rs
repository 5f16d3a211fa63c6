//! `aoe-target ctl`: status, counters, reload and a live view of a running target, through
//! its control socket ([`super::control`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

use super::control::ask;
use super::settings::CONTROL_DIR;

const ABOUT: &str = "Ask a running aoe-target for its status and counters, or to reload its configuration";

const AFTER_LONG_HELP: &str = "\
The control socket answers root and the user aoe-target runs as, no one else.

Examples:
  aoe-target ctl status
  aoe-target ctl stats --json | jq '.exports[0].read_bytes'
  aoe-target ctl reload                # as kill -HUP, and reports a refused file
  aoe-target ctl monitor 2 --count 10  # a line per export every 2 s, 10 times

Exit status: 0 done, 1 the target cannot be reached or refused, 2 the command line does
not parse.";

/// The `aoe-target ctl` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "aoe-target-ctl",
    bin_name = "aoe-target ctl",
    version,
    about = ABOUT,
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100
)]
pub struct CtlCli {
    /// The target's control socket [default: the only socket in /run/aoe-target, else
    /// /run/aoe-target/exports.sock]
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,

    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What `aoe-target ctl` asks.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// The exports served (size, file, interfaces) and the interfaces
    Status,
    /// Every counter of every export and interface
    Stats {
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration file, as SIGHUP does; a file with an error is refused
    /// (exit status 1) and the running configuration kept
    Reload,
    /// Print a line per export every SECS seconds: read and write MB/s, I/O per second,
    /// errors; until Ctrl-C or --count lines per export
    Monitor {
        /// Seconds between lines
        #[arg(value_name = "SECS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        secs: u64,
        /// Stop after this many intervals
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// The socket `ctl` talks to unless told: the only one in [`CONTROL_DIR`], else
/// `exports.sock` there.
fn default_socket() -> PathBuf {
    let dir = Path::new(CONTROL_DIR);
    let sockets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match <[PathBuf; 1]>::try_from(sockets) {
        Ok([only]) => only,
        Err(_) => dir.join("exports.sock"),
    }
}

/// Runs `aoe-target ctl ARGS...` (`argv[0]` is `ctl`).
pub fn main(argv: &[OsString]) -> ExitCode {
    let cli = match CtlCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("aoe-target ctl: {}", crate::common::one_line(&e, "aoe-target ctl --help"));
            return ExitCode::from(2);
        }
    };
    let socket = cli.socket.clone().unwrap_or_else(default_socket);
    match run(&cli.command, &socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aoe-target ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &CtlCommand, socket: &Path) -> Result<(), String> {
    match command {
        CtlCommand::Status => print_status(&ask(socket, "status")?),
        CtlCommand::Stats { json: true } => {
            let answer = ask(socket, "stats")?;
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
        }
        CtlCommand::Stats { json: false } => print_stats(&ask(socket, "stats")?),
        CtlCommand::Reload => {
            let answer = ask(socket, "reload")?;
            println!("{}", answer["reloaded"].as_str().unwrap_or("reloaded"));
        }
        CtlCommand::Monitor { secs, count } => monitor(socket, Duration::from_secs(*secs), *count)?,
    }
    Ok(())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_status(answer: &Value) {
    let config = answer["config"].as_str().unwrap_or("the command line");
    println!("aoe-target pid {}, serving {config} for {} s", u(&answer["pid"]), u(&answer["uptime_seconds"]));
    for e in answer["exports"].as_array().into_iter().flatten() {
        let interfaces: Vec<&str> =
            e["interfaces"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "{}: {} sectors of {}{} on {}, bufcnt {}, {} I/O in flight",
            e["name"].as_str().unwrap_or("?"),
            u(&e["sectors"]),
            e["file"].as_str().unwrap_or("?"),
            if e["read_only"] == Value::Bool(true) { " (read-only)" } else { "" },
            interfaces.join(", "),
            u(&e["buffer_count"]),
            u(&e["in_flight"]),
        );
    }
    for i in answer["interfaces"].as_array().into_iter().flatten() {
        println!(
            "{}: {} frames received, {} sent, {} not sent",
            i["name"].as_str().unwrap_or("?"),
            u(&i["received"]),
            u(&i["sent"]),
            u(&i["send_failures"])
        );
    }
}

fn print_stats(answer: &Value) {
    for e in answer["exports"].as_array().into_iter().flatten() {
        println!("{}:", e["name"].as_str().unwrap_or("?"));
        println!("  read_bytes {}  written_bytes {}", u(&e["read_bytes"]), u(&e["written_bytes"]));
        let map = |v: &Value| -> String {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| format!("{k} {}", u(n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  requests: {}", map(&e["requests"]));
        println!("  ata_errors {}  aoe_errors {}", u(&e["ata_errors"]), u(&e["aoe_errors"]));
        println!("  ignored: {}", map(&e["ignored"]));
        println!("  backend_errors: {}", map(&e["backend_errors"]));
        let count = u(&e["latency"]["count"]);
        let mean = e["latency"]["sum_seconds"].as_f64().unwrap_or(0.0) / count.max(1) as f64;
        println!("  in_flight {}  I/O {count}, mean latency {:.1} µs", u(&e["in_flight"]), mean * 1e6);
    }
    for i in answer["interfaces"].as_array().into_iter().flatten() {
        println!(
            "{}: received {}  sent {}  send_failures {}  malformed {}",
            i["name"].as_str().unwrap_or("?"),
            u(&i["received"]),
            u(&i["sent"]),
            u(&i["send_failures"]),
            u(&i["malformed"])
        );
    }
}

/// Per export: read bytes, written bytes, I/O requests, errors.
fn totals(answer: &Value) -> Vec<(String, [u64; 4])> {
    answer["exports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let io = ["read", "write", "flush"].iter().map(|c| u(&e["requests"][c])).sum();
            let errors = u(&e["ata_errors"]) + u(&e["aoe_errors"]);
            (
                e["name"].as_str().unwrap_or("?").to_owned(),
                [u(&e["read_bytes"]), u(&e["written_bytes"]), io, errors],
            )
        })
        .collect()
}

fn monitor(socket: &Path, every: Duration, count: Option<u64>) -> Result<(), String> {
    let mut before = totals(&ask(socket, "stats")?);
    let mut at = Instant::now();
    println!("{:<10} {:>10} {:>10} {:>10} {:>8}", "export", "read MB/s", "write MB/s", "IOPS", "errors");
    let mut done = 0;
    while count.is_none_or(|n| done < n) {
        std::thread::sleep(every);
        let now = totals(&ask(socket, "stats")?);
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        for (name, t) in &now {
            let old = before.iter().find(|(n, _)| n == name).map_or([0; 4], |(_, t)| *t);
            let d = |i: usize| t[i].saturating_sub(old[i]) as f64;
            println!(
                "{name:<10} {:>10.2} {:>10.2} {:>10.0} {:>8}",
                d(0) / secs / 1e6,
                d(1) / secs / 1e6,
                d(2) / secs,
                d(3) as u64
            );
        }
        before = now;
        done += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        CtlCli::command().debug_assert();
    }

    #[test]
    fn parses() {
        let cli = CtlCli::try_parse_from(["ctl", "--socket", "/tmp/x.sock", "stats", "--json"]).unwrap();
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/x.sock")));
        assert!(matches!(cli.command, CtlCommand::Stats { json: true }));
        let cli = CtlCli::try_parse_from(["ctl", "monitor", "2", "--count", "3"]).unwrap();
        assert!(matches!(cli.command, CtlCommand::Monitor { secs: 2, count: Some(3) }));
        assert!(CtlCli::try_parse_from(["ctl", "monitor", "0"]).is_err());
    }
}
