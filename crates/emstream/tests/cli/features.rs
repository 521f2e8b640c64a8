//! A build without an optional feature refuses what needs it with a usage
//! error (exit 2) that names the feature; `cargo test --no-default-features`
//! runs these.

use crate::util::*;

/// `args` with a point on stdin exit 2 with a message naming `feature`.
fn refused(args: &[&str], feature: &str) {
    let out = run_stdin(args, b"1,2\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("the `{feature}` feature")),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg(not(feature = "mqtt"))]
fn mqtt_needs_its_feature() {
    refused(
        &["run", "--mqtt", "mqtt://127.0.0.1:1", "--topic", "t"],
        "mqtt",
    );
}

#[test]
#[cfg(not(feature = "nats"))]
fn nats_needs_its_feature() {
    refused(
        &[
            "run",
            "--nats",
            "nats://127.0.0.1:1",
            "--stream",
            "S",
            "--consumer",
            "c",
        ],
        "nats",
    );
    refused(&["inspect", "nats://127.0.0.1:1/g"], "nats");
    // The group members are not commands of such a build.
    let out = run_stdin(&["worker", "--help"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
#[cfg(not(feature = "admin"))]
fn admin_needs_its_feature() {
    refused(&["run", "--admin", "9090"], "admin");
}

#[test]
#[cfg(not(feature = "tls"))]
fn tls_needs_its_feature() {
    refused(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ],
        "tls",
    );
}
