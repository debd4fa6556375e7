//! Compression of sink output and decompression of request bodies (gzip, zstd).

use serde::Deserialize;
use std::io::{Read, Write};

/// Output compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression (default).
    #[default]
    None,
    /// gzip (RFC 1952), level 6.
    Gzip,
    /// Zstandard, level 3.
    Zstd,
}

impl Compression {
    /// The `Content-Encoding` value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    /// Compresses a whole buffer (borrowed back unchanged for `none`).
    pub fn compress(self, data: &[u8]) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        Ok(std::borrow::Cow::Owned(match self {
            Compression::None => return Ok(std::borrow::Cow::Borrowed(data)),
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::default(),
                );
                encoder.write_all(data)?;
                encoder.finish()?
            }
            Compression::Zstd => zstd::bulk::compress(data, 3)?,
        }))
    }
}

/// Why a body could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("unsupported Content-Encoding `{0}` (use gzip, zstd or identity)")]
    Unsupported(String),
    #[error("decompressed body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("corrupt {0} body: {1}")]
    Corrupt(&'static str, std::io::Error),
}

/// Decompresses a request body per its `Content-Encoding`, refusing to inflate past `limit`
/// bytes (a small gzip bomb must not exhaust memory).
pub fn decompress(
    encoding: Option<&str>,
    body: bytes::Bytes,
    limit: usize,
) -> Result<bytes::Bytes, DecompressError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(body),
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Some("zstd") => Box::new(
            zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| DecompressError::Corrupt("zstd", e))?,
        ),
        Some(other) => return Err(DecompressError::Unsupported(other.to_string())),
    };
    let name = if encoding.as_deref() == Some("zstd") {
        "zstd"
    } else {
        "gzip"
    };
    let mut out = Vec::new();
    let read = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt(name, e))?;
    if read > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_gzip_and_zstd() {
        for (c, name) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
            let packed = c.compress(b"hello world").unwrap();
            let body = decompress(Some(name), packed.into_owned().into(), 100).unwrap();
            assert_eq!(&body[..], b"hello world");
        }
    }

    #[test]
    fn refuses_to_inflate_past_the_limit() {
        let data = vec![b'a'; 10_000];
        let packed = Compression::Gzip.compress(&data).unwrap();
        assert!(matches!(
            decompress(Some("gzip"), packed.into_owned().into(), 1000),
            Err(DecompressError::TooLarge(1000))
        ));
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_errors() {
        assert!(matches!(
            decompress(Some("gzip"), "nope".into(), 100),
            Err(DecompressError::Corrupt(..))
        ));
        assert!(matches!(
            decompress(Some("br"), "x".into(), 100),
            Err(DecompressError::Unsupported(_))
        ));
    }
}
