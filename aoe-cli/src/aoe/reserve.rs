//! `aoe reserve`: list, set or release a disk's reservation.

use aoe_initiator::Error;

use super::mask::{check_macs, macs};
use super::{Cli, Failure, ReserveAction, ReserveArgs};

/// AoE error 6: the target is reserved by someone else.
const TARGET_RESERVED: u8 = 6;

pub(crate) fn run(cli: &Cli, args: &ReserveArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let name = format!("{:?}", args.action).to_lowercase();
    let list_only = matches!(args.action, ReserveAction::List | ReserveAction::Release);
    check_macs(&format!("reserve {name}"), list_only, &args.macs, "reserve")?;
    let mut dev = cli.open_device(disk)?;
    let result = match args.action {
        ReserveAction::List => dev.reserve_read(),
        ReserveAction::Set | ReserveAction::Release => dev.reserve_set(&args.macs, false),
        ReserveAction::Force => dev.reserve_set(&args.macs, true),
    };
    let list = match result {
        Ok(list) => list,
        Err(Error::Aoe { code: TARGET_RESERVED }) => {
            let holders = dev.reserve_read().unwrap_or_default();
            // Refused while nobody holds it: the target lets this initiator read only.
            let why = if holders.is_empty() {
                format!(
                    "{disk}: the target refuses this initiator changes (it is read-only to it), not changed"
                )
            } else {
                format!(
                    "{disk}: reserved by {}, not changed (aoe reserve {disk} force ... takes it)",
                    macs(&holders)
                )
            };
            return Err(Failure::new(why));
        }
        Err(e) => return Err(Failure::disk(disk, e)),
    };
    if list.is_empty() {
        println!("{disk}: not reserved");
    } else {
        println!("{disk}: reserved for {}", macs(&list));
    }
    Ok(())
}
