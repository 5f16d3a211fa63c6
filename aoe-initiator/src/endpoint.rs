//! Parse once, route once: received frames go to the session of the target they name.
//!
//! Every frame that reaches an interface comes in, answers for other initiators and other
//! targets included. An [`Endpoint`] parses each frame once and offers it only to the
//! sessions of the shelf.slot it names, each of which checks its tag and contents (see
//! [`crate::session`]); sessions never parse a frame themselves on this path.
//!
//! ```
//! use std::time::Instant;
//! use aoe_initiator::endpoint::Endpoint;
//! use aoe_initiator::session::{NoData, Path, Session, SessionConfig};
//! use aoe_proto::MacAddr;
//!
//! let path = Path { link: 0, local: MacAddr([2, 0, 0, 0, 0, 1]), target: MacAddr([2, 0, 0, 0, 0, 2]) };
//! let mut sessions = vec![Session::new(SessionConfig::new(1, 0, vec![path]))?];
//! let mut endpoint = Endpoint::default();
//! // Too short to be AoE: counted, offered to nobody.
//! assert_eq!(endpoint.route(&mut sessions, Instant::now(), &[0u8; 20], &mut NoData), None);
//! assert_eq!(endpoint.stats().malformed, 1);
//! # Ok::<(), aoe_initiator::Error>(())
//! ```

use std::time::Instant;

use aoe_proto::Received;

use crate::session::{IoBuffers, Session};

/// Counters of frames no session was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointStats {
    /// Frames that do not parse as AoE (of version 1, with a well-formed body).
    pub malformed: u64,
    /// Requests (another initiator's, or our own seen back), not answers.
    pub requests: u64,
    /// Answers from a target no session talks to.
    pub unrouted: u64,
}

/// Routes received frames to sessions. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Endpoint {
    stats: EndpointStats,
}

impl Endpoint {
    /// Parses `bytes` and offers it to the sessions in `sessions` of the target it names, in
    /// order, until one takes it. Returns the index of the session that took it.
    pub fn route(
        &mut self,
        sessions: &mut [Session],
        now: Instant,
        bytes: &[u8],
        data: &mut dyn IoBuffers,
    ) -> Option<usize> {
        let Some(received) = Received::parse(bytes).ok().filter(|r| r.frame().is_some()) else {
            self.stats.malformed += 1;
            return None;
        };
        if !received.header().is_response() {
            self.stats.requests += 1;
            return None;
        }
        let mut offered = false;
        for (i, s) in sessions.iter_mut().enumerate() {
            if !s.is_for(received.header()) {
                continue;
            }
            offered = true;
            if s.handle_answer(now, &received, data) {
                return Some(i);
            }
        }
        if !offered {
            self.stats.unrouted += 1;
        }
        None
    }

    /// Counters since the endpoint was created.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }
}
