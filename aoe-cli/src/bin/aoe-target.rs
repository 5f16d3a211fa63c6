//! `aoe-target`: export files and block devices as ATA over Ethernet disks.
//! See `aoe-target --help`; everything happens in [`aoe_cli::target`].

fn main() -> std::process::ExitCode {
    aoe_cli::target::main()
}
