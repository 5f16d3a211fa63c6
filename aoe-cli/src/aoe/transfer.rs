//! `aoe read` and `aoe write`: copy between a disk and a file, stdin or stdout.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;

use super::format;
use super::progress::Progress;
use super::{Cli, DiskName, Failure, ReadArgs, WriteArgs};

/// Bytes per `read_at` / `write_at` call: large enough that the pipeline drains rarely
/// (about 1000 frames at MTU 9000), small enough to keep memory modest.
const CHUNK: usize = 8 << 20;

pub(crate) fn read(cli: &Cli, args: &ReadArgs) -> Result<(), Failure> {
    let disk = args.disk;
    if is_dash(&args.file) && io::stdout().is_terminal() {
        return Err(Failure::usage(
            "not writing disk contents to a terminal: redirect stdout or name a FILE (see aoe read --help)",
        ));
    }
    if is_dash(&args.file) && super::sys::stdout_was_closed() {
        return Err(Failure::new(format!("stdout is closed: nowhere to write {disk}'s data")));
    }
    let mut dev = cli.open_device(disk)?;
    let (offset, length) = range(disk, dev.size_bytes(), args.offset, args.length)?;
    let name = display_name(&args.file, "stdout");
    let mut out: Box<dyn Write> = if is_dash(&args.file) {
        Box::new(io::stdout().lock())
    } else {
        let file = File::create(&args.file).map_err(|e| Failure::io(format!("cannot create {name}"), e))?;
        Box::new(file)
    };
    let mut buf = vec![0u8; CHUNK.min(length as usize)];
    let mut progress = Progress::new("read", format!("from {disk}"), Some(length));
    let mut done = 0u64;
    while done < length {
        let n = (length - done).min(CHUNK as u64) as usize;
        if let Err(e) = dev.read_at(&mut buf[..n], offset + done) {
            progress.abandon();
            return Err(Failure::disk(disk, e));
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            progress.abandon();
            return Err(Failure::io(format!("writing {name}"), e));
        }
        done += n as u64;
        progress.update(done);
    }
    out.flush().map_err(|e| Failure::io(format!("writing {name}"), e))?;
    progress.finish(done);
    Ok(())
}

pub(crate) fn write(cli: &Cli, args: &WriteArgs) -> Result<(), Failure> {
    let disk = args.disk;
    let name = display_name(&args.file, "stdin");
    // The input is opened first: a missing file is reported before any network traffic.
    let (mut input, file_len): (Box<dyn Read>, Option<u64>) = if is_dash(&args.file) {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(&args.file).map_err(|e| Failure::io(format!("cannot open {name}"), e))?;
        let meta = file.metadata().map_err(|e| Failure::io(format!("cannot stat {name}"), e))?;
        (Box::new(file), meta.is_file().then_some(meta.len()))
    };
    if let (Some(want), Some(have)) = (args.length, file_len) {
        if have < want {
            return Err(Failure::new(format!("{name} holds {have} bytes, fewer than --length {want}")));
        }
    }
    let mut dev = cli.open_device(disk)?;
    let size = dev.size_bytes();
    let want = args.length.or(file_len);
    let (offset, limit) = range(disk, size, args.offset, want)?;
    let mut buf = vec![0u8; CHUNK.min(limit as usize).max(1)];
    let mut check = if args.verify { vec![0u8; buf.len()] } else { Vec::new() };
    let mut progress = Progress::new("wrote", format!("to {disk}"), want);
    let mut done = 0u64;
    let fail = |progress: Progress, f: Failure| -> Result<(), Failure> {
        progress.abandon();
        Err(f)
    };
    while done < limit {
        let ask = (limit - done).min(buf.len() as u64) as usize;
        let n = match fill(&mut input, &mut buf[..ask]) {
            Ok(n) => n,
            Err(e) => return fail(progress, Failure::io(format!("reading {name}"), e)),
        };
        if n == 0 {
            break;
        }
        let at = offset + done;
        if let Err(e) = dev.write_at(&buf[..n], at) {
            return fail(progress, Failure::disk(disk, e));
        }
        if args.verify {
            if let Err(e) = dev.read_at(&mut check[..n], at) {
                return fail(progress, Failure::disk(disk, e));
            }
            if let Some(i) = buf[..n].iter().zip(&check[..n]).position(|(a, b)| a != b) {
                let f = Failure::new(format!(
                    "verify failed: byte {} of {disk} (byte {} of {name}) reads back 0x{:02x}, 0x{:02x} was written",
                    at + i as u64,
                    done + i as u64,
                    check[i],
                    buf[i]
                ));
                return fail(progress, f);
            }
        }
        done += n as u64;
        progress.update(done);
        if n < ask {
            break;
        }
    }
    if want.is_none() && done == limit {
        let mut more = [0u8; 1];
        if fill(&mut input, &mut more).map_err(|e| Failure::io(format!("reading {name}"), e))? > 0 {
            progress.abandon();
            let _ = dev.flush();
            return Err(Failure::new(format!(
                "out of range: {name} runs past the end of {disk} ({size} bytes); \
                 the {done} bytes from offset {offset} to the end were written, the rest was not"
            )));
        }
    }
    if let Err(e) = dev.flush() {
        return fail(progress, Failure::disk(disk, e));
    }
    if let Some(want) = args.length.filter(|&w| done < w) {
        progress.abandon();
        return Err(Failure::new(format!(
            "{name} ended after {done} bytes, fewer than --length {want}; those {done} bytes were written"
        )));
    }
    progress.finish(done);
    if args.verify {
        eprintln!("verified: {done} bytes read back equal to what was written");
    }
    Ok(())
}

/// The byte range `offset .. offset + length` (length defaulting to the rest of the disk),
/// or an out-of-range failure that says why.
fn range(disk: DiskName, size: u64, offset: u64, length: Option<u64>) -> Result<(u64, u64), Failure> {
    let human = format::bytes(size);
    if offset > size {
        return Err(Failure::new(format!(
            "out of range: offset {offset} is beyond the end of {disk} ({size} bytes, {human})"
        )));
    }
    let room = size - offset;
    let length = length.unwrap_or(room);
    if length > room {
        return Err(Failure::new(format!(
            "out of range: {length} bytes from offset {offset} run past the end of {disk} ({size} bytes, {human})"
        )));
    }
    Ok((offset, length))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn display_name(path: &Path, dash: &str) -> String {
    if is_dash(path) {
        dash.to_owned()
    } else {
        path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: DiskName = DiskName { shelf: 1, slot: 0 };

    #[test]
    fn ranges() {
        assert_eq!(range(D, 4096, 0, None).unwrap(), (0, 4096));
        assert_eq!(range(D, 4096, 1000, None).unwrap(), (1000, 3096));
        assert_eq!(range(D, 4096, 4096, None).unwrap(), (4096, 0));
        assert_eq!(range(D, 4096, 96, Some(4000)).unwrap(), (96, 4000));
        assert_eq!(
            range(D, 4096, 4097, None).unwrap_err().to_string(),
            "out of range: offset 4097 is beyond the end of e1.0 (4096 bytes, 4 KiB)"
        );
        assert_eq!(
            range(D, 4096, 100, Some(4000)).unwrap_err().to_string(),
            "out of range: 4000 bytes from offset 100 run past the end of e1.0 (4096 bytes, 4 KiB)"
        );
    }

    #[test]
    fn fill_reads_across_short_reads() {
        struct Trickle(Vec<u8>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0.remove(0);
                Ok(1)
            }
        }
        let mut t = Trickle(vec![1, 2, 3]);
        let mut buf = [0u8; 5];
        assert_eq!(fill(&mut t, &mut buf).unwrap(), 3);
        assert_eq!(buf, [1, 2, 3, 0, 0]);
    }
}
