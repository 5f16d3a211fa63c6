//! One link received on one transport and sent on another: a raw socket's receive ring with
//! a faster sending path beside it (an AF_XDP socket), say.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::{AnswerFilter, FrameBatch, MacAddr, Transport};

/// A [`Transport`] that receives on `rx` and sends on `tx`, two transports on the same
/// interface. Its address, MTU, name and readiness are `rx`'s; [`sender`](Transport::sender)
/// handles for other threads are `rx`'s too, since `tx` may be one of a kind (one AF_XDP
/// socket per interface queue).
#[derive(Debug)]
pub struct Split<R, S> {
    /// Where frames are received.
    pub rx: R,
    /// Where frames are sent.
    pub tx: S,
}

impl<R: Transport, S: Transport> Transport for Split<R, S> {
    fn recv_batch(&mut self, batch: &mut FrameBatch, timeout: Option<Duration>) -> io::Result<usize> {
        self.rx.recv_batch(batch, timeout)
    }

    fn send_batch(&mut self, batch: &FrameBatch) -> io::Result<usize> {
        self.tx.send_batch(batch)
    }

    fn send_with_tails(&mut self, batch: &FrameBatch, tails: &[&[u8]]) -> io::Result<usize> {
        self.tx.send_with_tails(batch, tails)
    }

    fn mac(&self) -> MacAddr {
        self.rx.mac()
    }

    fn mtu(&self) -> usize {
        self.rx.mtu()
    }

    fn name(&self) -> &str {
        self.rx.name()
    }

    /// Both sides look again; the receiving side's answer is the one returned.
    fn refresh_mtu(&mut self) -> io::Result<usize> {
        self.tx.refresh_mtu()?;
        self.rx.refresh_mtu()
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        self.rx.readiness_fd()
    }

    fn filter_answers(&mut self, filter: &AnswerFilter) -> io::Result<bool> {
        self.rx.filter_answers(filter)
    }

    fn sender(&self) -> io::Result<Box<dyn Transport>> {
        self.rx.sender()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryHub;

    #[test]
    fn receives_on_one_side_and_sends_on_the_other() {
        let hub = MemoryHub::new(1500);
        let (a_mac, b_mac, c_mac) =
            (MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb]), MacAddr([2, 0, 0, 0, 0, 0xc]));
        let mut split = Split { rx: hub.port(a_mac), tx: hub.port(c_mac) };
        let mut peer = hub.port(b_mac);
        assert_eq!((split.mac(), split.mtu(), split.name()), (a_mac, 1500, split.rx.name()));
        let frame = |dst: MacAddr, src: MacAddr| {
            let mut f = [0u8; 60];
            f[..6].copy_from_slice(&dst.0);
            f[6..12].copy_from_slice(&src.0);
            f[12..14].copy_from_slice(&0x88A2u16.to_be_bytes());
            f
        };
        let mut out = FrameBatch::new(4, 1514);
        assert!(out.push(&frame(b_mac, a_mac)));
        assert_eq!(split.send_batch(&out).unwrap(), 1);
        let mut inbox = FrameBatch::new(4, 1514);
        assert_eq!(peer.recv_batch(&mut inbox, Some(Duration::from_secs(1))).unwrap(), 1);
        out.clear();
        assert!(out.push(&frame(a_mac, b_mac)));
        assert!(out.push(&frame(c_mac, b_mac)));
        peer.send_batch(&out).unwrap();
        assert_eq!(split.recv_batch(&mut inbox, Some(Duration::from_secs(1))).unwrap(), 1);
        assert_eq!(&inbox.get(0).unwrap()[..6], &a_mac.0, "received on rx only");
        assert_eq!(split.recv_batch(&mut inbox, Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(
            split.tx.recv_batch(&mut inbox, Some(Duration::ZERO)).unwrap(),
            1,
            "tx's frame waits there"
        );
    }
}
