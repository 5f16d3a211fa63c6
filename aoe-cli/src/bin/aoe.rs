//! `aoe`: find, read, write, manage and measure ATA over Ethernet disks.
//! See `aoe --help`; everything happens in [`aoe_cli::aoe`].

fn main() -> std::process::ExitCode {
    aoe_cli::aoe::main()
}
