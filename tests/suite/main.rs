//! The integration suite, one test binary. Each module below was a test binary of its own;
//! linking one binary instead of twenty keeps a cold build's `target/` and link time small
//! (every test binary statically links the whole agent and its dependencies). Each module's
//! doc comment says what it talks to; `common` holds the servers and helpers they share.
//!
//! Run one area with a filter on its module path, e.g. `cargo test --test suite kafka_delivery::`.

mod common;

mod aws_kinesis;
mod aws_s3;
mod cli_config;
mod disk_buffer;
mod examples_validate;
mod file_source;
mod full_disk;
mod fuzz;
mod http_pipeline;
mod http_security;
mod iceberg;
mod kafka;
mod kafka_delivery;
mod kafka_tls;
mod kinesis_leases;
mod packaging;
mod postgres;
mod reload;
mod shutdown;
mod stdin_pipeline;
mod watching;
mod windows_example;
