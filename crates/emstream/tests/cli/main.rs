//! Integration tests of the `emstream` binary, as one test binary: real
//! processes, temporary directories, real sockets on 127.0.0.1 port 0.

mod access;
mod bad_input;
mod brokers;
mod checkpoint;
mod choose_k;
mod config;
mod crash;
mod daemon;
mod docs;
mod drain;
mod files;
mod group;
mod hostile;
mod mqtt;
mod nats;
mod openmetrics;
mod phases;
mod pipe;
mod realdata;
mod report;
mod resolution;
mod scorekeep;
mod signals;
mod tcp;
mod threads;
mod util;
