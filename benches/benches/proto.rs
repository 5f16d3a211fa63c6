//! The codec's hot paths: parsing and emitting headers, IDENTIFY data, MAC mask walks.
//!
//! `cargo bench -p aoe-benches --bench proto` (add `-- --quick` for a short run).

use std::hint::black_box;

use aoe_proto::identify::{Identify, IDENTIFY_LEN};
use aoe_proto::{
    AtaFlags, AtaRepr, AtaStatus, Body, BodyRepr, ConfigCommand, ConfigRepr, Directive, DirectiveCommand,
    Flags, Frame, FrameRepr, HeaderRepr, MacAddr, MaskCommand, MaskError, MaskRepr,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const INITIATOR: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x20]);
const TARGET: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);

fn emit(repr: &FrameRepr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    let len = repr.emit(&mut buf).expect("emit");
    assert_eq!(len, buf.len());
    buf
}

fn request(body: BodyRepr<'_>) -> FrameRepr<'_> {
    FrameRepr { dst: TARGET, src: INITIATOR, header: HeaderRepr::request(1, 0, 0x1234_5678), body }
}

fn response(body: BodyRepr<'_>) -> FrameRepr<'_> {
    FrameRepr {
        dst: INITIATOR,
        src: TARGET,
        header: HeaderRepr { flags: Flags::RESPONSE, error: 0, shelf: 1, slot: 0, tag: 0x1234_5678 },
        body,
    }
}

/// Parses a frame and folds the ATA fields a target acts on into one number.
fn ata_fields(buf: &[u8]) -> u64 {
    let Ok(frame) = Frame::parse(buf) else { return 0 };
    match frame.body {
        Body::Ata { header, data } => {
            header.lba() ^ u64::from(header.sector_count) ^ u64::from(frame.header.tag()) ^ data.len() as u64
        }
        _ => 0,
    }
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");

    let read = emit(&request(BodyRepr::Ata { header: AtaRepr::read(0x1_0000_0000, 17, true), data: &[] }));
    assert_eq!(read.len(), 36);
    group.throughput(Throughput::Bytes(read.len() as u64));
    group.bench_function("ata_read_request_36B", |b| b.iter(|| ata_fields(black_box(&read))));

    let data = vec![0x5au8; 17 * 512];
    let write =
        emit(&request(BodyRepr::Ata { header: AtaRepr::write(0x1_0000_0000, 17, true), data: &data }));
    assert_eq!(write.len(), 8740);
    group.throughput(Throughput::Bytes(write.len() as u64));
    group.bench_function("ata_write_17_sectors_8740B", |b| b.iter(|| ata_fields(black_box(&write))));

    let string = [b'c'; 1024];
    let config = emit(&response(BodyRepr::Config(ConfigRepr {
        buffer_count: 16,
        firmware: 0x4019,
        sector_count: 17,
        aoe_version: 1,
        command: ConfigCommand::Read,
        string: &string,
    })));
    assert_eq!(config.len(), 1056);
    group.throughput(Throughput::Bytes(config.len() as u64));
    group.bench_function("config_answer_1024B_string", |b| {
        b.iter(|| match Frame::parse(black_box(&config)) {
            Ok(Frame { body: Body::Config { header, string }, .. }) => {
                usize::from(header.buffer_count.get()) + string.len()
            }
            _ => 0,
        })
    });

    let directives: Vec<Directive> = (0..255u8)
        .map(|i| Directive::new(DirectiveCommand::Add, MacAddr([0x02, 0, 0, 0, i, i.wrapping_mul(7)])))
        .collect();
    let mask = emit(&response(BodyRepr::Mask(MaskRepr {
        command: MaskCommand::Read,
        error: MaskError::None,
        directives: &directives,
    })));
    assert_eq!(mask.len(), 24 + 4 + 255 * 8);
    group.throughput(Throughput::Elements(255));
    group.bench_function("mask_walk_255_directives", |b| {
        b.iter(|| match Frame::parse(black_box(&mask)) {
            Ok(Frame { body: Body::Mask { directives, .. }, .. }) => directives
                .iter()
                .filter(|d| d.command() == DirectiveCommand::Add)
                .map(|d| u32::from(d.mac.0[5]) + u32::from(d.mac.0[4]))
                .sum::<u32>(),
            _ => 0,
        })
    });
    group.finish();
}

fn emit_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit");

    // The header of a 17-sector read answer; the target writes the data in place after it.
    let answer = response(BodyRepr::Ata {
        header: AtaRepr {
            flags: AtaFlags::EXTENDED,
            err_feature: 0,
            sector_count: 17,
            cmd_status: AtaStatus::DRDY.bits(),
            lba: 0x1_0000_0000,
        },
        data: &[],
    });
    let mut buf = vec![0u8; 9000];
    group.throughput(Throughput::Bytes(answer.buffer_len() as u64));
    group.bench_function("ata_read_response_header_36B", |b| {
        b.iter(|| black_box(&answer).emit(black_box(&mut buf[..])))
    });

    let id = Identify::new("Rust AoE target", "e1.0-0123456789", "0.1.0", 0x1_2345_6789);
    let mut block = [0u8; IDENTIFY_LEN];
    group.throughput(Throughput::Bytes(IDENTIFY_LEN as u64));
    group.bench_function("identify_512B", |b| {
        b.iter(|| {
            black_box(&id).emit(&mut block);
            black_box(&block);
        })
    });
    group.finish();
}

criterion_group!(benches, parse, emit_benches);
criterion_main!(benches);
