//! The loop that joins transports and sessions: send a batch, receive a batch with the
//! session's timeout, feed the frames in, repeat. Used by [`crate::device`] and
//! [`crate::discover`]; the batches are allocated once and reused.

use std::time::{Duration, Instant};

use aoe_transport::{wait_readable, FrameBatch, Transport, MAX_WAIT_FDS};

use crate::session::{Event, IoBuffers, Session};
use crate::Error;

/// With several transports of which one has no [`Transport::readiness_fd`] (the in-memory
/// link), the longest a receive blocks on one of them while frames might be waiting on
/// another: the driver then polls them all and blocks on each in turn for at most this long.
const MULTI_LINK_SLICE: Duration = Duration::from_millis(1);
/// The longest a receive blocks when no session has a timer armed.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Send and receive batches for a set of transports.
#[derive(Debug)]
pub(crate) struct Driver {
    out: Vec<FrameBatch>,
    inbox: FrameBatch,
    turn: usize,
}

impl Driver {
    /// Batches of `frames` frames for each of `links`.
    pub(crate) fn new(links: &[Box<dyn Transport>], frames: usize) -> Self {
        let frames = frames.max(1);
        let out = links.iter().map(|l| FrameBatch::new(frames, frame_capacity(l.as_ref()))).collect();
        let inbox_cap = links.iter().map(|l| frame_capacity(l.as_ref())).max().unwrap_or(0);
        Driver { out, inbox: FrameBatch::new(frames, inbox_cap), turn: 0 }
    }

    /// The send batch of link `i`.
    pub(crate) fn out(&mut self, i: usize) -> &mut FrameBatch {
        &mut self.out[i]
    }

    /// Sends and clears every non-empty send batch.
    pub(crate) fn flush(&mut self, links: &mut [Box<dyn Transport>]) -> Result<(), Error> {
        for (i, link) in links.iter_mut().enumerate() {
            send(link.as_mut(), &mut self.out[i])?;
        }
        Ok(())
    }

    /// Receives frames for at most `wait` and hands each to `handle` with its link index.
    /// Returns how many frames came in.
    pub(crate) fn receive(
        &mut self,
        links: &mut [Box<dyn Transport>],
        wait: Duration,
        mut handle: impl FnMut(usize, &[u8]),
    ) -> Result<usize, Error> {
        let count = links.len();
        let mut recv =
            |links: &mut [Box<dyn Transport>], i: usize, inbox: &mut FrameBatch, wait: Duration| {
                let link = &mut links[i];
                let n = match link.recv_batch(inbox, Some(wait)) {
                    Ok(n) => n,
                    Err(e) if interface_down(&e) => {
                        tracing::warn!(
                            link = link.name(),
                            "interface went down; its paths are lost until it is up"
                        );
                        0
                    }
                    Err(e) => return Err(Error::io(format!("receiving on {}", link.name()), e)),
                };
                for frame in inbox.iter() {
                    handle(i, frame);
                }
                Ok(n)
            };
        match count {
            0 => Ok(0),
            1 => recv(links, 0, &mut self.inbox, wait),
            n => {
                let mut total = 0;
                for i in 0..n {
                    total += recv(links, i, &mut self.inbox, Duration::ZERO)?;
                }
                if total > 0 || wait.is_zero() {
                    return Ok(total);
                }
                let mut ready = [false; MAX_WAIT_FDS];
                if n <= MAX_WAIT_FDS && links.iter().all(|l| l.readiness_fd().is_some()) {
                    let fds = links.iter().filter_map(|l| l.readiness_fd());
                    let woken = wait_readable(fds, &mut ready[..n], wait)
                        .map_err(|e| Error::io("waiting for frames".to_string(), e))?;
                    for i in (0..n).filter(|&i| woken > 0 && ready[i]) {
                        total += recv(links, i, &mut self.inbox, Duration::ZERO)?;
                    }
                    return Ok(total);
                }
                let i = self.turn % n;
                self.turn = self.turn.wrapping_add(1);
                recv(links, i, &mut self.inbox, wait.min(MULTI_LINK_SLICE))
            }
        }
    }

    /// Drives `sessions` until `on_event` returns true for an event (every event pending at
    /// that moment is still handed out) or no session is busy any more.
    ///
    /// `on_event` gets the index of the session and the event.
    pub(crate) fn run(
        &mut self,
        links: &mut [Box<dyn Transport>],
        sessions: &mut [Session],
        data: &mut dyn IoBuffers,
        mut on_event: impl FnMut(usize, Event) -> bool,
    ) -> Result<(), Error> {
        let mut drain = |sessions: &mut [Session]| {
            let mut stop = false;
            for (i, s) in sessions.iter_mut().enumerate() {
                while let Some(e) = s.poll_event() {
                    stop |= on_event(i, e);
                }
            }
            stop
        };
        loop {
            let now = Instant::now();
            for s in sessions.iter_mut() {
                if s.poll_timeout().is_some_and(|t| now >= t) {
                    s.handle_timeout(now);
                }
            }
            if drain(sessions) || !sessions.iter().any(Session::is_busy) {
                return Ok(());
            }
            self.transmit(links, sessions, data, now)?;
            let wait = sessions
                .iter()
                .filter_map(Session::poll_timeout)
                .min()
                .map_or(IDLE_WAIT, |t| t.saturating_duration_since(Instant::now()));
            let n = self.receive(links, wait, |_, frame| {
                let now = Instant::now();
                for s in sessions.iter_mut() {
                    if s.handle_frame(now, frame, data) {
                        break;
                    }
                }
            })?;
            tracing::trace!(frames = n, "received");
            if drain(sessions) {
                return Ok(());
            }
        }
    }

    /// Puts every frame the sessions want to send into the batch of its link, sending a
    /// batch whenever it fills up, then sends the rest.
    fn transmit(
        &mut self,
        links: &mut [Box<dyn Transport>],
        sessions: &mut [Session],
        data: &mut dyn IoBuffers,
        now: Instant,
    ) -> Result<(), Error> {
        for s in sessions.iter_mut() {
            while let Some(iface) = s.next_transmit(now) {
                let (Some(link), Some(batch)) = (links.get_mut(iface), self.out.get_mut(iface)) else {
                    return Err(Error::Invalid("a session path names an interface the device does not have"));
                };
                if batch.is_full() {
                    send(link.as_mut(), batch)?;
                }
                // None only when the op did not fit the buffer and failed: next_transmit
                // then looks further.
                batch.push_with(|slot| match s.poll_transmit(now, slot, data) {
                    Some(t) => {
                        debug_assert_eq!(t.iface, iface);
                        t.len
                    }
                    None => 0,
                });
            }
        }
        self.flush(links)
    }
}

/// Bytes a frame buffer needs for `link`: the Ethernet header plus the MTU.
pub(crate) fn frame_capacity(link: &dyn Transport) -> usize {
    aoe_proto::ethernet::HEADER_LEN + link.mtu()
}

/// An interface taken down (ENETDOWN: reported once to a socket bound to it, then on every
/// send until it is up again) is a path lost for a while, not a failed call: the session
/// routes around it, or declares the target dead after `dead_timeout` when it was the only
/// way there. The socket stays bound and works again once the interface is back up.
fn interface_down(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NetworkDown
}

fn send(link: &mut dyn Transport, batch: &mut FrameBatch) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    // Frames the link did not take are lost like frames dropped on the wire: retransmission
    // recovers them, on another path if this one keeps failing.
    let sent = match link.send_batch(batch) {
        Ok(sent) => sent,
        Err(e) if interface_down(&e) => 0,
        Err(e) => return Err(Error::io(format!("sending on {}", link.name()), e)),
    };
    if sent < batch.len() {
        tracing::debug!(link = link.name(), sent, queued = batch.len(), "short send");
    }
    batch.clear();
    Ok(())
}
