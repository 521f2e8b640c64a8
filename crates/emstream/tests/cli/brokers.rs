//! Brokers for the MQTT and JetStream tests: each test starts its own
//! `mosquitto` or `nats-server` on a free loopback port with its own config
//! and store directory (independent of each other and of the machine's
//! shared services, and restartable mid-test).
//!
//! Without the binary a test fails, naming the package to install. With
//! `EMSTREAM_SKIP_BROKERS=1` in the environment of the build (`build.rs`
//! turns it into the `emstream_skip_brokers` cfg) every test that starts a
//! broker is marked ignored instead, so `cargo test` lists each one as
//! `ignored, EMSTREAM_SKIP_BROKERS=1: ...` and counts them in its summary.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds `binary` on the PATH or in /usr/sbin (where Debian puts both);
/// fails the test, naming the package to install, when it is missing.
pub fn find(binary: &str, test: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{test}: `{binary}` is not installed: install it (Debian: apt-get install {binary}; `.ci/run` does), or build the tests with EMSTREAM_SKIP_BROKERS=1 to mark the broker tests ignored"
            )
        })
}

/// A free loopback port (bound and released; the broker binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, mut child: Option<&mut Child>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            panic!("{what} exited at start: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port}");
}

/// A broker process, killed when dropped.
pub struct Broker {
    binary: PathBuf,
    args: Vec<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    what: &'static str,
}

impl Broker {
    fn start(binary: PathBuf, args: Vec<String>, port: u16, what: &'static str) -> Self {
        let mut b = Broker {
            binary,
            args,
            port,
            child: None,
            what,
        };
        b.restart();
        b
    }

    /// Starts the broker (again) on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.what));
        wait_listening(self.port, Some(&mut child), self.what);
        self.child = Some(child);
    }

    /// Kills the broker (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `nats-server` with JetStream storing in `dir`.
pub fn nats(dir: &Path, test: &str) -> Broker {
    let binary = find("nats-server", test);
    let port = free_port();
    let store = dir.join("jetstream");
    let args = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-js".into(),
        "-sd".into(),
        store.display().to_string(),
    ];
    Broker::start(binary, args, port, "nats-server")
}

/// PEM files of a TLS listener: its certificate, its key, and the CA its
/// clients' certificates must be signed by (none: clients are not asked).
pub struct TlsFiles<'a> {
    /// Server certificate.
    pub cert: &'a Path,
    /// Its key.
    pub key: &'a Path,
    /// CA of client certificates, for mutual TLS.
    pub client_ca: Option<&'a Path>,
}

/// A `nats-server` with JetStream storing in `dir` that speaks TLS only,
/// verifying client certificates when `tls.client_ca` is given.
pub fn nats_tls(dir: &Path, test: &str, tls: &TlsFiles) -> Broker {
    let binary = find("nats-server", test);
    let port = free_port();
    let verify = match tls.client_ca {
        Some(ca) => format!(
            "  ca_file: {:?}\n  verify: true\n",
            ca.display().to_string()
        ),
        None => String::new(),
    };
    let conf = format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n{verify}  timeout: 5\n}}\n",
        dir.join("jetstream").display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let path = dir.join("nats-tls.conf");
    std::fs::write(&path, conf).expect("the config is written");
    let args = vec!["-c".into(), path.display().to_string()];
    Broker::start(binary, args, port, "nats-server (TLS)")
}

/// A `nats-server` started with `config/nats-mqtt.conf` (the recipe of
/// docs/sources.md) on free ports and a store in `dir`: (broker, MQTT port).
pub fn nats_mqtt(dir: &Path, test: &str) -> (Broker, u16) {
    let binary = find("nats-server", test);
    let (port, mqtt) = (free_port(), free_port());
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/nats-mqtt.conf"),
    )
    .expect("config/nats-mqtt.conf is readable");
    let store = dir.join("store");
    let conf = shipped
        .replace("127.0.0.1:4223", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:1884", &format!("127.0.0.1:{mqtt}"))
        .replace("/var/lib/emstream-nats", &store.display().to_string());
    assert_ne!(
        conf, shipped,
        "the recipe's ports and store are where the test expects"
    );
    let path = dir.join("nats-mqtt.conf");
    std::fs::write(&path, conf).expect("the config is written");
    let args = vec!["-c".into(), path.display().to_string()];
    let broker = Broker::start(binary, args, port, "nats-server (MQTT)");
    wait_listening(mqtt, None, "the MQTT listener of nats-server");
    (broker, mqtt)
}

/// A `mosquitto` with its own config in `dir`.
pub fn mosquitto(dir: &Path, test: &str) -> Broker {
    let binary = find("mosquitto", test);
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .expect("mosquitto.conf is written");
    let args = vec!["-c".into(), conf.display().to_string()];
    Broker::start(binary, args, port, "mosquitto")
}

/// A `mosquitto` with its own config in `dir` that speaks only TLS
/// (`mqtts://`), with the certificate and key of `tls`.
pub fn mosquitto_tls(dir: &Path, test: &str, tls: &TlsFiles) -> Broker {
    let binary = find("mosquitto", test);
    let port = free_port();
    let conf = dir.join("mosquitto-tls.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\nallow_anonymous true\npersistence false\n",
            tls.cert.display(),
            tls.key.display()
        ),
    )
    .expect("mosquitto-tls.conf is written");
    let args = vec!["-c".into(), conf.display().to_string()];
    Broker::start(binary, args, port, "mosquitto (TLS)")
}

/// A current-thread runtime for the test's own broker clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A JetStream context on the broker at `port`.
pub async fn jetstream(port: u16) -> async_nats::jetstream::Context {
    jetstream_with(port, async_nats::ConnectOptions::new()).await
}

/// A JetStream context on the broker at `port`, connected with `options`
/// (TLS, say).
pub async fn jetstream_with(
    port: u16,
    options: async_nats::ConnectOptions,
) -> async_nats::jetstream::Context {
    let client = options
        .connect(format!("127.0.0.1:{port}"))
        .await
        .expect("the test connects to nats-server");
    async_nats::jetstream::new(client)
}

/// Creates stream `name` on subjects `NAME.>` (lower case), keeping at
/// most `max_msgs` messages (-1: all).
pub async fn create_stream(js: &async_nats::jetstream::Context, name: &str, max_msgs: i64) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        max_messages: max_msgs,
        ..Default::default()
    })
    .await
    .expect("the stream is created");
}

/// Publishes `body` to `subject` and waits for the stream's ack; returns
/// the sequence.
pub async fn publish(js: &async_nats::jetstream::Context, subject: &str, body: Vec<u8>) -> u64 {
    js.publish(subject.to_string(), body.into())
        .await
        .expect("publish is sent")
        .await
        .expect("publish is acknowledged")
        .sequence
}

#[test]
fn a_missing_broker_binary_fails_the_test_naming_the_package() {
    let failed = std::panic::catch_unwind(|| find("emstream-no-such-broker", "probe"))
        .expect_err("a missing broker fails the test");
    let message = failed.downcast_ref::<String>().expect("the panic says why");
    assert!(
        message.contains("apt-get install emstream-no-such-broker")
            && message.contains("EMSTREAM_SKIP_BROKERS=1"),
        "{message}"
    );
}
