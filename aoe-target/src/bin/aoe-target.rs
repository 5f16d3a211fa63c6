//! `aoe-target`: export files and block devices as ATA over Ethernet disks.
//! See `aoe-target --help`; everything happens in [`aoe_target::cli`].

fn main() -> std::process::ExitCode {
    aoe_target::cli::main()
}
