//! A TCP listener whose connections come out of a [`Guard`]'s TLS
//! handshake, for a server that takes a ready stream per connection (the
//! admin HTTP server: an `axum::serve::Listener` implementation is a loop
//! over [`GuardedListener::accept`]).
//!
//! Handshakes run concurrently on tasks of their own (at most
//! [`MAX_PENDING_HANDSHAKES`] at once), so one slow or silent client holds
//! only its own task, for at most [`HANDSHAKE_TIMEOUT`], never the accept
//! loop, nor the clients after it: a connection that arrives while the
//! handshakes are all taken is closed at once rather than left waiting in
//! the backlog behind silent ones. Refused connections are handed to a
//! callback (to count and log them); they never reach the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

#[cfg(doc)]
use super::HANDSHAKE_TIMEOUT;
use super::{Denied, Guard, GuardedStream};

/// Handshakes in progress at once (a task and a socket each); a connection
/// beyond them is closed as it arrives.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// A connection that passed the guard's handshake, and its peer.
pub type Admitted = (GuardedStream<TcpStream>, SocketAddr);

/// Accepts TCP connections and hands out those that passed the TLS
/// handshake (all of them when the guard has no TLS). Dropping it stops
/// accepting.
#[derive(Debug)]
pub struct GuardedListener {
    local: SocketAddr,
    ready: mpsc::Receiver<Admitted>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for GuardedListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl GuardedListener {
    /// Starts accepting on `listener` (on the current tokio runtime);
    /// `denied` is called for every connection refused by the handshake.
    pub fn new(
        listener: TcpListener,
        guard: Arc<Guard>,
        denied: impl Fn(SocketAddr, &Denied) + Send + Sync + 'static,
    ) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let denied = Arc::new(denied);
        let accept_task = tokio::spawn(async move {
            let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors, typically: back off.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    drop(stream);
                    denied(peer, &Denied::Busy(MAX_PENDING_HANDSHAKES));
                    continue;
                };
                let (guard, tx, denied) = (guard.clone(), tx.clone(), denied.clone());
                tokio::spawn(async move {
                    match guard.accept(stream).await {
                        Ok(io) => {
                            let _ = tx.send((io, peer)).await;
                        }
                        Err(why) => denied(peer, &why),
                    }
                    drop(permit);
                });
            }
        });
        GuardedListener {
            local,
            ready,
            accept_task,
        }
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection that passed the handshake; `None` once the
    /// listener has stopped.
    pub async fn accept(&mut self) -> Option<Admitted> {
        self.ready.recv().await
    }
}

// The handshake is TLS's; without TLS a guard passes streams through.
#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types};

    use super::*;
    use crate::security::AccessFiles;

    #[tokio::test]
    async fn tls_clients_come_out_and_plain_ones_are_refused() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let guard = Guard::load(&AccessFiles {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..AccessFiles::default()
        })
        .unwrap();
        let refused = Arc::new(AtomicU64::new(0));
        let r = refused.clone();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = GuardedListener::new(tcp, Arc::new(guard), move |_, _| {
            r.fetch_add(1, Ordering::Relaxed);
        });
        let addr = listener.local_addr();

        // Plain text first: refused, never handed out.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut sink = Vec::new();
        let _ = plain.read_to_end(&mut sink).await;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"hello\n").await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let (mut io, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello\n");
        client.await.unwrap();
        assert_eq!(refused.load(Ordering::Relaxed), 1);
    }
}
