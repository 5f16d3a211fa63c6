//! A [`Session`] driven directly, for what the blocking [`Device`](crate::Device) does not
//! offer: config tests (a target answers them only when they match, so silence is an answer
//! and the wait is short) and reads kept at a chosen queue depth.

use std::time::{Duration, Instant};

use aoe_proto::SECTOR_SIZE;
use aoe_transport::Transport;

use super::rng::Rng;
use super::{iface, Cli, DiskName, Failure};
use crate::discover::Announcement;
use crate::driver::Driver;
use crate::session::{Event, IoBuffers, OpId, Reply, Request, Session};
use crate::{Error, TargetInfo};

/// One disk, its links and a session to it.
pub(crate) struct Direct {
    links: Vec<Box<dyn Transport>>,
    driver: Driver,
    session: Session,
}

/// What [`Direct::random_reads`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RandomRun {
    /// Reads completed.
    pub(crate) ops: u64,
    /// From the first submission to the last completion.
    pub(crate) elapsed: Duration,
    /// Sum of the reads' times from submission to completion.
    pub(crate) latency: Duration,
}

impl RandomRun {
    /// Reads per second.
    pub(crate) fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean time from submission to completion.
    pub(crate) fn mean_latency(&self) -> Duration {
        self.latency.checked_div(self.ops.max(1) as u32).unwrap_or_default()
    }
}

impl Direct {
    /// Looks for `disk` on the interfaces of `cli`; the session gives the target up after
    /// `dead_timeout` of silence.
    pub(crate) fn find(cli: &Cli, disk: DiskName, dead_timeout: Duration) -> Result<Direct, Failure> {
        let names = iface::choose(&cli.ifaces)?;
        let mut links = iface::open(&names)?;
        let opts = cli.device_options().discover;
        let found = crate::discover::probe(&mut links, Some((disk.shelf, disk.slot)), &opts)
            .map_err(|e| Failure::disk(disk, e))?;
        let Some(a) = found.into_iter().next() else {
            let ifaces = names.join(", ");
            return Err(Failure::disk(
                disk,
                Error::NoSuchDisk { shelf: disk.shelf, slot: disk.slot, ifaces },
            ));
        };
        Direct::new(links, &a, true, dead_timeout).map_err(|e| Failure::disk(disk, e))
    }

    /// A session to a target found earlier on the same interfaces, opened again as `links`
    /// in the same order.
    pub(crate) fn with_target(
        links: Vec<Box<dyn Transport>>,
        info: &TargetInfo,
        dead_timeout: Duration,
    ) -> Result<Direct, Error> {
        Direct::new(links, &info.announcement(), info.lba48, dead_timeout)
    }

    fn new(
        links: Vec<Box<dyn Transport>>,
        a: &Announcement,
        lba48: bool,
        dead_timeout: Duration,
    ) -> Result<Direct, Error> {
        let mut cfg = crate::discover::session_config(&links, a);
        cfg.lba48 = lba48;
        cfg.dead_timeout = dead_timeout;
        let session = Session::new(cfg)?;
        let driver = Driver::new(&links, 64);
        Ok(Direct { links, driver, session })
    }

    /// Sends one command without sector data and waits for its answer.
    pub(crate) fn command(&mut self, request: Request) -> Result<Reply, Error> {
        let op = self.session.submit(request);
        let mut reply = None;
        let result = self.driver.run(
            &mut self.links,
            std::slice::from_mut(&mut self.session),
            &mut crate::session::NoData,
            |_, event| match event {
                Event::Complete { op: done, result } if done == op => {
                    reply = Some(result);
                    true
                }
                _ => false,
            },
        );
        if result.is_err() || reply.is_none() {
            self.session.abandon_all();
        }
        result?;
        reply.unwrap_or(Err(Error::BadAnswer("command never completed")))
    }

    /// Reads `block_sectors` sectors at random block-aligned places of the first
    /// `span_sectors` sectors, keeping `depth` reads submitted, for `duration`; then waits for
    /// the reads in flight. The session still caps frames in flight at the target's buffer
    /// count.
    pub(crate) fn random_reads(
        &mut self,
        depth: usize,
        block_sectors: u64,
        span_sectors: u64,
        duration: Duration,
        rng: &mut Rng,
    ) -> Result<RandomRun, Error> {
        let blocks = span_sectors / block_sectors.max(1);
        if blocks == 0 || depth == 0 {
            return Err(Error::Invalid("the disk is smaller than one block of the random-read test"));
        }
        let mut slots = Slots::new(depth, block_sectors as usize * SECTOR_SIZE);
        let mut submit = |session: &mut Session, slots: &mut Slots, i: usize| {
            let lba = rng.below(blocks) * block_sectors;
            let op = session.submit(Request::Read { lba, sectors: block_sectors });
            slots.ops[i] = Some((op, Instant::now()));
        };
        let start = Instant::now();
        let deadline = start + duration;
        for i in 0..depth {
            submit(&mut self.session, &mut slots, i);
        }
        let mut run = RandomRun { ops: 0, elapsed: Duration::ZERO, latency: Duration::ZERO };
        let mut done: Vec<(OpId, Result<Reply, Error>)> = Vec::with_capacity(depth);
        while slots.busy() > 0 {
            let driven = self.driver.run(
                &mut self.links,
                std::slice::from_mut(&mut self.session),
                &mut slots,
                |_, event| match event {
                    Event::Complete { op, result } => {
                        done.push((op, result));
                        true
                    }
                    _ => false,
                },
            );
            if let Err(e) = driven {
                self.session.abandon_all();
                return Err(e);
            }
            let now = Instant::now();
            for (op, result) in done.drain(..) {
                if let Err(e) = result {
                    self.session.abandon_all();
                    return Err(e);
                }
                let Some(i) = slots.position(op) else { continue };
                if let Some((_, submitted)) = slots.ops[i].take() {
                    run.latency += now.saturating_duration_since(submitted);
                }
                run.ops += 1;
                if now < deadline {
                    submit(&mut self.session, &mut slots, i);
                }
            }
            if slots.busy() > 0 && !self.session.is_busy() {
                self.session.abandon_all();
                return Err(Error::BadAnswer("session went idle before every read completed"));
            }
        }
        run.elapsed = start.elapsed();
        Ok(run)
    }
}

/// One buffer per queue position, and the read occupying it.
struct Slots {
    ops: Vec<Option<(OpId, Instant)>>,
    data: Vec<u8>,
    bytes: usize,
}

impl Slots {
    fn new(depth: usize, bytes: usize) -> Self {
        Slots { ops: vec![None; depth], data: vec![0; depth * bytes], bytes }
    }

    fn position(&self, op: OpId) -> Option<usize> {
        self.ops.iter().position(|o| o.is_some_and(|(id, _)| id == op))
    }

    fn busy(&self) -> usize {
        self.ops.iter().flatten().count()
    }
}

impl IoBuffers for Slots {
    fn load(&mut self, _: OpId, _: usize, out: &mut [u8]) {
        out.fill(0);
    }

    fn store(&mut self, op: OpId, offset: usize, data: &[u8]) {
        let Some(i) = self.position(op) else { return };
        let start = i * self.bytes + offset;
        if let Some(dst) = self.data.get_mut(start..start + data.len()) {
            if offset + data.len() <= self.bytes {
                dst.copy_from_slice(data);
            }
        }
    }
}
