//! Checks shared by the fuzz targets.

use aoe_proto::{parse_headers, Frame, FrameRepr};

/// Parses `bytes` as a frame. When it parses, its values must emit, and the emitted frame
/// must parse back to the same values, be no longer than the input and pad to at least
/// 60 bytes.
pub fn check_frame(bytes: &[u8]) {
    let Ok(frame) = Frame::parse(bytes) else { return };
    assert!(parse_headers(bytes).is_ok(), "Frame::parse accepted what parse_headers rejects");
    let first = frame.repr();
    let len = first.buffer_len();
    assert!(len <= bytes.len(), "re-emitted frame ({len} bytes) is longer than the input ({})", bytes.len());

    let mut again = vec![0u8; len];
    assert_eq!(first.emit(&mut again), Ok(len));
    let second = FrameRepr::parse(&again).expect("an emitted frame parses");
    assert_eq!(second, first, "values changed across emit and parse");

    let mut padded = vec![0xA5u8; len.max(60) + 4];
    let padded_len = first.emit_padded(&mut padded).expect("emit_padded into a big enough buffer");
    assert_eq!(padded_len, len.max(60));
    assert!(padded_len >= 60);
    assert_eq!(padded[..len], again[..]);
    assert!(padded[len..padded_len].iter().all(|&b| b == 0), "padding is not zeros");
    assert!(padded[padded_len..].iter().all(|&b| b == 0xA5), "emit_padded wrote past the frame");
}
