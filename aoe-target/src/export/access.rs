//! Access rules: which initiators may use an export, and how, beyond the protocol's MAC mask.
//!
//! The rules are an ordered list of MAC addresses, each with an [`Access`]; the first rule
//! naming an initiator decides, and [`AccessRules::default`] covers every initiator no rule
//! names. They are the target administrator's, set in the export's configuration; the MAC
//! mask list is the protocol's, editable by initiators over the wire. Both apply: an
//! initiator must pass the mask (when it is not empty) and the rules.

use aoe_proto::MacAddr;

/// What an initiator may do with an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// Everything.
    #[default]
    Allow,
    /// Reads, IDENTIFY, flushes and reading the config string, mask and reserve lists.
    /// Writes are aborted (ATA ABRT); setting the config string or editing the mask or
    /// reserve list is refused (AoE error 6, as if the target were reserved by others).
    ReadOnly,
    /// Nothing: its frames get no answer, as if it were outside the mask.
    Deny,
}

/// One rule: an initiator and what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessRule {
    /// The initiator's MAC address.
    pub initiator: MacAddr,
    /// What it may do.
    pub access: Access,
}

/// Ordered access rules: the first rule naming an initiator decides, and the `default` field
/// covers the rest. The MAC mask applies as well.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRules {
    /// The rules, first match wins.
    pub rules: Vec<AccessRule>,
    /// For initiators no rule names.
    pub default: Access,
}

impl AccessRules {
    /// No rules: everyone is allowed everything.
    pub const ALLOW_ALL: AccessRules = AccessRules { rules: Vec::new(), default: Access::Allow };

    /// What `initiator` may do.
    pub fn access(&self, initiator: MacAddr) -> Access {
        self.rules.iter().find(|r| r.initiator == initiator).map_or(self.default, |r| r.access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn the_first_matching_rule_decides_and_the_default_covers_the_rest() {
        let rules = AccessRules {
            rules: vec![
                AccessRule { initiator: A, access: Access::ReadOnly },
                AccessRule { initiator: A, access: Access::Allow },
            ],
            default: Access::Deny,
        };
        assert_eq!(rules.access(A), Access::ReadOnly);
        assert_eq!(rules.access(B), Access::Deny);
        assert_eq!(AccessRules::ALLOW_ALL.access(B), Access::Allow);
    }
}
