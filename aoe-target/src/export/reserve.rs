//! Command 3, reserve/release: which initiators may issue ATA commands.

use aoe_proto::frame::BodyRepr;
use aoe_proto::header::ErrorCode;
use aoe_proto::reserve::ReserveCommand;
use aoe_proto::{EmitError, MacAddr, ReserveRepr};

use super::{Export, Outcome, Port, Received, MAX_LIST_ENTRIES};
use crate::backend::Backend;

impl<B: Backend> Export<B> {
    /// Reads, sets or force-sets the reserve list; the answer carries the list.
    pub(super) fn reserve_release(
        &mut self,
        port: &Port,
        request: &Received<'_>,
        command: ReserveCommand,
        macs: &[MacAddr],
        out: &mut [u8],
    ) -> Result<Outcome<'static>, EmitError> {
        let src = request.ethernet().src;
        match command {
            ReserveCommand::Read => {}
            ReserveCommand::Set | ReserveCommand::ForceSet
                if macs.len() > MAX_LIST_ENTRIES || macs.iter().any(MacAddr::is_multicast) =>
            {
                return self.refuse(port, request, ErrorCode::BadArgument, out);
            }
            ReserveCommand::Set if !self.reserve.is_empty() && !self.reserve.contains(&src) => {
                return self.refuse(port, request, ErrorCode::TargetReserved, out);
            }
            ReserveCommand::Set | ReserveCommand::ForceSet => {
                if self.reserve != macs {
                    self.reserve.clear();
                    self.reserve.extend_from_slice(macs);
                    self.state_changed();
                }
            }
            ReserveCommand::Other(_) => return self.refuse(port, request, ErrorCode::BadArgument, out),
        }
        self.respond(port, request, BodyRepr::Reserve(ReserveRepr { command, macs: &self.reserve }), out)
    }
}
