//! `aoe`: find, read, write, manage and measure ATA over Ethernet disks.
//! See `aoe --help`; everything happens in [`aoe_initiator::cli`].

fn main() -> std::process::ExitCode {
    aoe_initiator::cli::main()
}
