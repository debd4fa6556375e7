//! Buffers in front of sinks. The memory buffer is the bounded channel itself
//! (`topology::channel`); the disk buffer ([`disk`]) sits between two small channels and keeps
//! everything else in segment files.

pub mod disk;
