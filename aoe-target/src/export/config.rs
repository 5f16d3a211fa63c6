//! Command 1, query config: the config string and what the export advertises.

use aoe_proto::config::{ConfigCommand, ConfigHeader, MAX_STRING_LEN};
use aoe_proto::frame::BodyRepr;
use aoe_proto::header::{ErrorCode, Flags};
use aoe_proto::{ConfigRepr, EmitError};

use super::{Export, Ignored, Outcome, Port, Received, FIRMWARE_VERSION};
use crate::backend::Backend;

impl<B: Backend> Export<B> {
    /// The config answer's values: buffer count, firmware, the port's sector limit, the string.
    pub(super) fn config_answer(&self, port: &Port, command: ConfigCommand) -> ConfigRepr<'_> {
        ConfigRepr {
            buffer_count: self.config.buffer_count,
            firmware: FIRMWARE_VERSION,
            sector_count: port.max_sectors,
            aoe_version: aoe_proto::header::VERSION,
            command,
            string: &self.config_string,
        }
    }

    /// Reads, tests or sets the config string.
    pub(super) fn query_config(
        &mut self,
        port: &Port,
        request: &Received<'_>,
        cfg: &ConfigHeader,
        string: &[u8],
        out: &mut [u8],
    ) -> Result<Outcome<'static>, EmitError> {
        let command = cfg.command();
        match command {
            ConfigCommand::Read => {}
            ConfigCommand::TestExact if string == self.config_string.as_slice() => {}
            ConfigCommand::TestPrefix if self.config_string.starts_with(string) => {}
            ConfigCommand::TestExact | ConfigCommand::TestPrefix => {
                return Ok(Outcome::Ignored(Ignored::ConfigMismatch));
            }
            ConfigCommand::Set
                if self.config_string.is_empty() || string == self.config_string.as_slice() =>
            {
                if string != self.config_string.as_slice() {
                    self.config_string = string.to_vec();
                    self.state_changed();
                }
            }
            ConfigCommand::Set => {
                let body = BodyRepr::Config(self.config_answer(port, command));
                let mut repr = self.answer(port, request, body);
                repr.header.flags |= Flags::ERROR;
                repr.header.error = ErrorCode::ConfigStringPresent.into();
                return repr.emit_padded(out).map(Outcome::Answered);
            }
            ConfigCommand::ForceSet => {
                debug_assert!(string.len() <= MAX_STRING_LEN);
                if string != self.config_string.as_slice() {
                    self.config_string = string.to_vec();
                    self.state_changed();
                }
            }
            ConfigCommand::Other(_) => return self.refuse(port, request, ErrorCode::BadArgument, out),
        }
        self.respond(port, request, BodyRepr::Config(self.config_answer(port, command)), out)
    }
}
