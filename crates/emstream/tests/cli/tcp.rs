//! TCP: connections on 127.0.0.1 port 0, then SIGTERM.

use std::io::Write;
use std::net::TcpStream;

use crate::util::*;

#[test]
fn two_connections_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let (mut child, err, addr) = listen(&saving(&ck));

    let mut a = TcpStream::connect(&addr).unwrap();
    let mut b = TcpStream::connect(&addr).unwrap();
    a.write_all(&text(&points(300, 60))).unwrap();
    // One connection sends a bad record too; it is counted, not fatal.
    let pb = points(250, 61);
    b.write_all(&text(&pb[..100])).unwrap();
    b.write_all(b"1,nope\n").unwrap();
    b.write_all(&text(&pb[100..])).unwrap();
    drop(a);
    // b stays open: the signal must end it.
    wait_for_points(&ck, 550);
    let rest = sigterm_ok(&mut child, err);
    assert!(
        rest.contains("550 points used, 1 records rejected"),
        "{rest}"
    );
    assert!(rest.contains("line 101"), "{rest}");
    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 550);
    assert_eq!(j["records_rejected"], 1);
    drop(b);
}
