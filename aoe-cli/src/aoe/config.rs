//! `aoe config`: read, set or test a disk's config string.

use aoe_initiator::session::{ConfigRequest, Reply, Request};
use aoe_initiator::{Device, Error};
use aoe_proto::config::MAX_STRING_LEN;
use aoe_proto::ConfigCommand;

use super::format::{self, Table};
use super::{Cli, ConfigAction, ConfigArgs, Failure};

/// AoE error 4: a set found another string already there.
const CONFIG_STRING_PRESENT: u8 = 4;

pub(crate) fn run(cli: &Cli, args: &ConfigArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let string = match (args.action, &args.string) {
        (ConfigAction::Read, None) => Vec::new(),
        (ConfigAction::Read, Some(_)) => {
            return Err(Failure::usage("config read takes no STRING (see aoe config --help)"));
        }
        (action, None) => {
            let name = format!("{action:?}").to_lowercase();
            return Err(Failure::usage(format!("config {name} needs a STRING (see aoe config --help)")));
        }
        (_, Some(s)) if s.len() > MAX_STRING_LEN => {
            return Err(Failure::usage(format!(
                "the config string is {} bytes long; at most {MAX_STRING_LEN} fit (see aoe config --help)",
                s.len()
            )));
        }
        (_, Some(s)) => s.as_bytes().to_vec(),
    };
    let shown = format::printable(&string);
    match args.action {
        ConfigAction::Read => {
            let mut dev = cli.open_device(disk)?;
            let c = dev.config_read().map_err(|e| Failure::disk(disk, e))?;
            let mut t = Table::new(&["disk", &disk.to_string()]);
            t.row(vec!["config".into(), format!("\"{}\"", format::printable(&c.string))]);
            t.row(vec!["bufcnt".into(), c.buffer_count.to_string()]);
            t.row(vec!["firmware".into(), format!("0x{:04x}", c.firmware)]);
            t.row(vec!["sect/frame".into(), c.sector_count.to_string()]);
            t.row(vec!["aoe version".into(), c.aoe_version.to_string()]);
            print!("{}", t.render());
        }
        ConfigAction::Set | ConfigAction::Force => {
            let force = args.action == ConfigAction::Force;
            let mut dev = cli.open_device(disk)?;
            match dev.config_set(&string, force) {
                Ok(c) => println!("{disk}: config string is now \"{}\"", format::printable(&c.string)),
                Err(Error::Aoe { code: CONFIG_STRING_PRESENT }) => {
                    let current = dev.config_read().map(|c| format::printable(&c.string)).unwrap_or_default();
                    return Err(Failure::new(format!(
                        "{disk}: not set: the disk already has config string \"{current}\" \
                         (aoe config {disk} force STRING replaces it)"
                    )));
                }
                Err(e) => return Err(Failure::disk(disk, e)),
            }
        }
        ConfigAction::Test | ConfigAction::Prefix => {
            let (command, relation) = if args.action == ConfigAction::Test {
                (ConfigCommand::TestExact, "equals")
            } else {
                (ConfigCommand::TestPrefix, "starts with")
            };
            // A disk whose string does not match stays silent: --timeout is how long that
            // silence is waited for.
            let mut opts = cli.device_options();
            opts.dead_timeout = cli.timeout;
            let links = super::iface::open(&super::iface::choose(&cli.ifaces)?)?;
            let mut dev =
                Device::open(links, disk.shelf, disk.slot, &opts).map_err(|e| Failure::disk(disk, e))?;
            match dev.request(Request::Config(ConfigRequest { command, string })) {
                Ok(Reply::Config(_)) => println!("{disk}: config string {relation} \"{shown}\""),
                Ok(_) => {
                    return Err(Failure::disk(
                        disk,
                        Error::BadAnswer("query config answered with another body"),
                    ))
                }
                Err(Error::TargetDead { .. }) => {
                    return Err(Failure::new(format!(
                        "{disk}: config string does not match: no answer to the test of \"{shown}\" within {}",
                        format::secs(cli.timeout)
                    )));
                }
                Err(e) => return Err(Failure::disk(disk, e)),
            }
        }
    }
    Ok(())
}
