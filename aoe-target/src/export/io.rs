//! The sector I/O an answer waits for ([`SectorIo`]), and the ways to complete it: here and
//! now, from a mapping of the backend, or on another thread.

use aoe_proto::ata::{AtaError, AtaStatus};
use aoe_proto::{AtaFrame, EmitError};

use crate::backend::{Backend, Tail};

/// What the backend is asked to do for a request ([`SectorIo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorOp {
    /// Read sectors into the answer.
    Read,
    /// Write the request's sectors.
    Write,
    /// Make written sectors durable (FLUSH CACHE).
    Flush,
}

/// The sector I/O an answer waits for ([`Outcome::NeedsIo`](super::Outcome::NeedsIo)): `len`
/// bytes at byte `offset` of the export's backend (none for a flush).
///
/// [`Export::handle`](super::Export::handle) has written the answer's headers, with status
/// DRDY, into its `out` buffer; the caller finishes that answer in one of three ways:
///
/// - here and now: [`complete`](Self::complete) on the export's backend;
/// - for a read of a mapped backend, without copying the sectors: [`tail`](Self::tail), and
///   the answer is the [`AtaFrame::HEADER_LEN`] bytes of headers followed by the tail;
/// - on another thread: [`detach`](Self::detach) (which moves a write's sectors from the
///   request into the answer buffer), then [`complete`](Self::complete) there, in the turn
///   the export's [`IoOrder`](crate::ordering::IoOrder) gives it.
///
/// A write's sectors are borrowed from the request (`'r`) until it is detached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorIo<'r> {
    op: SectorOp,
    offset: u64,
    len: usize,
    /// A write's sectors in the request; `None` once they were moved into the answer buffer.
    data: Option<&'r [u8]>,
}

/// The ATA status and error registers of a failed command.
pub(super) fn ata_fail(error: AtaError) -> (AtaStatus, AtaError) {
    (AtaStatus::DRDY | AtaStatus::ERR, error)
}

/// The ATA status and error registers that tell an initiator why a backend's read, write or
/// flush failed, so that it can say so (aoe-initiator names each):
///
/// | backend error | status | error | meaning |
/// |---|---|---|---|
/// | `ENOSPC`, `EDQUOT` | DRDY ERR DF | UNC | the store is full |
/// | `EROFS`, `EPERM`, `EACCES` | DRDY ERR DF | ABRT | the store refuses writes |
/// | `UnexpectedEof`, `EINVAL` past the end (a file truncated under the export) | DRDY ERR | IDNF ABRT | no such sector any more |
/// | a failed flush, for any other reason | DRDY ERR DF | ABRT | written data may not be durable |
/// | anything else (`EIO`, ...) | DRDY ERR | UNC | the sectors cannot be read or written |
///
/// DF (device fault) marks failures of the store behind the disk rather than of the sectors
/// themselves; the Linux aoe driver, like any initiator, fails the request on ERR or DF.
pub fn ata_error_for(op: SectorOp, error: &std::io::Error) -> (AtaStatus, AtaError) {
    let fault = AtaStatus::DRDY | AtaStatus::ERR | AtaStatus::DF;
    match (error.raw_os_error(), error.kind()) {
        (Some(libc::ENOSPC | libc::EDQUOT), _) => (fault, AtaError::UNC),
        (Some(libc::EROFS | libc::EPERM | libc::EACCES), _) => (fault, AtaError::ABRT),
        (_, std::io::ErrorKind::UnexpectedEof) => ata_fail(AtaError::IDNF | AtaError::ABRT),
        _ if op == SectorOp::Flush => (fault, AtaError::ABRT),
        _ => ata_fail(AtaError::UNC),
    }
}

/// The registers of a command that succeeded.
pub(super) const ATA_OK: (AtaStatus, AtaError) = (AtaStatus::DRDY, AtaError::empty());

impl SectorIo<'static> {
    /// A read of `len` bytes at `offset`.
    pub(crate) fn read(offset: u64, len: usize) -> Self {
        SectorIo { op: SectorOp::Read, offset, len, data: None }
    }
    /// A flush.
    pub(crate) fn flush() -> Self {
        SectorIo { op: SectorOp::Flush, offset: 0, len: 0, data: None }
    }
    /// A write of `len` bytes at `offset` whose sectors wait in the answer buffer.
    #[cfg(test)]
    pub(crate) fn detached_write(offset: u64, len: usize) -> Self {
        SectorIo { op: SectorOp::Write, offset, len, data: None }
    }
}

impl<'r> SectorIo<'r> {
    /// A write of `data` at `offset`.
    pub(crate) fn write(offset: u64, data: &'r [u8]) -> Self {
        SectorIo { op: SectorOp::Write, offset, len: data.len(), data: Some(data) }
    }

    /// What to do.
    pub fn op(&self) -> SectorOp {
        self.op
    }
    /// Where, in bytes from the backend's start.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// How many bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// A write's sectors, while they are still in the request (not
    /// [`detach`](Self::detach)ed).
    pub(crate) fn data(&self) -> Option<&'r [u8]> {
        self.data
    }
    /// True for a flush, which moves no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Does the I/O on `backend` and finishes the answer in `answer`, the buffer
    /// [`Export::handle`](super::Export::handle) wrote its headers into (or a copy of those
    /// headers): sets the ATA status and error registers, puts a read's sectors after the
    /// headers, pads, and returns the answer's length. A failure answers the registers
    /// [`ata_error_for`] gives the backend's error. Fails when `answer` is too short for the
    /// sectors.
    pub fn complete<B: Backend + ?Sized>(&self, backend: &B, answer: &mut [u8]) -> Result<usize, EmitError> {
        let mut frame = AtaFrame::new_checked(answer)?;
        let result = match (self.op, self.data) {
            (SectorOp::Read, _) => backend.read_at(frame.data_mut(self.len)?, self.offset),
            (SectorOp::Write, Some(data)) => backend.write_at(data, self.offset),
            (SectorOp::Write, None) => backend.write_at(frame.data_mut(self.len)?, self.offset),
            (SectorOp::Flush, _) => backend.flush(),
        };
        let (status, error) = match &result {
            Ok(()) => ATA_OK,
            Err(e) => ata_error_for(self.op, e),
        };
        frame.set_status(status);
        frame.set_error(error);
        let data_len = if self.op == SectorOp::Read && result.is_ok() { self.len } else { 0 };
        frame.finish(data_len)
    }

    /// For a read of a backend that is mapped ([`Backend::mapping`]): where its sectors lie
    /// in the mapping. The answer is then the [`AtaFrame::HEADER_LEN`] bytes of headers
    /// [`Export::handle`](super::Export::handle) wrote (status DRDY), followed on the wire by
    /// the tail's bytes; nothing else is to be done. `None` for other I/O and other backends.
    ///
    /// The tail is read when the frame is sent: send it before handling a request that writes
    /// sectors ([`Received::writes_sectors`](super::Received::writes_sectors)), so that the
    /// answer shows the sectors as they were when its request was handled.
    pub fn tail<B: Backend + ?Sized>(&self, backend: &B) -> Option<Tail> {
        if self.op != SectorOp::Read {
            return None;
        }
        // Not from bytes the store no longer holds (a file truncated under the mapping).
        if self.offset.checked_add(self.len as u64)? > backend.len() {
            return None;
        }
        let (map, start) = backend.mapping()?;
        Tail::new(map, start.checked_add(self.offset)?, self.len)
    }

    /// Frees the I/O from the request, for completion later or on another thread: a write's
    /// sectors are copied into `answer` after its headers, where [`complete`](Self::complete)
    /// then takes them. Fails when `answer` is too short for them.
    pub fn detach(self, answer: &mut [u8]) -> Result<SectorIo<'static>, EmitError> {
        if let Some(data) = self.data {
            AtaFrame::new_checked(answer)?.data_mut(data.len())?.copy_from_slice(data);
        }
        Ok(SectorIo { op: self.op, offset: self.offset, len: self.len, data: None })
    }
}
