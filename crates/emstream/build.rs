//! Build script: `EMSTREAM_SKIP_BROKERS=1` at build time sets the
//! `emstream_skip_brokers` cfg, under which the integration tests that
//! start mosquitto or nats-server are marked ignored (listed as such by
//! `cargo test`) instead of failing for want of the binaries;
//! `EMSTREAM_SKIP_BROWSER=1` sets `emstream_skip_browser`, the same for the
//! test that opens the admin server's live page in headless Chromium.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(emstream_skip_brokers)");
    println!("cargo::rustc-check-cfg=cfg(emstream_skip_browser)");
    println!("cargo::rerun-if-env-changed=EMSTREAM_SKIP_BROKERS");
    println!("cargo::rerun-if-env-changed=EMSTREAM_SKIP_BROWSER");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("EMSTREAM_SKIP_BROKERS").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=emstream_skip_brokers");
    }
    if std::env::var("EMSTREAM_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=emstream_skip_browser");
    }
}
