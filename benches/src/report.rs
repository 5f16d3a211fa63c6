//! The comparison's result: samples summarised into rows, rendered as aligned text tables
//! or serialised as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use crate::ceiling::Ceiling;
use crate::client::RunStats;
use crate::compare::{cases, describe_variant, initiator_cases, Case, Options, Target};
use crate::initiator::SeqRun;
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

/// One measurement of aoe-initiator's `Device` against aoe-target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitiatorSample {
    /// The raw client's case it is set beside (sequential, QD 16).
    pub case: Case,
    /// Repetition, from 0.
    pub rep: usize,
    /// Bytes per `read_at` / `write_at` call.
    pub chunk: usize,
    /// Most frames the Device keeps outstanding (its window cap).
    pub window: u16,
    /// What the calls achieved.
    pub run: SeqRun,
    /// CPU seconds the thread driving the Device used meanwhile.
    pub initiator_cpu_s: f64,
    /// CPU seconds the target used meanwhile.
    pub target_cpu_s: f64,
    /// Frames sent for the first time.
    pub frames: u64,
    /// Frames sent again after a timeout.
    pub retransmits: u64,
    /// Frame timeouts.
    pub timeouts: u64,
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
    /// CPU seconds of the initiator's thread (the raw client or aoe-initiator's Device) per
    /// GiB of sector data.
    InitiatorCpuSPerGib,
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Metric::MbPerS => "MB/s",
            Metric::Iops => "IOPS",
            Metric::UsPerRequest => "us/req",
            Metric::CpuSPerGib | Metric::InitiatorCpuSPerGib => "cpu s/GiB",
        }
    }

    /// For latency and CPU, a ratio below 1 favours aoe-target.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Metric::UsPerRequest | Metric::CpuSPerGib | Metric::InitiatorCpuSPerGib)
    }

    fn value(self, s: &Sample) -> f64 {
        match self {
            Metric::MbPerS => s.stats.mb_per_s(),
            Metric::Iops => s.stats.iops(),
            Metric::UsPerRequest => s.stats.mean_latency_us(),
            Metric::CpuSPerGib | Metric::InitiatorCpuSPerGib if s.stats.bytes == 0 => f64::NAN,
            Metric::CpuSPerGib => s.target_cpu_s / s.gib(),
            Metric::InitiatorCpuSPerGib => s.client_cpu_s / s.gib(),
        }
    }

    fn initiator_value(self, s: &InitiatorSample) -> f64 {
        let gib = s.run.bytes as f64 / f64::from(1u32 << 30);
        match self {
            Metric::MbPerS => s.run.mb_per_s(),
            Metric::Iops | Metric::UsPerRequest => f64::NAN,
            _ if s.run.bytes == 0 => f64::NAN,
            Metric::CpuSPerGib => s.target_cpu_s / gib,
            Metric::InitiatorCpuSPerGib => s.initiator_cpu_s / gib,
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Metric::MbPerS | Metric::UsPerRequest => format!("{v:.1}"),
            Metric::Iops => format!("{v:.0}"),
            Metric::CpuSPerGib | Metric::InitiatorCpuSPerGib => format!("{v:.3}"),
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
    /// Each variant's samples and ratios to aoe-target, in the order of
    /// [`Report::variants`].
    pub variants: Vec<VariantCell>,
}

/// A variant's part of a [`Row`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantCell {
    /// The variant's label.
    pub label: String,
    /// Its samples.
    pub values: Option<Summary>,
    /// It over plain aoe-target, repetition by repetition (the two samples were taken in the
    /// same round of the case), summarised.
    pub ratio: Option<Summary>,
}

/// An aoe-target variant as it ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantRun {
    /// Its label.
    pub label: String,
    /// Its binary and flags.
    pub command: String,
    /// The buffer count it advertised.
    pub buffer_count: Option<u16>,
    /// Its retransmits, losses, errors.
    pub trouble: Trouble,
}

/// One line of the table of aoe-initiator's Device beside the raw client, both against
/// aoe-target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitiatorRow {
    /// Throughput or initiator CPU.
    pub section: &'static str,
    /// The raw client's case.
    pub case: Case,
    /// What is measured.
    pub metric: Metric,
    /// Unit of the values.
    pub unit: &'static str,
    /// The raw client's samples (the aoe-target samples of the main table).
    pub raw_client: Option<Summary>,
    /// The Device's samples.
    pub device: Option<Summary>,
    /// Device over raw client, pair by pair (taken back to back), summarised.
    pub ratio: Option<Summary>,
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
    /// The aoe-target variants measured beside it (`--variant`).
    pub variants: Vec<VariantRun>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Bytes per call of aoe-initiator's Device (`None`: it was not measured).
    pub initiator_chunk: Option<usize>,
    /// Its window cap, as the Device reported it.
    pub initiator_window: Option<u16>,
    /// The Device beside the raw client, against aoe-target.
    pub initiator_rows: Vec<InitiatorRow>,
    /// The Device's retransmits over the run (`lost` and `errors` stay 0: a failed call ends
    /// the run).
    pub initiator_trouble: Trouble,
    /// Every sample of the Device.
    pub initiator_samples: Vec<InitiatorSample>,
}

impl Report {
    /// Summarises `samples`, `initiator_samples` and `ceilings`.
    pub fn new(
        options: &Options,
        aoe_target_mode: String,
        vblade: &str,
        samples: Vec<Sample>,
        initiator_samples: Vec<InitiatorSample>,
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
        // `over` / `under`, repetition by repetition.
        let pair_ratios = |over: Target, under: Target, case: &Case, metric: Metric| {
            let value = |target: Target, rep: usize| {
                samples
                    .iter()
                    .find(|s| s.target == target && s.case == *case && s.rep == rep)
                    .map(|s| metric.value(s))
            };
            let ratios: Vec<f64> = (0..options.reps)
                .filter_map(|rep| match (value(under, rep), value(over, rep)) {
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
                    let ratio = pair_ratios(Target::AoeTarget, Target::Vblade, &case, metric);
                    let variants = (0..options.variants.len())
                        .map(|i| VariantCell {
                            label: options.variants[i].label.clone(),
                            values: summary(Target::Variant(i), &case, metric),
                            ratio: pair_ratios(Target::Variant(i), Target::AoeTarget, &case, metric),
                        })
                        .collect();
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
                        variants,
                    });
                }
            }
        }
        let raw = |case: &Case, rep: usize| {
            samples.iter().find(|s| s.target == Target::AoeTarget && s.case == *case && s.rep == rep)
        };
        let device =
            |case: &Case, rep: usize| initiator_samples.iter().find(|s| s.case == *case && s.rep == rep);
        let mut initiator_rows = Vec::new();
        if !initiator_samples.is_empty() {
            for (section, metric) in
                [("throughput", Metric::MbPerS), ("initiator CPU", Metric::InitiatorCpuSPerGib)]
            {
                for &mtu in &options.mtus {
                    for case in initiator_cases(mtu) {
                        let reps = 0..options.reps;
                        let raws: Vec<f64> =
                            reps.clone().filter_map(|r| raw(&case, r)).map(|s| metric.value(s)).collect();
                        let devices: Vec<f64> = reps
                            .clone()
                            .filter_map(|r| device(&case, r))
                            .map(|s| metric.initiator_value(s))
                            .collect();
                        let ratios: Vec<f64> = reps
                            .filter_map(|r| match (raw(&case, r), device(&case, r)) {
                                (Some(a), Some(d)) => {
                                    let (a, d) = (metric.value(a), metric.initiator_value(d));
                                    (a != 0.0).then_some(d / a)
                                }
                                _ => None,
                            })
                            .collect();
                        initiator_rows.push(InitiatorRow {
                            section,
                            case,
                            metric,
                            unit: metric.unit(),
                            raw_client: Summary::of(&raws),
                            device: Summary::of(&devices),
                            ratio: Summary::of(&ratios),
                        });
                    }
                }
            }
        }
        let initiator_trouble = Trouble {
            retransmits: initiator_samples.iter().map(|s| s.retransmits).sum(),
            ..Trouble::default()
        };
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
            variants: (0..options.variants.len())
                .map(|i| VariantRun {
                    label: options.variants[i].label.clone(),
                    command: describe_variant(&options.variants[i], options),
                    buffer_count: buffer_count(Target::Variant(i)),
                    trouble: trouble(Target::Variant(i)),
                })
                .collect(),
            wall_s: wall.as_secs_f64(),
            samples,
            initiator_chunk: initiator_samples.first().map(|s| s.chunk),
            initiator_window: initiator_samples.first().map(|s| s.window),
            initiator_rows,
            initiator_trouble,
            initiator_samples,
        }
    }

    /// The report as aligned plain text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let bc = |b: Option<u16>| b.map_or("?".to_string(), |b| b.to_string());
        let _ = writeln!(out, "aoe-target vs vblade over a veth pair between two network namespaces");
        let _ = writeln!(out, "  aoe-target: {}", self.aoe_target_mode);
        let _ = writeln!(out, "  vblade:     {}", self.vblade);
        for v in &self.variants {
            let _ = writeln!(
                out,
                "  variant {}: {} (advertised buffer count {}); LABEL/aoe-target = it over plain aoe-target \
                 per repetition, median (min-max)",
                v.label,
                v.command,
                bc(v.buffer_count)
            );
        }
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

        let mut header: Vec<String> =
            ["test", "MTU", "QD", "unit", "vblade", "aoe-target", "ratio", "of ceiling"]
                .map(str::to_string)
                .into();
        for v in &self.variants {
            header.extend([v.label.clone(), format!("{}/aoe-target", v.label)]);
        }
        let mut right = vec![false, true, true, false, true, true, true, true];
        right.resize(header.len(), true);
        let mut table: Vec<Vec<String>> = vec![header];
        let mut section_starts = Vec::new();
        let mut last_section = "";
        for row in &self.rows {
            if row.section != last_section {
                section_starts.push((table.len(), row.section));
                last_section = row.section;
            }
            let mut line = vec![
                row.case.name.to_string(),
                row.case.mtu.to_string(),
                row.case.queue_depth.to_string(),
                row.unit.to_string(),
                summary_cell(row.metric, row.vblade),
                summary_cell(row.metric, row.aoe_target),
                ratio_cell(row.ratio),
                row.of_ceiling.map_or(String::new(), |f| format!("{:.0}%", f * 100.0)),
            ];
            for v in &row.variants {
                line.extend([summary_cell(row.metric, v.values), ratio_cell(v.ratio)]);
            }
            table.push(line);
        }
        // Numbers right-aligned, names left-aligned.
        write_table(&mut out, &table, &right, &section_starts);
        self.render_initiator(&mut out);

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
        let variants = self.variants.iter().map(|v| (v.label.as_str(), v.trouble));
        for (name, t) in [("vblade", self.vblade_trouble), ("aoe-target", self.aoe_target_trouble)]
            .into_iter()
            .chain(variants)
        {
            let _ = writeln!(
                out,
                "{name}: {} retransmits, {} requests lost, {} error answers over the run",
                t.retransmits, t.lost, t.errors
            );
        }
        let _ = writeln!(out, "wall time {:.0} s", self.wall_s);
        out
    }

    /// The table of aoe-initiator's Device beside the raw client; nothing when it was not
    /// measured.
    fn render_initiator(&self, out: &mut String) {
        if self.initiator_rows.is_empty() {
            return;
        }
        let chunk = self.initiator_chunk.unwrap_or(0);
        let chunk = if chunk % (1 << 20) == 0 {
            format!("{} MiB", chunk >> 20)
        } else {
            format!("{} KiB", chunk >> 10)
        };
        let window = self.initiator_window.map_or("?".to_string(), |w| w.to_string());
        let _ = writeln!(out);
        let _ = writeln!(out, "initiator (aoe-initiator Device) vs raw client, against aoe-target:");
        let _ = writeln!(
            out,
            "  Device: sequential read_at / write_at calls of {chunk} over the file, wrapping around, \
             window capped at {window} frames, receiving through a ring as the aoe tool does; raw client: the aoe-target QD16 samples above, each \
             taken back to back with the Device's (order alternating)"
        );
        let _ = writeln!(
            out,
            "  ratio = Device / raw client per pair, median (min-max); initiator CPU = CPU of the \
             thread driving the client or Device, lower is better; Device: {} retransmits over the run",
            self.initiator_trouble.retransmits
        );
        let header = ["test", "MTU", "QD", "unit", "raw client", "Device", "ratio"];
        let mut table: Vec<Vec<String>> = vec![header.map(str::to_string).into()];
        let mut section_starts = Vec::new();
        let mut last_section = "";
        for row in &self.initiator_rows {
            if row.section != last_section {
                section_starts.push((table.len(), row.section));
                last_section = row.section;
            }
            table.push(vec![
                row.case.name.to_string(),
                row.case.mtu.to_string(),
                row.case.queue_depth.to_string(),
                row.unit.to_string(),
                summary_cell(row.metric, row.raw_client),
                summary_cell(row.metric, row.device),
                ratio_cell(row.ratio),
            ]);
        }
        write_table(out, &table, &[false, true, true, false, true, true, true], &section_starts);
    }
}

/// `median (min-max)` of a metric's samples, or the one value, or `-`.
fn summary_cell(metric: Metric, s: Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => {
            format!("{} ({}-{})", metric.format(s.median), metric.format(s.min), metric.format(s.max))
        }
        Some(s) => metric.format(s.median),
        None => "-".into(),
    }
}

/// A ratio's `median (min-max)` to two places, or `-`.
fn ratio_cell(r: Option<Summary>) -> String {
    match r {
        Some(r) if r.n > 1 => format!("{:.2} ({:.2}-{:.2})", r.median, r.min, r.max),
        Some(r) => format!("{:.2}", r.median),
        None => "-".into(),
    }
}

/// Writes `table` (its first line the header) in aligned columns, indented by two, with a
/// `section:` line before the line each section starts at; `right` right-aligns a column.
fn write_table(out: &mut String, table: &[Vec<String>], right: &[bool], section_starts: &[(usize, &str)]) {
    let mut widths = vec![0usize; right.len()];
    for line in table {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut sections = section_starts.iter().peekable();
    for (i, line) in table.iter().enumerate() {
        if let Some(&&(_, name)) = sections.peek().filter(|(at, _)| *at == i) {
            let _ = writeln!(out, "{name}:");
            sections.next();
        }
        let mut text = String::from("  ");
        for ((c, &w), &r) in line.iter().zip(&widths).zip(right) {
            if r {
                let _ = write!(text, "{c:>w$}  ");
            } else {
                let _ = write!(text, "{c:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
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
            target_rx_ring: true,
            retransmit: Duration::from_millis(50),
            initiator_chunk: Some(8 << 20),
            variants: Vec::new(),
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
            Vec::new(),
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
        assert!(r.initiator_rows.is_empty() && !text.contains("aoe-initiator"), "not measured, not shown");
    }

    #[test]
    fn variant_columns_pair_with_plain_aoe_target() {
        let options = Options {
            size_mib: 64,
            reps: 3,
            seconds: 1.0,
            mtus: vec![1500],
            buffer_count: 64,
            vblade: "vblade".into(),
            target_bin: Some("/x/aoe-target".into()),
            target_rx_ring: true,
            retransmit: Duration::from_millis(50),
            initiator_chunk: None,
            variants: vec!["bypass=--qdisc-bypass".parse().unwrap()],
        };
        let mut samples = Vec::new();
        for case in cases(1500) {
            for rep in 0..3 {
                samples.push(sample(Target::Vblade, case, rep, 50.0, 0.5));
                samples.push(sample(Target::AoeTarget, case, rep, 100.0 + rep as f64, 0.2));
                samples.push(sample(Target::Variant(0), case, rep, 110.0 + rep as f64, 0.1));
            }
        }
        let r =
            Report::new(&options, "binary".into(), "vblade", samples, Vec::new(), Vec::new(), Duration::ZERO);
        let seq = &r.rows[0];
        assert_eq!(seq.variants.len(), 1);
        let cell = &seq.variants[0];
        assert_eq!((cell.label.as_str(), cell.values.unwrap().median), ("bypass", 111.0));
        let ratio = cell.ratio.unwrap();
        assert_eq!(ratio.n, 3);
        assert!((ratio.min - 112.0 / 102.0).abs() < 1e-9 && (ratio.max - 1.1).abs() < 1e-9);
        assert!((seq.ratio.unwrap().median - 101.0 / 50.0).abs() < 1e-9, "aoe-target / vblade as before");
        let cpu = r.rows.iter().find(|row| row.metric == Metric::CpuSPerGib).unwrap();
        assert!(cpu.variants[0].ratio.unwrap().max < 0.5, "half the CPU for more bytes");
        assert_eq!(r.variants[0].command, "/x/aoe-target --qdisc-bypass");
        let text = r.render();
        for needle in [
            "variant bypass: /x/aoe-target --qdisc-bypass",
            "bypass/aoe-target",
            "111.0 (110.0-112.0)",
            "1.10 (1.10-1.10)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        assert!(text.contains("bypass: 0 retransmits"), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"variants\":[{\"label\":\"bypass\""), "{json}");
    }

    #[test]
    fn device_rows_pair_with_the_raw_client_against_aoe_target() {
        let options = Options {
            size_mib: 64,
            reps: 3,
            seconds: 1.0,
            mtus: vec![1500, 9000],
            buffer_count: 64,
            vblade: "vblade".into(),
            target_bin: None,
            target_rx_ring: true,
            retransmit: Duration::from_millis(50),
            initiator_chunk: Some(8 << 20),
            variants: Vec::new(),
        };
        let mut samples = Vec::new();
        let mut devices = Vec::new();
        for mtu in [1500, 9000] {
            for case in cases(mtu) {
                for rep in 0..3 {
                    samples.push(sample(Target::Vblade, case, rep, 50.0, 0.5));
                    samples.push(sample(Target::AoeTarget, case, rep, 200.0 + 10.0 * rep as f64, 0.1));
                }
            }
            for case in initiator_cases(mtu) {
                for rep in 0..3 {
                    let bytes = ((180.0 + 10.0 * rep as f64) * 1e6) as u64;
                    let run = SeqRun { bytes, calls: bytes >> 23, elapsed: Duration::from_secs(1) };
                    devices.push(InitiatorSample {
                        case,
                        rep,
                        chunk: 8 << 20,
                        window: 16,
                        run,
                        initiator_cpu_s: 0.2,
                        target_cpu_s: 0.1,
                        frames: 0,
                        retransmits: rep as u64,
                        timeouts: 0,
                    });
                }
            }
        }
        let r =
            Report::new(&options, "binary".into(), "vblade", samples, devices, Vec::new(), Duration::ZERO);
        // seq read and write at two MTUs, throughput and CPU.
        assert_eq!(r.initiator_rows.len(), 8);
        let read = &r.initiator_rows[0];
        assert_eq!((read.case.name, read.case.mtu, read.case.queue_depth), ("seq read", 1500, 16));
        assert_eq!(read.device.unwrap().median, 190.0);
        assert_eq!(read.raw_client.unwrap().median, 210.0);
        let ratio = read.ratio.unwrap();
        assert_eq!(ratio.n, 3);
        assert!((ratio.min - 180.0 / 200.0).abs() < 1e-9 && (ratio.max - 200.0 / 220.0).abs() < 1e-9);
        let cpu = r.initiator_rows.iter().find(|row| row.metric == Metric::InitiatorCpuSPerGib).unwrap();
        // The raw client used half the CPU (0.1 s) for a little more data.
        assert!(cpu.ratio.unwrap().min > 1.8, "{cpu:?}");
        assert_eq!(
            (r.initiator_chunk, r.initiator_window, r.initiator_trouble.retransmits),
            (Some(8 << 20), Some(16), 12)
        );
        let text = r.render();
        for needle in [
            "initiator (aoe-initiator Device) vs raw client, against aoe-target:",
            "calls of 8 MiB",
            "window capped at 16 frames",
            "initiator CPU:",
            "raw client",
            "0.90 (0.90-0.91)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"initiator_samples\":[{"));
    }
}
