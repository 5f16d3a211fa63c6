//! The comparison's result: samples summarised into rows, rendered as an aligned text table
//! or serialised as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use crate::ceiling::Ceiling;
use crate::client::RunStats;
use crate::compare::{cases, Case, Options, Target};
use crate::stats::Summary;

/// One measurement of one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Which target.
    pub target: Target,
    /// Which measurement.
    pub case: Case,
    /// Repetition, from 0.
    pub rep: usize,
    /// Buffer count the target advertised.
    pub buffer_count: u16,
    /// What the client saw.
    pub stats: RunStats,
    /// CPU seconds the target used meanwhile.
    pub target_cpu_s: f64,
    /// CPU seconds the client's thread used meanwhile (to tell a client-bound run).
    pub client_cpu_s: f64,
}

impl Sample {
    fn gib(&self) -> f64 {
        self.stats.bytes as f64 / f64::from(1u32 << 30)
    }
}

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    /// Sector data, decimal MB/s.
    MbPerS,
    /// Requests per second.
    Iops,
    /// Mean microseconds from request to answer.
    UsPerRequest,
    /// Target CPU seconds per GiB of sector data.
    CpuSPerGib,
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Metric::MbPerS => "MB/s",
            Metric::Iops => "IOPS",
            Metric::UsPerRequest => "us/req",
            Metric::CpuSPerGib => "cpu s/GiB",
        }
    }

    /// For latency and CPU, a ratio below 1 favours aoe-target.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Metric::UsPerRequest | Metric::CpuSPerGib)
    }

    fn value(self, s: &Sample) -> f64 {
        match self {
            Metric::MbPerS => s.stats.mb_per_s(),
            Metric::Iops => s.stats.iops(),
            Metric::UsPerRequest => s.stats.mean_latency_us(),
            Metric::CpuSPerGib if s.stats.bytes == 0 => f64::NAN,
            Metric::CpuSPerGib => s.target_cpu_s / s.gib(),
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Metric::MbPerS | Metric::UsPerRequest => format!("{v:.1}"),
            Metric::Iops => format!("{v:.0}"),
            Metric::CpuSPerGib => format!("{v:.3}"),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Throughput, latency or CPU.
    pub section: &'static str,
    /// The measurement.
    pub case: Case,
    /// What is measured.
    pub metric: Metric,
    /// Unit of the values.
    pub unit: &'static str,
    /// vblade's samples.
    pub vblade: Option<Summary>,
    /// aoe-target's samples.
    pub aoe_target: Option<Summary>,
    /// aoe-target over vblade, pair by pair (the two samples of a repetition were taken
    /// back to back), summarised.
    pub ratio: Option<Summary>,
    /// aoe-target's median sector rate as a fraction of the link ceiling at this MTU.
    pub of_ceiling: Option<f64>,
}

/// The link ceiling at one MTU over the repetitions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CeilingRow {
    /// Link MTU.
    pub mtu: usize,
    /// Frame length sent.
    pub frame_len: usize,
    /// Sectors per frame.
    pub sectors: u8,
    /// Frames per second counted by the receiver.
    pub frames_per_s: Summary,
    /// Sector data at that rate, decimal MB/s.
    pub sector_mb_per_s: Summary,
}

/// Retransmits, losses and errors a target caused over the run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Trouble {
    /// Requests sent again.
    pub retransmits: u64,
    /// Requests never answered.
    pub lost: u64,
    /// Error answers.
    pub errors: u64,
}

/// Everything the tool found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// How aoe-target ran.
    pub aoe_target_mode: String,
    /// The vblade program.
    pub vblade: String,
    /// Backing file size in MiB.
    pub size_mib: u64,
    /// Repetitions.
    pub reps: usize,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Buffer count passed to both targets.
    pub buffer_count: u16,
    /// Buffer count vblade advertised.
    pub vblade_buffer_count: Option<u16>,
    /// Buffer count aoe-target advertised.
    pub aoe_target_buffer_count: Option<u16>,
    /// Client retransmit timeout, milliseconds.
    pub retransmit_ms: u64,
    /// The table.
    pub rows: Vec<Row>,
    /// Link ceilings.
    pub ceilings: Vec<CeilingRow>,
    /// vblade's retransmits, losses, errors.
    pub vblade_trouble: Trouble,
    /// aoe-target's.
    pub aoe_target_trouble: Trouble,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Report {
    /// Summarises `samples` and `ceilings`.
    pub fn new(
        options: &Options,
        aoe_target_mode: String,
        vblade: &str,
        samples: Vec<Sample>,
        ceilings: Vec<Ceiling>,
        wall: Duration,
    ) -> Report {
        let ceiling_rows: Vec<CeilingRow> = options
            .mtus
            .iter()
            .filter_map(|&mtu| {
                let at: Vec<&Ceiling> = ceilings.iter().filter(|c| c.mtu == mtu as usize).collect();
                let first = at.first()?;
                Some(CeilingRow {
                    mtu: first.mtu,
                    frame_len: first.frame_len,
                    sectors: first.sectors,
                    frames_per_s: Summary::of(&at.iter().map(|c| c.frames_per_s()).collect::<Vec<_>>())?,
                    sector_mb_per_s: Summary::of(
                        &at.iter().map(|c| c.sector_mb_per_s()).collect::<Vec<_>>(),
                    )?,
                })
            })
            .collect();
        let summary = |target: Target, case: &Case, metric: Metric| {
            let values: Vec<f64> = samples
                .iter()
                .filter(|s| s.target == target && s.case == *case)
                .map(|s| metric.value(s))
                .collect();
            Summary::of(&values)
        };
        let pair_ratios = |case: &Case, metric: Metric| {
            let value = |target: Target, rep: usize| {
                samples
                    .iter()
                    .find(|s| s.target == target && s.case == *case && s.rep == rep)
                    .map(|s| metric.value(s))
            };
            let ratios: Vec<f64> = (0..options.reps)
                .filter_map(|rep| match (value(Target::Vblade, rep), value(Target::AoeTarget, rep)) {
                    (Some(v), Some(a)) if v != 0.0 => Some(a / v),
                    _ => None,
                })
                .collect();
            Summary::of(&ratios)
        };
        let mut rows = Vec::new();
        type MetricOf = fn(&Case) -> Option<Metric>;
        let sections: [(&'static str, MetricOf); 3] = [
            ("throughput", |c| Some(if c.random { Metric::Iops } else { Metric::MbPerS })),
            ("latency at QD1", |c| (c.queue_depth == 1).then_some(Metric::UsPerRequest)),
            ("target CPU", |_| Some(Metric::CpuSPerGib)),
        ];
        for (section, metric_of) in sections {
            for &mtu in &options.mtus {
                for case in cases(mtu) {
                    let Some(metric) = metric_of(&case) else { continue };
                    let v = summary(Target::Vblade, &case, metric);
                    let a = summary(Target::AoeTarget, &case, metric);
                    let ratio = pair_ratios(&case, metric);
                    let of_ceiling = match metric {
                        Metric::MbPerS | Metric::Iops => {
                            let ceiling = ceiling_rows.iter().find(|c| c.mtu == mtu as usize);
                            let mb = summary(Target::AoeTarget, &case, Metric::MbPerS);
                            match (ceiling, mb) {
                                (Some(c), Some(mb)) => Some(mb.median / c.sector_mb_per_s.median),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    rows.push(Row {
                        section,
                        case,
                        metric,
                        unit: metric.unit(),
                        vblade: v,
                        aoe_target: a,
                        ratio,
                        of_ceiling,
                    });
                }
            }
        }
        let trouble = |target: Target| {
            samples.iter().filter(|s| s.target == target).fold(Trouble::default(), |t, s| Trouble {
                retransmits: t.retransmits + s.stats.retransmits,
                lost: t.lost + s.stats.lost,
                errors: t.errors + s.stats.errors,
            })
        };
        let buffer_count =
            |target: Target| samples.iter().find(|s| s.target == target).map(|s| s.buffer_count);
        Report {
            aoe_target_mode,
            vblade: vblade.to_owned(),
            size_mib: options.size_mib,
            reps: options.reps,
            seconds: options.seconds,
            buffer_count: options.buffer_count,
            vblade_buffer_count: buffer_count(Target::Vblade),
            aoe_target_buffer_count: buffer_count(Target::AoeTarget),
            retransmit_ms: options.retransmit.as_millis() as u64,
            rows,
            ceilings: ceiling_rows,
            vblade_trouble: trouble(Target::Vblade),
            aoe_target_trouble: trouble(Target::AoeTarget),
            wall_s: wall.as_secs_f64(),
            samples,
        }
    }

    /// The report as aligned plain text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let bc = |b: Option<u16>| b.map_or("?".to_string(), |b| b.to_string());
        let _ = writeln!(out, "aoe-target vs vblade over a veth pair between two network namespaces");
        let _ = writeln!(out, "  aoe-target: {}", self.aoe_target_mode);
        let _ = writeln!(out, "  vblade:     {}", self.vblade);
        let _ = writeln!(
            out,
            "  backing file: {} MiB on /dev/shm (tmpfs), the same file for both; per MTU each target runs \
             on its own veth pair and the measurements alternate between them case by case",
            self.size_mib
        );
        let _ = writeln!(
            out,
            "  both targets started with -b {}; advertised buffer count: vblade {}, aoe-target {}; \
             QD used = min(QD, buffer count)",
            self.buffer_count,
            bc(self.vblade_buffer_count),
            bc(self.aoe_target_buffer_count)
        );
        let _ = writeln!(
            out,
            "  client: raw AF_PACKET (recvmmsg/sendmmsg), LBA48; sequential = full frames (2 sectors at \
             MTU 1500, 17 at 9000), random = 4 KiB aligned (MTU 9000 only); retransmit after {} ms",
            self.retransmit_ms
        );
        let _ = writeln!(
            out,
            "  {} repetition(s) x {:.1} s per measurement; median (min-max); MB = 10^6 bytes; ratio = \
             aoe-target / vblade per back-to-back pair, median (min-max); for us/req and cpu s/GiB \
             lower is better",
            self.reps, self.seconds
        );
        let _ = writeln!(out);

        let header = ["test", "MTU", "QD", "unit", "vblade", "aoe-target", "ratio", "of ceiling"];
        let mut table: Vec<[String; 8]> = vec![header.map(str::to_string)];
        let mut section_starts = Vec::new();
        let mut last_section = "";
        for row in &self.rows {
            if row.section != last_section {
                section_starts.push((table.len(), row.section));
                last_section = row.section;
            }
            let cell = |s: Option<Summary>| match s {
                Some(s) if s.n > 1 => format!(
                    "{} ({}-{})",
                    row.metric.format(s.median),
                    row.metric.format(s.min),
                    row.metric.format(s.max)
                ),
                Some(s) => row.metric.format(s.median),
                None => "-".into(),
            };
            table.push([
                row.case.name.to_string(),
                row.case.mtu.to_string(),
                row.case.queue_depth.to_string(),
                row.unit.to_string(),
                cell(row.vblade),
                cell(row.aoe_target),
                match row.ratio {
                    Some(r) if r.n > 1 => format!("{:.2} ({:.2}-{:.2})", r.median, r.min, r.max),
                    Some(r) => format!("{:.2}", r.median),
                    None => "-".into(),
                },
                row.of_ceiling.map_or(String::new(), |f| format!("{:.0}%", f * 100.0)),
            ]);
        }
        let mut widths = [0usize; 8];
        for line in &table {
            for (w, c) in widths.iter_mut().zip(line) {
                *w = (*w).max(c.chars().count());
            }
        }
        // Numbers right-aligned, names left-aligned.
        let right = [false, true, true, false, true, true, true, true];
        let mut sections = section_starts.iter().peekable();
        for (i, line) in table.iter().enumerate() {
            if let Some(&&(_, name)) = sections.peek().filter(|(at, _)| *at == i) {
                let _ = writeln!(out, "{name}:");
                sections.next();
            }
            let mut text = String::from("  ");
            for ((c, w), r) in line.iter().zip(widths).zip(right) {
                if r {
                    let _ = write!(text, "{c:>w$}  ");
                } else {
                    let _ = write!(text, "{c:<w$}  ");
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "link ceiling: AfPacket send_batch of full-size frames (target namespace) -> recv_batch \
             counter (initiator namespace), sender at most 64 or 128 frames ahead (the better kept)"
        );
        for c in &self.ceilings {
            let s = |x: Summary, prec: usize| {
                if x.n > 1 {
                    format!("{:.prec$} ({:.prec$}-{:.prec$})", x.median, x.min, x.max)
                } else {
                    format!("{:.prec$}", x.median)
                }
            };
            let _ = writeln!(
                out,
                "  MTU {:>5}: {:>5}-byte frames ({:>2} sectors): {} frames/s = {} MB/s of sector data",
                c.mtu,
                c.frame_len,
                c.sectors,
                s(c.frames_per_s, 0),
                s(c.sector_mb_per_s, 1)
            );
        }
        for (name, t) in [("vblade", self.vblade_trouble), ("aoe-target", self.aoe_target_trouble)] {
            let _ = writeln!(
                out,
                "{name}: {} retransmits, {} requests lost, {} error answers over the run",
                t.retransmits, t.lost, t.errors
            );
        }
        let _ = writeln!(out, "wall time {:.0} s", self.wall_s);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Op;

    fn sample(target: Target, case: Case, rep: usize, mb: f64, cpu: f64) -> Sample {
        let bytes = (mb * 1e6) as u64;
        let stats = RunStats {
            requests: bytes / 8704,
            bytes,
            elapsed: Duration::from_secs(1),
            latency_total: Duration::from_micros(bytes / 8704 * 50),
            queue_depth: case.queue_depth,
            ..RunStats::default()
        };
        Sample { target, case, rep, buffer_count: 64, stats, target_cpu_s: cpu, client_cpu_s: cpu }
    }

    #[test]
    fn rows_ratios_and_rendering() {
        let options = Options {
            size_mib: 64,
            reps: 2,
            seconds: 1.0,
            mtus: vec![9000],
            buffer_count: 64,
            vblade: "vblade".into(),
            target_bin: None,
            retransmit: Duration::from_millis(50),
        };
        let mut samples = Vec::new();
        for case in cases(9000) {
            for rep in 0..2 {
                samples.push(sample(Target::Vblade, case, rep, 100.0 + rep as f64, 0.5));
                samples.push(sample(Target::AoeTarget, case, rep, 200.0 + rep as f64, 0.25));
            }
        }
        let ceiling = Ceiling {
            mtu: 9000,
            frame_len: 8740,
            sectors: 17,
            sent: 0,
            received: 100_000,
            seconds: 1.0,
            window: Some(64),
        };
        let r = Report::new(
            &options,
            "in-process".into(),
            "/usr/sbin/vblade",
            samples,
            vec![ceiling],
            Duration::ZERO,
        );
        // 6 throughput rows, 3 latency rows (QD1), 6 CPU rows.
        assert_eq!(r.rows.len(), 15);
        let seq = &r.rows[0];
        assert_eq!((seq.case.name, seq.case.op, seq.metric), ("seq read", Op::Read, Metric::MbPerS));
        let ratio = seq.ratio.unwrap();
        assert_eq!(ratio.n, 2);
        assert!((ratio.min - 201.0 / 101.0).abs() < 1e-9 && (ratio.max - 2.0).abs() < 1e-9);
        let ceiling_mb = 100_000.0 * 17.0 * 512.0 / 1e6;
        assert!((seq.of_ceiling.unwrap() - 200.5 / ceiling_mb).abs() < 1e-3);
        let cpu = r.rows.iter().find(|row| row.metric == Metric::CpuSPerGib).unwrap();
        assert!(cpu.ratio.unwrap().max < 0.3, "half the CPU for twice the bytes");
        let text = r.render();
        for needle in ["throughput:", "latency at QD1:", "target CPU:", "rand read 4K", "MTU  9000", "-b 64"]
        {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"aoe_target_mode\":\"in-process\""));
    }
}
