//! Codecs: turning frames (lines, bodies) into events and events into bytes, plus compression.

pub mod compression;
pub mod decoding;
pub mod encoding;
pub mod framing;

pub use compression::Compression;
pub use decoding::{DecodeError, Decoder, DecodingConfig};
pub use encoding::{EncodeError, Encoder, EncodingConfig};
