//! Connections and time are bounded: what a client can hold open, for how long, and how many request bytes
//! the process buffers at once (docs/limits.md gives the defaults and where they come from).
//!
//! - [`accept`]: the connection cap (a slot taken before `accept`), TCP_NODELAY and TCP keepalive, for both
//!   listeners.
//! - [`http1`]: the HTTP/1.1 accept loop on hyper, with [`phase`]'s header read and keep-alive timers and
//!   [`linger`]'s lingering close.
//! - [`grpc`]: the connections tonic serves, with a timer on the HTTP/2 preface; tonic applies the HTTP/2
//!   limits (streams per connection, pings) configured in `lib.rs`.
//! - [`body`]: the tower layer both transports use for request-body byte admission and the body read
//!   timeout.
pub mod accept;
pub mod body;
pub mod grpc;
pub mod http1;
pub mod linger;
pub mod phase;
