//! Progress of a long copy: a bar on stderr while stderr is a terminal, and a summary line
//! at the end in any case.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::format;

/// How often the bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);
/// Cells of the bar itself.
const BAR: usize = 30;

/// A copy in progress.
#[derive(Debug)]
pub(crate) struct Progress {
    /// "read" or "wrote".
    verb: &'static str,
    /// "from e1.0" or "to e1.0".
    place: String,
    total: Option<u64>,
    start: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Progress {
    /// Starts the clock for a copy of `total` bytes (if known).
    pub(crate) fn new(verb: &'static str, place: String, total: Option<u64>) -> Self {
        Progress {
            verb,
            place,
            total,
            start: Instant::now(),
            last_draw: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `done` bytes are copied: redraws the bar if it is time.
    pub(crate) fn update(&mut self, done: u64) {
        if !self.tty || self.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let line = bar(done, self.total, self.start.elapsed());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Clears the bar and prints the summary of `done` bytes.
    pub(crate) fn finish(self, done: u64) -> Duration {
        let elapsed = self.start.elapsed();
        let mut err = std::io::stderr().lock();
        if self.tty && self.last_draw.is_some() {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "{}", summary(self.verb, &self.place, done, elapsed));
        elapsed
    }

    /// Clears the bar, if one is shown, before an error line.
    pub(crate) fn abandon(self) {
        if self.tty && self.last_draw.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// `read 67108864 bytes (64 MiB) from e1.0 in 0.21 s: 319.6 MB/s`
pub(crate) fn summary(verb: &str, place: &str, bytes: u64, elapsed: Duration) -> String {
    format!(
        "{verb} {bytes} bytes ({}) {place} in {}: {}",
        format::bytes(bytes),
        format::secs(elapsed),
        format::mb_per_s(bytes, elapsed)
    )
}

/// `[#########.....................]  31%  20 MiB / 64 MiB  312.4 MB/s  ETA 0:01`
fn bar(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = format::mb_per_s(done, elapsed);
    let Some(total) = total.filter(|&t| t > 0) else {
        return format!("{}  {rate}", format::bytes(done));
    };
    let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
    let filled = (fraction * BAR as f64) as usize;
    let per_sec = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let eta = if done > 0 { ((total - done.min(total)) as f64 / per_sec) as u64 } else { 0 };
    format!(
        "[{}{}] {:3.0}%  {} / {}  {rate}  ETA {}:{:02}",
        "#".repeat(filled),
        ".".repeat(BAR - filled),
        fraction * 100.0,
        format::bytes(done),
        format::bytes(total),
        eta / 60,
        eta % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            summary("read", "from e1.0", 64 << 20, Duration::from_millis(200)),
            "read 67108864 bytes (64 MiB) from e1.0 in 0.20 s: 335.5 MB/s"
        );
        let b = bar(16 << 20, Some(64 << 20), Duration::from_secs(1));
        assert_eq!(
            b,
            format!("[{}{}]  25%  16 MiB / 64 MiB  16.8 MB/s  ETA 0:03", "#".repeat(7), ".".repeat(23))
        );
        assert_eq!(bar(4096, None, Duration::from_secs(1)), "4 KiB  0.0 MB/s");
    }
}
