//! The counters of every export and interface ([`aoe_target::export::ExportStats`],
//! [`aoe_target::export::ServerStats`]) in Prometheus text format, and the HTTP endpoint
//! that serves them at `/metrics`.
//!
//! ```
//! use aoe_cli::target::metrics::render;
//! use aoe_target::export::ExportStats;
//!
//! let stats = ExportStats::new(1, 0);
//! stats.mapped_read(4096);
//! let text = render(&[stats.snapshot()], &[]);
//! assert!(text.contains("aoe_target_read_bytes_total{export=\"e1.0\"} 4096"));
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use aoe_target::export::{Command, ExportSnapshot, IgnoreReason, ServerSnapshot, LATENCY_BUCKETS};

use super::control::View;

/// The counters at one moment, as a collector the registry encodes.
#[derive(Debug)]
struct Snapshot {
    exports: Vec<ExportSnapshot>,
    interfaces: Vec<(String, ServerSnapshot)>,
}

type Labels = Vec<(&'static str, String)>;

/// Encodes one counter family: `name` (`_total` is added), one sample per label set.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn export_label(e: &ExportSnapshot) -> Labels {
    vec![("export", e.name.clone())]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let exports = &self.exports;
        let each = |f: fn(&ExportSnapshot) -> u64| exports.iter().map(move |e| (export_label(e), f(e)));
        counters(
            &mut encoder,
            "aoe_target_read_bytes",
            "Bytes read from the backend and sent",
            each(|e| e.read_bytes),
        )?;
        counters(
            &mut encoder,
            "aoe_target_written_bytes",
            "Bytes written to the backend",
            each(|e| e.written_bytes),
        )?;
        counters(
            &mut encoder,
            "aoe_target_requests",
            "Requests served, by command",
            exports.iter().flat_map(|e| {
                Command::ALL.iter().map(|&c| {
                    let mut labels = export_label(e);
                    labels.push(("command", c.name().to_owned()));
                    (labels, e.requests[c as usize])
                })
            }),
        )?;
        counters(&mut encoder, "aoe_target_ata_errors", "ATA answers with ERR set", each(|e| e.ata_errors))?;
        counters(
            &mut encoder,
            "aoe_target_aoe_errors",
            "AoE answers with the error flag set",
            each(|e| e.aoe_errors),
        )?;
        counters(
            &mut encoder,
            "aoe_target_ignored_frames",
            "Frames not served, by reason",
            exports.iter().flat_map(|e| {
                IgnoreReason::ALL.iter().map(|&r| {
                    let mut labels = export_label(e);
                    labels.push(("reason", r.name().to_owned()));
                    (labels, e.ignored[r as usize])
                })
            }),
        )?;
        counters(
            &mut encoder,
            "aoe_target_backend_errors",
            "Backend I/O that failed, by operation",
            exports.iter().flat_map(|e| {
                ["read", "write", "flush"].iter().enumerate().map(|(i, op)| {
                    let mut labels = export_label(e);
                    labels.push(("op", (*op).to_owned()));
                    (labels, e.backend_errors[i])
                })
            }),
        )?;
        let mut family = encoder.encode_descriptor(
            "aoe_target_inflight_io",
            "Sector I/O started and not finished",
            None,
            MetricType::Gauge,
        )?;
        for e in exports {
            ConstGauge::new(i64::try_from(e.in_flight).unwrap_or(i64::MAX))
                .encode(family.encode_family(&export_label(e))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "aoe_target_io_latency_seconds",
            "Time the backend took for each read, write and flush",
            None,
            MetricType::Histogram,
        )?;
        for e in exports {
            // Counts per bucket: the encoder adds them up.
            let buckets: Vec<(f64, u64)> = e
                .latency
                .iter()
                .enumerate()
                .map(|(i, &count)| (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), count))
                .collect();
            family.encode_family(&export_label(e))?.encode_histogram::<Labels>(
                e.latency_sum.as_secs_f64(),
                e.latency_count(),
                &buckets,
                None,
            )?;
        }
        let interfaces = &self.interfaces;
        let per_interface = |f: fn(&ServerSnapshot) -> u64| {
            interfaces.iter().map(move |(name, s)| (vec![("interface", name.clone())], f(s)))
        };
        counters(
            &mut encoder,
            "aoe_target_frames_received",
            "Frames received",
            per_interface(|s| s.received),
        )?;
        counters(&mut encoder, "aoe_target_frames_sent", "Frames sent", per_interface(|s| s.sent))?;
        counters(
            &mut encoder,
            "aoe_target_send_failures",
            "Frames the link did not take",
            per_interface(|s| s.send_failures),
        )?;
        counters(
            &mut encoder,
            "aoe_target_malformed_frames",
            "Frames too short for an AoE header",
            per_interface(|s| s.malformed),
        )?;
        Ok(())
    }
}

/// The counters in Prometheus text format (version 0.0.4).
pub fn render(exports: &[ExportSnapshot], interfaces: &[(String, ServerSnapshot)]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        exports: exports.to_vec(),
        interfaces: interfaces.to_vec(),
    }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// Serves `GET /metrics` on `addr` from a thread of its own, for as long as the process
/// runs. Fails when the address cannot be bound.
pub fn serve(addr: SocketAddr, view: Arc<View>) -> std::io::Result<()> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    tracing::info!("metrics on http://{addr}/metrics");
    thread::Builder::new().name("aoe-metrics".into()).spawn(move || {
        for request in server.incoming_requests() {
            let response = match (request.method(), request.url()) {
                (tiny_http::Method::Get, "/metrics") => {
                    let (exports, interfaces) = view.snapshots();
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4; charset=utf-8"[..],
                    )
                    .expect("a valid header");
                    tiny_http::Response::from_string(render(&exports, &interfaces)).with_header(header)
                }
                _ => tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404),
            };
            if let Err(e) = request.respond(response) {
                tracing::debug!("metrics: answer not sent: {e}");
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aoe_target::export::{ExportStats, ServerStats};

    #[test]
    fn every_family_with_its_labels() {
        let stats = ExportStats::new(1, 0);
        stats.count_request(Command::Read);
        stats.count_request(Command::Read);
        stats.count_ignored(IgnoreReason::Mask);
        stats.mapped_read(1024);
        let server = ServerStats::default();
        server.count_received(5);
        server.count_sent(4, 1);
        let text = render(&[stats.snapshot()], &[("eth1".into(), server.snapshot())]);
        for line in [
            "# TYPE aoe_target_read_bytes_total counter",
            "aoe_target_read_bytes_total{export=\"e1.0\"} 1024",
            "aoe_target_written_bytes_total{export=\"e1.0\"} 0",
            "aoe_target_requests_total{export=\"e1.0\",command=\"read\"} 2",
            "aoe_target_requests_total{export=\"e1.0\",command=\"reserve\"} 0",
            "aoe_target_ata_errors_total{export=\"e1.0\"} 0",
            "aoe_target_aoe_errors_total{export=\"e1.0\"} 0",
            "aoe_target_ignored_frames_total{export=\"e1.0\",reason=\"mask\"} 1",
            "aoe_target_backend_errors_total{export=\"e1.0\",op=\"write\"} 0",
            "# TYPE aoe_target_inflight_io gauge",
            "aoe_target_inflight_io{export=\"e1.0\"} 0",
            "# TYPE aoe_target_io_latency_seconds histogram",
            "aoe_target_io_latency_seconds_bucket{export=\"e1.0\",le=\"+Inf\"} 0",
            "aoe_target_io_latency_seconds_count{export=\"e1.0\"} 0",
            "aoe_target_frames_received_total{interface=\"eth1\"} 5",
            "aoe_target_frames_sent_total{interface=\"eth1\"} 4",
            "aoe_target_send_failures_total{interface=\"eth1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let mut snapshot = ExportStats::new(2, 1).snapshot();
        snapshot.latency[0] = 3;
        snapshot.latency[2] = 1;
        snapshot.latency[LATENCY_BUCKETS.len()] = 1;
        snapshot.latency_sum = std::time::Duration::from_millis(1500);
        let text = render(&[snapshot], &[]);
        for line in [
            "aoe_target_io_latency_seconds_bucket{export=\"e2.1\",le=\"1e-05\"} 3",
            "aoe_target_io_latency_seconds_bucket{export=\"e2.1\",le=\"5e-05\"} 4",
            "aoe_target_io_latency_seconds_bucket{export=\"e2.1\",le=\"1\"} 4",
            "aoe_target_io_latency_seconds_bucket{export=\"e2.1\",le=\"+Inf\"} 5",
            "aoe_target_io_latency_seconds_sum{export=\"e2.1\"} 1.5",
            "aoe_target_io_latency_seconds_count{export=\"e2.1\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }
}
