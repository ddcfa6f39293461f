//! Request framing: a 4-byte big-endian length, then the request header, then
//! the body. `peek_header` reads the fixed part of the header by hand, so that
//! even a request we cannot decode can be answered or logged with its
//! correlation id.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The fixed start of every request header (v0, v1, v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Smallest request frame: api key, version, correlation id, client id length.
pub const REQUEST_FRAME_MIN_BYTES: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative or below the minimum request size")]
    TooSmall(i32),
    #[error("frame length {length} exceeds socket.request.max.bytes ({max})")]
    TooLarge { length: i32, max: u32 },
}

/// Checks a frame's length prefix. Called before any allocation for the frame.
pub fn check_length(length: i32, max: u32) -> Result<usize, FrameError> {
    if length < REQUEST_FRAME_MIN_BYTES as i32 {
        return Err(FrameError::TooSmall(length));
    }
    if length as u32 > max {
        return Err(FrameError::TooLarge { length, max });
    }
    Ok(length as usize)
}

/// Reads api key, version and correlation id from a frame (without its length prefix).
pub fn peek_header(frame: &[u8]) -> Option<HeaderPrefix> {
    if frame.len() < 8 {
        return None;
    }
    Some(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes the full request header of a known API; `frame` is left at the body.
pub fn decode_header(
    api_key: ApiKey,
    api_version: i16,
    frame: &mut Bytes,
) -> anyhow::Result<RequestHeader> {
    RequestHeader::decode(frame, api_key.request_header_version(api_version))
}

/// Encodes a complete response frame: length prefix, header, body.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0); // patched below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, api_key.response_header_version(api_version))?;
    body.encode(&mut buf, api_version)?;
    let length = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits() {
        assert_eq!(check_length(-1, 100), Err(FrameError::TooSmall(-1)));
        assert_eq!(check_length(3, 100), Err(FrameError::TooSmall(3)));
        assert_eq!(
            check_length(101, 100),
            Err(FrameError::TooLarge {
                length: 101,
                max: 100
            })
        );
        assert_eq!(check_length(100, 100), Ok(100));
    }

    #[test]
    fn peek() {
        let frame = [0, 18, 0, 3, 0, 0, 0, 42, 0, 0];
        assert_eq!(
            peek_header(&frame),
            Some(HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 42
            })
        );
        assert_eq!(peek_header(&frame[..7]), None);
    }
}
