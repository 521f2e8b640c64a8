//! Access control of the TCP listener: TLS and mutual TLS
//! over loopback with certificates made here (rcgen), a token as the first
//! line (wrong, missing, right), plain text to a TLS port, and the warning
//! for an open non-loopback listener.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio_rustls::rustls;

use crate::util::*;

/// A self-signed certificate for `name` and its key, as DER and PEM.
fn cert(name: &str) -> Leaf {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    Leaf {
        der: ck.cert.der().clone(),
        key_der: ck.signing_key.serialize_der(),
        pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

/// A TLS client trusting `server` (self-signed for `localhost`),
/// presenting `client` if given.
fn tls_connect(
    addr: &str,
    server: &Leaf,
    client: Option<&Leaf>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    tls_client(addr, std::slice::from_ref(&server.der), "localhost", client)
}

/// Starts `emstream run --listen 127.0.0.1:0`, saving to `ck`, with
/// `extra` flags; returns the child, its stderr and the address.
fn listen(ck: &Path, extra: &[&str]) -> (Proc, StderrLines, String) {
    let mut args = saving(ck);
    args.extend_from_slice(extra);
    crate::util::listen(&args)
}

/// Reads what the server says before closing (its one-line reason).
fn reply<R: Read>(r: R) -> String {
    let mut line = String::new();
    let _ = BufReader::new(r).read_line(&mut line);
    line
}

#[test]
fn token_over_tls_admits_only_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let server = cert("localhost");
    let cert_path = write_file(&dir, "cert.pem", &server.pem);
    let key_path = write_file(&dir, "key.pem", &server.key_pem);
    let token_path = write_file(&dir, "token", "correct horse\n");
    let (mut child, err, addr) = listen(
        &ck,
        &[
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
            "--auth-token-file",
            &token_path,
        ],
    );

    // A wrong token: told so, closed, nothing learned.
    let mut wrong = tls_connect(&addr, &server, None);
    wrong.write_all(b"battery staple\n").unwrap();
    wrong.write_all(&text(&points(50, 1))).unwrap();
    wrong.flush().unwrap();
    assert_eq!(reply(&mut wrong), "emstream: refused: wrong token\n");

    // No token: the first line is a point.
    let mut none = tls_connect(&addr, &server, None);
    none.write_all(&text(&points(50, 2))).unwrap();
    none.flush().unwrap();
    assert_eq!(reply(&mut none), "emstream: refused: wrong token\n");

    // Plain text to the TLS port: the handshake fails, nothing learned.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    plain.write_all(b"correct horse\n").unwrap();
    plain.write_all(&text(&points(50, 3))).unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);

    // The right token, then points, over TLS.
    let mut good = tls_connect(&addr, &server, None);
    good.write_all(b"correct horse\n").unwrap();
    good.write_all(&text(&points(300, 4))).unwrap();
    good.flush().unwrap();
    wait_for_points(&ck, 300);
    good.conn.send_close_notify();
    let _ = good.flush();
    drop(good);

    let rest = sigterm_ok(&mut child, err);
    assert!(rest.contains("connections must pass: TLS, token"), "{rest}");
    assert!(rest.contains("connection refused: wrong token"), "{rest}");
    assert!(rest.contains("TLS handshake failed"), "{rest}");
    assert!(rest.contains("300 points used"), "{rest}");
    assert!(
        !rest.contains("correct horse"),
        "the token is logged: {rest}"
    );
    assert_eq!(inspect_json(&ck)["points_seen"], 300);
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let server = cert("localhost");
    let client = cert("sensor-1");
    let stranger = cert("sensor-2");
    let (mut child, err, addr) = listen(
        &ck,
        &[
            "--tls-cert",
            &write_file(&dir, "cert.pem", &server.pem),
            "--tls-key",
            &write_file(&dir, "key.pem", &server.key_pem),
            "--tls-client-ca",
            &write_file(&dir, "clients.pem", &client.pem),
        ],
    );

    for who in [None, Some(&stranger)] {
        let mut s = tls_connect(&addr, &server, who);
        // The client sees the refusal at its first read or write.
        let _ = s.write_all(&text(&points(50, 5)));
        let _ = s.flush();
        // Refused: the server ends the connection (a TLS alert, a reset
        // or a close) without a byte of data. A client wrongly let in would
        // see its read time out instead, which is not a refusal.
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink) {
            Ok(_) => assert!(sink.is_empty(), "data for a refused client"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the server kept a client without the right certificate: {e}"
            ),
        }
    }
    let mut good = tls_connect(&addr, &server, Some(&client));
    good.write_all(&text(&points(250, 6))).unwrap();
    good.flush().unwrap();
    wait_for_points(&ck, 250);
    drop(good);

    let rest = sigterm_ok(&mut child, err);
    assert!(rest.contains("connections must pass: TLS, client certificates"));
    assert_eq!(
        rest.matches("TLS handshake failed").count(),
        2,
        "two clients refused: {rest}"
    );
    assert_eq!(inspect_json(&ck)["points_seen"], 250);
}

#[test]
fn open_non_loopback_listener_warns_and_bad_tls_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = emstream()
        .args(["run", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut err = StderrLines::new(&mut child);
    err.wait_for("reachable from other hosts without TLS or a token");
    err.wait_for("listening on ");
    sigterm(&child);
    assert!(wait_exit(&mut child).success());

    // A key that is not one, and a certificate without its key.
    let not_pem = write_file(&dir, "junk.pem", "hello\n");
    let out = emstream()
        .args(["run", "--listen", "127.0.0.1:0", "--tls-cert", &not_pem])
        .args(["--tls-key", &not_pem])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no CERTIFICATE block"),
        "{}",
        stderr(&out)
    );
    let out = emstream()
        .args(["run", "--listen", "127.0.0.1:0", "--tls-cert", &not_pem])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("give both --tls-cert and --tls-key"));
}

#[test]
fn resetting_clients_do_not_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let token_path = write_file(&dir, "token", "t0k\n");
    let (mut child, err, addr) = listen(&ck, &["--auth-token-file", &token_path]);
    for _ in 0..60 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"half a li").unwrap();
        // Reset instead of a clean close.
        let _ = socket_linger_zero(&s);
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
    let rest = err.rest();
    let refused = rest.matches("connection refused").count();
    assert!(
        refused <= 5,
        "{refused} lines for 60 refused connections:\n{rest}"
    );
    assert!(
        rest.contains("more connection error(s) not shown"),
        "{rest}"
    );
}

/// SO_LINGER 0: closing the socket sends a reset.
fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Strangers that connect and never send the token hold an admission slot
/// (for at most the handshake timeout), never a data slot: a client with
/// the token is learned at once beside them, even with one data slot.
#[test]
fn silent_strangers_do_not_hold_the_data_slots() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let token_path = write_file(&dir, "token", "correct horse\n");
    let (mut child, err, addr) = listen(
        &ck,
        &["--auth-token-file", &token_path, "--max-connections", "1"],
    );
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let mut good = TcpStream::connect(&addr).unwrap();
    good.write_all(b"correct horse\n").unwrap();
    good.write_all(&text(&points(300, 4))).unwrap();
    drop(good);
    wait_for_points(&ck, 300);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "learned after {:?} beside 40 silent connections",
        started.elapsed()
    );
    drop(silent);
    let rest = sigterm_ok(&mut child, err);
    assert!(rest.contains("300 points used"), "{rest}");
}
