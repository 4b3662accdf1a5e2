//! The measuring tools of mobilenet-serve, each a binary over this shared library.
//!
//! # Layout
//!
//! - `mobilenet-bench` (`src/main.rs`): the server against the bare decode + resize + ORT pipeline
//!   ([`bare`], [`report`], [`machine`]).
//! - `mobilenet-abuse` (`src/bin/abuse.rs`): the hostile-client suite of issue 14 ([`abuse`]).
//! - `mobilenet-soak` (`src/bin/soak.rs`): minutes of open-loop load at a fraction of the measured capacity,
//!   watching memory drift, errors and the p99 trend ([`soak`]).
//!
//! What they share: [`server`] starts the release binary on free loopback ports (and restarts it when a
//! case killed it), [`load`] drives closed-loop load (the capacity pre-runs), [`openloop`] a constant
//! arrival rate, [`stats`] turns latencies into percentiles, [`procfs`] reads the server's memory from
//! `/proc`, [`probe`] is the one normal request whose answer and latency every case watches, [`stalls`]
//! tells the machine standing still from the server being slow, and [`loopback`] refuses any target that is
//! not this machine.
pub mod abuse;
pub mod bare;
pub mod load;
pub mod loopback;
pub mod machine;
pub mod memory;
pub mod openloop;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod server;
pub mod soak;
pub mod stalls;
pub mod stats;
