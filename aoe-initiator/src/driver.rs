//! The blocking runtime: the loop that joins transports and sessions. Send a batch,
//! receive a batch with the sessions' earliest timeout, route the frames to their sessions
//! (an [`Endpoint`] parses each once), hand out events, repeat. [`crate::device`] and
//! [`discover`](mod@crate::discover) run on it; the batches are allocated once and reused.
//!
//! A [`Wake`] lets another thread interrupt a driver that waits for frames, so that a
//! thread owning the transports can take new work from a queue (see [`crate::shared`]).
//!
//! ```
//! use std::time::Duration;
//! use aoe_initiator::driver::{Driver, RunEnd};
//! use aoe_initiator::session::{NoData, Path, Request, Session, SessionConfig};
//! use aoe_transport::{memory, MacAddr, Transport};
//!
//! // No target on the other end: the IDENTIFY is retransmitted until the target is
//! // declared dead.
//! let (a, _b) = memory::pair(1500, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let mut links: Vec<Box<dyn Transport>> = vec![Box::new(a)];
//! let path = Path { link: 0, local: links[0].mac(), target: MacAddr([2, 0, 0, 0, 0, 2]) };
//! let mut cfg = SessionConfig::new(1, 0, vec![path]);
//! cfg.dead_timeout = Duration::from_millis(50);
//! let mut sessions = vec![Session::new(cfg)?];
//! sessions[0].submit(Request::Identify);
//! let mut driver = Driver::new(&links, 16);
//! let mut failed = false;
//! let end = driver.run(&mut links, &mut sessions, &mut NoData, |_, event| {
//!     failed |= matches!(event, aoe_initiator::Event::Complete { result: Err(_), .. });
//!     false
//! })?;
//! assert!(failed && end == RunEnd::Idle);
//! # Ok::<(), aoe_initiator::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_transport::{wait_readable, FrameBatch, Transport, MAX_WAIT_FDS};

use crate::endpoint::Endpoint;
use crate::session::{Event, IoBuffers, Session};
use crate::Error;

/// With several transports of which one has no [`Transport::readiness_fd`] (the in-memory
/// link), the longest a receive blocks on one of them while frames might be waiting on
/// another: the driver then polls them all and blocks on each in turn for at most this long.
const MULTI_LINK_SLICE: Duration = Duration::from_millis(1);
/// The longest a receive blocks when no session has a timer armed.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Why [`Driver::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The event handler asked to stop.
    Stopped,
    /// No session has work left.
    Idle,
    /// The deadline passed.
    Deadline,
    /// Another thread called [`Wake::wake`].
    Woken,
}

/// Lets another thread interrupt a [`Driver`] waiting for frames. Cheap to call often: only
/// the first call after the driver last looked writes anything.
#[derive(Debug)]
pub struct Wake {
    rx: UnixStream,
    tx: UnixStream,
    pending: AtomicBool,
}

impl Wake {
    /// A new signal, for [`Driver::set_wake`].
    pub fn new() -> io::Result<Arc<Wake>> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Arc::new(Wake { rx, tx, pending: AtomicBool::new(false) }))
    }

    /// Makes the driver's current or next wait return [`RunEnd::Woken`].
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A full socket buffer already holds a wake-up.
            let _ = (&self.tx).write(&[1]);
        }
    }

    /// True (once) if [`wake`](Self::wake) was called since the last look.
    fn take(&self) -> bool {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut sink = [0u8; 64];
        while matches!((&self.rx).read(&mut sink), Ok(n) if n > 0) {}
        true
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

/// Send and receive batches for a set of transports, and the loop that drives sessions over
/// them. See the [module docs](self).
#[derive(Debug)]
pub struct Driver {
    out: Vec<FrameBatch>,
    inbox: FrameBatch,
    turn: usize,
    endpoint: Endpoint,
    wake: Option<Arc<Wake>>,
    woken: bool,
}

impl Driver {
    /// Batches of `frames` frames for each of `links`.
    pub fn new(links: &[Box<dyn Transport>], frames: usize) -> Self {
        let frames = frames.max(1);
        let out = links.iter().map(|l| FrameBatch::new(frames, frame_capacity(l.as_ref()))).collect();
        let inbox_cap = links.iter().map(|l| frame_capacity(l.as_ref())).max().unwrap_or(0);
        Driver {
            out,
            inbox: FrameBatch::new(frames, inbox_cap),
            turn: 0,
            endpoint: Endpoint::default(),
            wake: None,
            woken: false,
        }
    }

    /// Lets `wake` interrupt the waits of [`run_until`](Self::run_until).
    pub fn set_wake(&mut self, wake: Arc<Wake>) {
        self.wake = Some(wake);
    }

    /// Counters of the frames no session was offered.
    pub fn endpoint_stats(&self) -> crate::endpoint::EndpointStats {
        self.endpoint.stats()
    }

    /// The send batch of link `i`.
    pub fn out(&mut self, i: usize) -> &mut FrameBatch {
        &mut self.out[i]
    }

    /// Sends and clears every non-empty send batch.
    pub fn flush(&mut self, links: &mut [Box<dyn Transport>]) -> Result<(), Error> {
        for (i, link) in links.iter_mut().enumerate() {
            send(link.as_mut(), &mut self.out[i])?;
        }
        Ok(())
    }

    /// Receives frames for at most `wait` and hands each to `handle` with its link index and
    /// the time its batch came in. Returns how many frames came in.
    ///
    /// The clock is read once per batch, not per frame: the frames of a batch arrived
    /// together, and on a fast link a batch holds many of them.
    ///
    /// With a [`Wake`] set, a wake-up ends the wait early (the next
    /// [`run_until`](Self::run_until) then returns [`RunEnd::Woken`]).
    pub fn receive(
        &mut self,
        links: &mut [Box<dyn Transport>],
        wait: Duration,
        mut handle: impl FnMut(usize, Instant, &[u8]),
    ) -> Result<usize, Error> {
        let count = links.len();
        let wait = self.wait_for_wake(links, wait)?;
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
                if n > 0 {
                    let at = Instant::now();
                    for frame in inbox.iter() {
                        handle(i, at, frame);
                    }
                }
                // Frames a receive ring lent stay in its slots until the batch lets go: hand
                // them back now rather than at the next receive, so that the ring has room
                // for the answers that come meanwhile.
                inbox.clear();
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

    /// With a [`Wake`] set and a wait ahead: waits for a frame or the wake-up, whichever
    /// comes first, and returns how long the receive may still block (zero once either
    /// came). Without one, `wait` as it is.
    fn wait_for_wake(&mut self, links: &[Box<dyn Transport>], wait: Duration) -> Result<Duration, Error> {
        let Some(wake) = self.wake.clone() else { return Ok(wait) };
        if wake.take() {
            self.woken = true;
            return Ok(Duration::ZERO);
        }
        if wait.is_zero() {
            return Ok(wait);
        }
        let n = links.len();
        if n < MAX_WAIT_FDS && links.iter().all(|l| l.readiness_fd().is_some()) {
            let fds = links.iter().filter_map(|l| l.readiness_fd()).chain([wake.fd()]);
            let mut ready = [false; MAX_WAIT_FDS];
            wait_readable(fds, &mut ready[..n + 1], wait)
                .map_err(|e| Error::io("waiting for frames".to_string(), e))?;
            if wake.take() {
                self.woken = true;
            }
            return Ok(Duration::ZERO);
        }
        // A link without a descriptor (the in-memory one): block in slices, looking at the
        // wake-up between them.
        Ok(wait.min(MULTI_LINK_SLICE))
    }

    /// Drives `sessions` until `on_event` returns true for an event (every event pending at
    /// that moment is still handed out) or no session is busy any more.
    ///
    /// `on_event` gets the index of the session and the event.
    pub fn run(
        &mut self,
        links: &mut [Box<dyn Transport>],
        sessions: &mut [Session],
        data: &mut dyn IoBuffers,
        on_event: impl FnMut(usize, Event) -> bool,
    ) -> Result<RunEnd, Error> {
        self.run_until(links, sessions, data, None, on_event)
    }

    /// As [`run`](Self::run), but returns at `deadline` too, and when a [`Wake`] set with
    /// [`set_wake`](Self::set_wake) is woken. With nothing to do and a wake-up set, it waits
    /// for the wake-up (or the deadline) instead of returning [`RunEnd::Idle`].
    pub fn run_until(
        &mut self,
        links: &mut [Box<dyn Transport>],
        sessions: &mut [Session],
        data: &mut dyn IoBuffers,
        deadline: Option<Instant>,
        mut on_event: impl FnMut(usize, Event) -> bool,
    ) -> Result<RunEnd, Error> {
        let mut drain = |sessions: &mut [Session]| {
            let mut stop = false;
            for (i, s) in sessions.iter_mut().enumerate() {
                while let Some(e) = s.poll_event() {
                    stop |= on_event(i, e);
                }
            }
            stop
        };
        let mut now = Instant::now();
        // The earliest timer of any session. Between the moment it is computed (after
        // transmitting) and the next look, answers only disarm or push back timers, so the
        // sessions need no look before it.
        let mut next_timeout = min_timeout(sessions);
        loop {
            if next_timeout.is_some_and(|t| now >= t) {
                for s in sessions.iter_mut() {
                    if s.poll_timeout().is_some_and(|t| now >= t) {
                        s.handle_timeout(now);
                    }
                }
            }
            if drain(sessions) {
                return Ok(RunEnd::Stopped);
            }
            if std::mem::take(&mut self.woken) {
                return Ok(RunEnd::Woken);
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(RunEnd::Deadline);
            }
            let busy = sessions.iter().any(Session::is_busy);
            if !busy && self.wake.is_none() {
                return Ok(RunEnd::Idle);
            }
            self.transmit(links, sessions, data, now)?;
            next_timeout = min_timeout(sessions);
            // `now` is as old as the transmission: the wait ends that much late at most.
            let mut wait = next_timeout.map_or(IDLE_WAIT, |t| t.saturating_duration_since(now));
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            let mut arrived = None;
            // Out of `self` while `receive` borrows it; put back before any error returns.
            let mut endpoint = std::mem::take(&mut self.endpoint);
            let received = self.receive(links, wait, |_, at, frame| {
                arrived = Some(at);
                endpoint.route(sessions, at, frame, data);
            });
            self.endpoint = endpoint;
            let n = received?;
            tracing::trace!(frames = n, "received");
            if drain(sessions) {
                return Ok(RunEnd::Stopped);
            }
            // The time the last batch came in serves as the present while acting on it.
            now = arrived.unwrap_or_else(Instant::now);
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
        if let ([link], [batch]) = (&mut *links, &mut self.out[..]) {
            // One link: every frame goes into its batch, so there is no need to ask the
            // session first where the next one goes.
            for s in sessions.iter_mut() {
                loop {
                    if batch.is_full() {
                        send(link.as_mut(), batch)?;
                    }
                    let mut written = None;
                    batch.push_with(|slot| match s.poll_transmit(now, slot, data) {
                        Some(t) => {
                            written = Some(t.link);
                            if t.link == 0 {
                                t.len
                            } else {
                                0
                            }
                        }
                        None => 0,
                    });
                    match written {
                        None => break,
                        Some(0) => {}
                        Some(_) => return Err(no_such_link()),
                    }
                }
            }
            return self.flush(links);
        }
        for s in sessions.iter_mut() {
            while let Some(index) = s.next_transmit(now) {
                let (Some(link), Some(batch)) = (links.get_mut(index), self.out.get_mut(index)) else {
                    return Err(no_such_link());
                };
                if batch.is_full() {
                    send(link.as_mut(), batch)?;
                }
                // None only when the op did not fit the buffer and failed: next_transmit
                // then looks further.
                batch.push_with(|slot| match s.poll_transmit(now, slot, data) {
                    Some(t) => {
                        debug_assert_eq!(t.link, index);
                        t.len
                    }
                    None => 0,
                });
            }
        }
        self.flush(links)
    }
}

fn no_such_link() -> Error {
    Error::Invalid("a session path names an interface the device does not have")
}

/// The earliest time any of `sessions` wants [`Session::handle_timeout`] called.
fn min_timeout(sessions: &[Session]) -> Option<Instant> {
    sessions.iter().filter_map(Session::poll_timeout).min()
}

/// Bytes a frame buffer needs for `link`: the Ethernet header plus the MTU.
pub fn frame_capacity(link: &dyn Transport) -> usize {
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

#[cfg(test)]
mod tests {
    use aoe_transport::memory;

    use super::*;
    use crate::session::{NoData, Path, Request, SessionConfig};
    use crate::testing::mac;

    /// A session whose path leaves on a link the driver lacks fails the run, with nothing
    /// sent: with one link (where frames are written without asking where they go first)
    /// as with two.
    #[test]
    fn a_path_on_a_missing_link_is_refused() {
        for links in [1, 2] {
            let mut near: Vec<Box<dyn Transport>> = Vec::new();
            let mut far = Vec::new();
            for i in 0..links {
                let (a, b) = memory::pair(1500, mac(1), mac(2 + i as u8));
                near.push(Box::new(a));
                far.push(b);
            }
            let path = Path { link: links, local: mac(1), target: mac(2) };
            let mut session = Session::new(SessionConfig::new(1, 0, vec![path])).unwrap();
            session.submit(Request::Read { lba: 0, sectors: 8 });
            let mut driver = Driver::new(&near, 8);
            let result = driver.run(&mut near, std::slice::from_mut(&mut session), &mut NoData, |_, _| false);
            assert!(matches!(result, Err(Error::Invalid(_))), "{links} links: {result:?}");
            let mut got = FrameBatch::new(8, 1514);
            for port in &mut far {
                assert_eq!(port.recv_batch(&mut got, Some(Duration::ZERO)).unwrap(), 0, "{links} links");
            }
        }
    }

    /// The frames of one batch share one arrival time, read after the batch came in.
    #[test]
    fn a_batch_is_stamped_once() {
        let (near, mut far) = memory::pair(1500, mac(1), mac(2));
        let mut burst = FrameBatch::new(3, 1514);
        for n in 0..3u8 {
            let mut frame = [n; 60];
            frame[..6].copy_from_slice(&mac(1).0);
            frame[6..12].copy_from_slice(&mac(2).0);
            frame[12..14].copy_from_slice(&aoe_proto::ethernet::ETHERTYPE_AOE.to_be_bytes());
            burst.push(&frame);
        }
        assert_eq!(far.send_batch(&burst).unwrap(), 3);
        let mut links: Vec<Box<dyn Transport>> = vec![Box::new(near)];
        let mut driver = Driver::new(&links, 8);
        let before = Instant::now();
        let mut seen = Vec::new();
        let n = driver
            .receive(&mut links, Duration::from_secs(1), |i, at, frame| seen.push((i, at, frame[59])))
            .unwrap();
        let after = Instant::now();
        assert_eq!(n, 3);
        assert_eq!(seen.iter().map(|s| s.2).collect::<Vec<_>>(), [0, 1, 2]);
        let at = seen[0].1;
        assert!(seen.iter().all(|s| s.0 == 0 && s.1 == at), "one time for the batch");
        assert!(before <= at && at <= after);
        // Regression: frames were kept until the next receive. From a receive ring that
        // holds their slots, and the window's answers coming meanwhile were dropped (`aoe
        // write` ran at a third of its speed at MTU 9000).
        assert!(driver.inbox.is_empty(), "the frames are let go once read");
        // Nothing came: no frame, no stamp.
        let n = driver.receive(&mut links, Duration::ZERO, |_, _, _| panic!("no frame")).unwrap();
        assert_eq!(n, 0);
    }
}
