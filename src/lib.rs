//! Sluice: a single-binary streaming ETL agent. A YAML topology of sources, transforms and
//! sinks, moving events in batches over bounded channels (backpressure), with end-to-end
//! acknowledgements so sources checkpoint only what sinks delivered.
//!
//! Start reading at [`config`] (what a user writes), then [`topology`] (how it runs).

pub mod aws;
pub mod buffer;
pub mod cli;
pub mod codec;
pub mod config;
pub mod config_tests;
pub mod event;
pub mod exactly_once;
#[doc(hidden)]
pub mod fuzz;
pub mod http_serve;
pub mod kafka;
pub mod observe;
pub mod resident;
pub mod sinks;
pub mod sources;
pub mod state_file;
pub mod template;
pub mod tls;
pub mod top;
pub mod topology;
pub mod transforms;
pub mod writable;
