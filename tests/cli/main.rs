//! Integration tests of the `emstream` binary, as one test binary: real
//! processes, temporary directories, real sockets on 127.0.0.1 port 0.

mod bad_input;
mod brokers;
mod checkpoint;
mod config;
mod daemon;
mod mqtt;
mod nats;
mod pipe;
mod report;
mod signals;
mod tcp;
mod util;
