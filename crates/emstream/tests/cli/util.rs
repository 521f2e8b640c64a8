//! Helpers: running the binary, making streams, reading checkpoints.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
#[cfg(feature = "tls")]
use tokio_rustls::rustls;

/// Small learner settings that make tests fast: 2 components, warm-up of
/// 200 points, batches of 50.
pub const SMALL: &[&str] = &[
    "-k",
    "2",
    "--warmup",
    "200",
    "--batch-size",
    "50",
    "--seed",
    "7",
];

/// Options under which the first fit takes a second or more in the debug
/// build (many seeds), so that a signal sent when the run says "fitting
/// the first model" lands in it: K = 3, a warm-up of 2,000 points,
/// batches of 100.
pub const LONG_FIRST_FIT: &[&str] = &[
    "-k",
    "3",
    "--warmup",
    "2000",
    "--batch-size",
    "100",
    "--init-seeds",
    "150",
    "--seed",
    "5",
];

/// How long a test waits for a child process before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A child process of a test, killed (SIGKILL) and reaped when dropped:
/// a test that fails or panics leaves no process running. Derefs to the
/// [`Child`].
#[derive(Debug)]
pub struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Like [`Child::wait_with_output`]: closes stdin, reads stdout and
    /// stderr to their ends and waits, still killing the child if dropped
    /// before it exits.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        drop(self.0.stdin.take());
        fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut all = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut all);
                }
                all
            })
        }
        let out = drain(self.0.stdout.take());
        let err = drain(self.0.stderr.take());
        let status = self.0.wait()?;
        Ok(Output {
            status,
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
        })
    }
}

/// [`Command::spawn`] that returns a [`Proc`].
pub trait SpawnGuarded {
    /// Starts the command as a [`Proc`].
    fn spawn_guarded(&mut self) -> std::io::Result<Proc>;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> std::io::Result<Proc> {
        self.spawn().map(Proc)
    }
}

/// The binary under test.
pub fn emstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emstream"))
}

/// `n` 2-D points from two well separated clusters, one CSV line each.
pub fn points(n: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 1.0).unwrap();
    (0..n)
        .map(|i| {
            let (cx, cy) = if i % 3 == 0 { (-5.0, 2.0) } else { (4.0, -1.0) };
            let x: f64 = cx + noise.sample(&mut rng);
            let y: f64 = cy + 0.5 * noise.sample(&mut rng);
            format!("{x:.6},{y:.6}")
        })
        .collect()
}

/// Lines joined with newlines (and a final one).
pub fn text(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

/// Runs `emstream ARGS` with `input` on stdin and waits for it.
pub fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = emstream()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The child may stop reading early (e.g. --on-error fail).
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child);
    writer.join().unwrap();
    out
}

/// Waits for a child with a deadline, collecting its output.
pub fn wait_output(child: Proc) -> Output {
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.expect("waiting for the child"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("emstream did not finish within {PATIENCE:?}");
        }
    }
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success, showing stderr otherwise.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}, stderr:\n{}",
        out.status,
        stderr(out)
    );
}

/// `emstream inspect PATH --json`, parsed.
pub fn inspect_json(path: &Path) -> serde_json::Value {
    let out = emstream()
        .args(["inspect", "--json"])
        .arg(path)
        .output()
        .expect("inspect runs");
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// [`inspect_json`] without the checkpoint's time stamps: equal for two
/// runs that learned the same.
pub fn inspect_json_unstamped(path: &Path) -> serde_json::Value {
    let mut json = inspect_json(path);
    for stamp in ["created", "updated", "created_unix_ms", "updated_unix_ms"] {
        json.as_object_mut()
            .expect("inspect --json prints an object")
            .remove(stamp);
    }
    json
}

/// The learner's serialised state in a checkpoint (everything the model
/// is, without counters of rejects, anomalies or timestamps).
pub fn learner_bytes(path: &Path) -> Vec<u8> {
    let mut ck = emstream::checkpoint::load(path).expect("checkpoint loads");
    ck.rejected = Default::default();
    ck.anomalies = 0;
    ck.created_unix_ms = 0;
    ck.updated_unix_ms = 0;
    emstream::checkpoint::to_bytes(&ck).expect("learner serialises")
}

/// A path in `dir`.
pub fn file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Sends SIGTERM to a child.
pub fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

/// Starts `cmd` (the binary with its arguments, say `emstream().args(..)`)
/// with `stdin`, stdout discarded and stderr piped (for [`StderrLines`]).
pub fn spawn_with(cmd: &mut Command, stdin: Stdio) -> Proc {
    cmd.stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("the binary starts")
}

/// The flags of a run that saves to `ck` every 50 ms with the [`SMALL`]
/// learner settings.
pub fn saving(ck: &Path) -> Vec<&str> {
    let mut args = vec![
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-interval",
        "0.05",
    ];
    args.extend_from_slice(SMALL);
    args
}

/// Starts `emstream run --listen 127.0.0.1:0 ARGS` and returns the child,
/// its stderr lines and the address it listens on.
pub fn listen(args: &[&str]) -> (Proc, StderrLines, String) {
    let mut all = vec!["run", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = spawn_with(emstream().args(&all), Stdio::null());
    let mut err = StderrLines::new(&mut child);
    let addr = last_word(&err.wait_for("listening on "));
    (child, err, addr)
}

/// Starts `emstream run --listen 127.0.0.1:0 --admin 127.0.0.1:0 ARGS`:
/// the child, its stderr lines, the listen and the admin addresses.
pub fn listen_with_admin(args: &[&str]) -> (Proc, StderrLines, String, String) {
    let mut all = vec!["run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = spawn_with(emstream().args(&all), Stdio::null());
    let mut err = StderrLines::new(&mut child);
    let admin = last_word(&err.wait_for("admin on "));
    let listen = last_word(&err.wait_for("listening on "));
    (child, err, listen, admin)
}

/// SIGTERM, then an exit status of 0 (else the test fails showing stderr);
/// returns the rest of stderr.
pub fn sigterm_ok(child: &mut Child, err: StderrLines) -> String {
    sigterm(child);
    let status = wait_exit(child);
    let rest = err.rest();
    assert!(status.success(), "exit {status:?}: {rest}");
    rest
}

/// Polls `probe` every 50 ms until it gives `Ok`; after [`PATIENCE`] fails
/// with `what` and the last `Err` (what was seen instead).
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: {seen}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a child's stderr on a thread, line by line.
pub struct StderrLines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StderrLines {
    /// Takes the child's stderr.
    pub fn new(child: &mut Child) -> Self {
        let err = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StderrLines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Everything until the child closes stderr.
    pub fn rest(mut self) -> String {
        while let Ok(line) = self.rx.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

/// Waits until the checkpoint at `path` holds `n` points (learned or
/// pending), as mid-stream checkpoints are written.
pub fn wait_for_points(path: &Path, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(ck) = emstream::checkpoint::load(path) {
            let have = ck.learner.counters().points_seen + ck.learner.pending_points() as u64;
            if have == n {
                return;
            }
            last = Some(have);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("checkpoint never held {n} points (last: {last:?})");
}

/// Waits for a child to exit, with a deadline.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("emstream did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The write end of a pipe whose read end is already closed, like the
/// stdout of `emstream ... | head -n 0` after `head` exited: every write to
/// it fails with EPIPE. (The reader is `true`, which exits without reading.)
pub fn closed_pipe() -> Stdio {
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("`true` starts");
    let write_end = reader.stdin.take().expect("stdin is piped");
    reader.wait().expect("`true` exits");
    Stdio::from(write_end)
}

/// The test-only fault injection that holds every fit at its start for
/// the milliseconds it is set to, or until a stop request.
pub const SLOW_FIT: &str = "EMSTREAM_FAULT_SLOW_FIT_MS";

/// Bytes written to a pipe that its reader has not read yet (FIONREAD,
/// which Linux answers on either end of a pipe): `pipe` is, say, a child's
/// stdin.
pub fn unread_in_pipe(pipe: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // at `n`; the descriptor is open for the borrow's length.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

/// The last word of a line (the address in `listening on ADDR`).
pub fn last_word(line: &str) -> String {
    line.rsplit(' ').next().unwrap().to_string()
}

/// A minimal HTTP/1.0 GET for the tests: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_full(addr, path);
    (status, body)
}

/// (status, headers, body).
pub fn http_get_full(addr: &str, path: &str) -> (u16, String, String) {
    http_get_headers(addr, path, "")
}

/// (status, headers, body) of a GET with `extra` request header lines
/// (each ending in `\r\n`).
pub fn http_get_headers(addr: &str, path: &str, extra: &str) -> (u16, String, String) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    http_request(s, addr, path, extra).expect("an HTTP response")
}

/// An HTTP/1.0 GET over `s` (plain or TLS): (status, headers, body), or
/// the error that ended it before any response.
pub fn http_request<S: Read + Write>(
    mut s: S,
    addr: &str,
    path: &str,
    extra: &str,
) -> std::io::Result<(u16, String, String)> {
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n")?;
    s.flush()?;
    let mut raw = Vec::new();
    // A server may close without a TLS close_notify after an HTTP/1.0
    // answer: what was read before counts.
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e);
        }
    }
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other(format!(
            "not an HTTP response: {raw:?}"
        )));
    };
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Ok((status, head.to_string(), body.to_string()))
}

#[cfg(feature = "tls")]
/// A certificate authority made for a test (rcgen, ring), and the
/// certificates it signs.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

#[cfg(feature = "tls")]
/// A certificate signed by a [`TestCa`], with its key.
pub struct Leaf {
    /// The certificate, DER.
    pub der: rustls::pki_types::CertificateDer<'static>,
    /// The key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: String,
    /// The key, PEM.
    pub key_pem: String,
}

#[cfg(feature = "tls")]
impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's certificate, DER.
    pub fn der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `names` (DNS names or IP addresses), usable by a
    /// server and a client.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `text` to `name` in `dir`; returns the path as a string.
pub fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = file(dir, name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[cfg(feature = "tls")]
/// A TLS client (ring) to `addr` that trusts `roots` and verifies the
/// server as `server_name`, presenting `client` if given.
pub fn tls_client(
    addr: &str,
    roots: &[rustls::pki_types::CertificateDer<'static>],
    server_name: &str,
    client: Option<&Leaf>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match client {
        None => b.with_no_client_auth(),
        Some(c) => b
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone())),
            )
            .unwrap(),
    };
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// `/metrics` of the admin server at `admin`, parsed by [`parse_metrics`],
/// once `ready` holds for it (else the test fails with `what`).
pub fn metrics_when(
    admin: &str,
    what: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    wait_until(what, || {
        let m = parse_metrics(&http_get(admin, "/metrics").1);
        if ready(&m) {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    })
}

/// `/metrics` parsed by the strict OpenMetrics parser of
/// [`crate::openmetrics`]: every sample as `name{label="value",...}`
/// (labels sorted) -> value. Fails the test, showing the text, when it is
/// not valid OpenMetrics.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    crate::openmetrics::parse(text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics: {e}\n{text}"))
}

/// The number in `text` right after the first `marker` (up to the next
/// space), as in `"... at most 14 batches ..."` after `"at most "`.
pub fn number_after<T: std::str::FromStr>(text: &str, marker: &str) -> Option<T> {
    text.split(marker)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
}
