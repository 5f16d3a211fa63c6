//! Command 2, MAC mask list: which initiators the export answers.

use aoe_proto::frame::BodyRepr;
use aoe_proto::mask::{Directive, DirectiveCommand, MaskCommand, MaskError};
use aoe_proto::{EmitError, MacAddr, MaskRepr};

use super::{Export, Outcome, Port, Received, MAX_LIST_ENTRIES};
use crate::backend::Backend;

impl<B: Backend> Export<B> {
    /// Reads or edits the mask; the answer lists the whole mask.
    pub(super) fn mask_list(
        &mut self,
        port: &Port,
        request: &Received<'_>,
        command: MaskCommand,
        directives: &[Directive],
        out: &mut [u8],
    ) -> Result<Outcome<'static>, EmitError> {
        let mut error = MaskError::None;
        match command {
            MaskCommand::Read => {}
            MaskCommand::Edit => {
                // Edits are rare (an administrator's), so the copy costs nothing that matters.
                let before = self.mask.clone();
                error = self.edit_mask(directives);
                if self.mask != before {
                    self.state_changed();
                }
            }
            MaskCommand::Other(_) => error = MaskError::Unspecified,
        }
        let mut list = [Directive::new(DirectiveCommand::Add, MacAddr::ZERO); MAX_LIST_ENTRIES];
        for (slot, mac) in list.iter_mut().zip(&self.mask) {
            slot.mac = *mac;
        }
        let directives = list.get(..self.mask.len()).unwrap_or_default();
        self.respond(port, request, BodyRepr::Mask(MaskRepr { command, error, directives }), out)
    }

    /// Applies `directives` in order, up to the first one that fails.
    fn edit_mask(&mut self, directives: &[Directive]) -> MaskError {
        for d in directives {
            match d.command() {
                DirectiveCommand::None => {}
                // A group address is no initiator's: it would answer everyone.
                DirectiveCommand::Add if d.mac.is_multicast() => return MaskError::BadDirective,
                DirectiveCommand::Add if self.mask.contains(&d.mac) => {}
                DirectiveCommand::Add if self.mask.len() >= MAX_LIST_ENTRIES => return MaskError::Full,
                DirectiveCommand::Add => self.mask.push(d.mac),
                DirectiveCommand::Delete => self.mask.retain(|m| *m != d.mac),
                DirectiveCommand::Other(_) => return MaskError::BadDirective,
            }
        }
        MaskError::None
    }
}
