//! Integration tests of the `emstream` binary, as one test binary: real
//! processes, temporary directories, real sockets on 127.0.0.1 port 0.
//! Tests of a cargo feature (`mqtt`, `nats`, `admin`, `tls`, `png`) are
//! left out of a build without it.

#[cfg(all(feature = "tls", feature = "admin"))]
mod access;
mod alerts;
mod bad_input;
#[cfg(all(feature = "mqtt", feature = "nats", feature = "tls"))]
mod brokers;
mod checkpoint;
mod choose_k;
mod config;
mod crash;
#[cfg(all(feature = "admin", feature = "tls"))]
mod daemon;
// The recipes are written for the default build.
#[cfg(all(
    feature = "mqtt",
    feature = "nats",
    feature = "admin",
    feature = "tls",
    feature = "png"
))]
mod docs;
mod drain;
#[cfg(not(all(feature = "mqtt", feature = "nats", feature = "admin", feature = "tls")))]
mod features;
mod files;
#[cfg(all(feature = "mqtt", feature = "nats", feature = "tls"))]
mod group;
mod hostile;
#[cfg(feature = "admin")]
mod live;
#[cfg(all(feature = "mqtt", feature = "nats", feature = "tls"))]
mod mqtt;
#[cfg(all(feature = "mqtt", feature = "nats", feature = "tls", feature = "admin"))]
mod nats;
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
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
// Helpers of the tests above that a build without every feature leaves out
// are unused there.
#[cfg_attr(
    not(all(
        feature = "mqtt",
        feature = "nats",
        feature = "admin",
        feature = "tls",
        feature = "png"
    )),
    allow(dead_code, unused_imports)
)]
mod util;
