//! `aoe mask`: list or edit a disk's MAC mask list.

use aoe_proto::MacAddr;

use super::{Cli, Failure, MaskAction, MaskArgs};

/// Most directives (or MACs) one request carries.
pub(crate) const MAX_MACS: usize = 255;

pub(crate) fn run(cli: &Cli, args: &MaskArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let name = format!("{:?}", args.action).to_lowercase();
    check_macs(&format!("mask {name}"), args.action == MaskAction::List, &args.macs, "mask")?;
    let mut dev = cli.open_device(disk)?;
    let list = match args.action {
        MaskAction::List => dev.mask_read(),
        MaskAction::Add => dev.mask_edit(&args.macs, &[]),
        MaskAction::Del => dev.mask_edit(&[], &args.macs),
    }
    .map_err(|e| Failure::disk(disk, e))?;
    if list.is_empty() {
        println!("{disk}: mask list is empty (every initiator is answered)");
    } else {
        println!("{disk}: mask list: {}", macs(&list));
    }
    Ok(())
}

/// Checks the MACs of a list (none) or edit (1 to 255) action.
pub(crate) fn check_macs(what: &str, list: bool, given: &[MacAddr], command: &str) -> Result<(), Failure> {
    let problem = if list && !given.is_empty() {
        Some("takes no MAC".to_owned())
    } else if !list && given.is_empty() && command == "mask" {
        Some("needs at least one MAC".to_owned())
    } else if given.len() > MAX_MACS {
        Some(format!("takes at most {MAX_MACS} MACs, not {}", given.len()))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Failure::usage(format!("{what} {p} (see aoe {command} --help)"))),
        None => Ok(()),
    }
}

/// MACs separated by spaces.
pub(crate) fn macs(list: &[MacAddr]) -> String {
    list.iter().map(MacAddr::to_string).collect::<Vec<_>>().join(" ")
}
