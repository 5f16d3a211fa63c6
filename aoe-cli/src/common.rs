//! What both tools do alike: parse the command line and report a usage error as one line,
//! log to stderr, read MAC addresses.

use std::ffi::OsString;
use std::process::ExitCode;

use aoe_proto::MacAddr;
use clap::Parser;
use tracing_subscriber::filter::LevelFilter;

/// Exit status for a command line that does not parse (as clap and getopt programs use).
pub(crate) const EXIT_USAGE: u8 = 2;

/// Parses `argv` (program name first) as `C`. `--help` and `--version` are printed and give
/// `Err(SUCCESS)`; a usage error is printed as `{tool}: {one line} (see {help})` on stderr
/// and gives `Err(EXIT_USAGE)`.
pub(crate) fn parse_args<C: Parser>(tool: &str, argv: &[OsString], help: &str) -> Result<C, ExitCode> {
    match C::try_parse_from(argv) {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{tool}: {}", one_line(&e, help));
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// A clap error as one line, without the usage block that follows it, pointing at `help`
/// (e.g. `aoe read --help`).
pub(crate) fn one_line(error: &clap::Error, help: &str) -> String {
    let text = error.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.starts_with("tip:") {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    format!("{} (see {help})", parts.join(" "))
}

/// Logs to stderr, without timestamps or targets, in colour on a terminal: messages up to
/// `level`, unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging(level: LevelFilter) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::EnvFilter;
    let filter = EnvFilter::builder().with_default_directive(level.into()).from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// A MAC address: `00:11:22:aa:bb:cc`, `00-11-22-aa-bb-cc` or `001122aabbcc`, any case.
pub(crate) fn parse_mac(text: &str) -> Result<MacAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a MAC address (like 00:11:22:aa:bb:cc or 001122aabbcc)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("00:11:22:AA:bb:cc"), Ok(MacAddr([0, 0x11, 0x22, 0xaa, 0xbb, 0xcc])));
        assert_eq!(parse_mac("00-11-22-aa-bb-cc"), Ok(MacAddr([0, 0x11, 0x22, 0xaa, 0xbb, 0xcc])));
        assert_eq!(parse_mac("001122aabbcc"), Ok(MacAddr([0, 0x11, 0x22, 0xaa, 0xbb, 0xcc])));
        assert!(parse_mac("00:11:22").unwrap_err().contains("is not a MAC address"));
    }

    #[derive(Debug, Parser)]
    struct Probe {
        #[arg(long)]
        count: u8,
    }

    #[test]
    fn usage_errors_are_one_line() {
        let err = Probe::try_parse_from(["probe", "--count", "x"]).unwrap_err();
        let line = one_line(&err, "probe --help");
        assert!(line.starts_with("invalid value 'x' for '--count <COUNT>'"), "{line}");
        assert!(!line.contains('\n') && line.ends_with(" (see probe --help)"), "{line}");
    }
}
