//! Who may talk to a listening port: TLS (rustls with the ring provider
//! only), optional client certificates (mutual TLS), and a shared token
//! compared in constant time; plus bounded reads of small files (token,
//! certificates, keys, and any file that must not be a FIFO or a device).
//!
//! One [`Guard`] is loaded from [`AccessFiles`] when a run starts and wraps
//! every listener that takes it: the TCP ingest listener (each connection's
//! first line must be the token) and the admin HTTP server, which is to
//! take its connections from a [`GuardedListener`] (TLS handshakes run
//! concurrently, off its accept loop) and check the token as an
//! `Authorization: Bearer` header with [`Guard::check_bearer`]. A guard does no
//! I/O of its own after loading: [`Guard::accept`] runs the TLS handshake
//! under [`HANDSHAKE_TIMEOUT`], or passes a plain stream through.
//!
//! The token is never logged: errors name the token file, not its contents,
//! and only SHA-256 hashes of the token and of what a client presents are
//! compared, so the comparison takes the same time whatever their lengths.

mod listener;

pub use listener::{Admitted, GuardedListener, MAX_PENDING_HANDSHAKES};

/// Bounded reads of regular files only, shared with the checkpoint loader.
pub use emstream_core::regular_file::{open_regular, read_regular};

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
#[cfg(feature = "tls")]
use tokio_rustls::rustls::{self, pki_types};
#[cfg(feature = "tls")]
use tokio_rustls::server::TlsStream;
#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;
#[cfg(feature = "tls")]
use tokio_util::either::Either;

/// How long a client has to complete the TLS handshake (and, with a token,
/// to send its first line) before the connection is closed: long enough
/// for a slow device on a poor link, short enough that idle sockets opened
/// by scanners do not hold connection permits.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest token file, certificate chain, key or client CA bundle read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Largest token accepted (after trimming the line end).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The files that configure access to a listener; all optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessFiles {
    /// PEM certificate chain served by TLS (leaf first).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs whose client certificates are accepted; every
    /// client must present one (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// File whose first line is the shared token.
    pub auth_token_file: Option<PathBuf>,
}

impl AccessFiles {
    /// Warnings about secrets other users can read: a token file or TLS key
    /// with group or world permissions (the run goes on; the operator is
    /// told what to change).
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        for (what, path) in [
            ("token file", &self.auth_token_file),
            ("TLS key", &self.tls_key),
        ] {
            let Some(path) = path else { continue };
            if let Ok(m) = std::fs::metadata(path) {
                let mode = m.permissions().mode();
                if mode & 0o077 != 0 {
                    out.push(format!(
                        "warning: {what} {} can be read by other users (mode {:o}): chmod 600 it",
                        path.display(),
                        mode & 0o777
                    ));
                }
            }
        }
        out
    }
}

/// Why access control could not be set up; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Only one of the certificate and the key was given.
    #[error("tls_cert and tls_key go together: give both --tls-cert and --tls-key, or neither")]
    CertWithoutKey,
    /// A client CA was given without a server certificate.
    #[error("tls_client_ca needs TLS: give --tls-cert and --tls-key as well")]
    ClientCaWithoutTls,
    /// A file could not be read, or is not a regular file.
    #[error("{what} {path}: {reason}", path = path.display())]
    File {
        /// Which file ("TLS certificate", "token file", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds no usable PEM item.
    #[error("{what} {path}: {reason}", path = path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
    /// rustls refused the certificate, key or CA bundle.
    #[cfg(feature = "tls")]
    #[error("TLS setup failed: {0} (check that --tls-key is the key of the first certificate in --tls-cert)")]
    Tls(#[from] rustls::Error),
    /// The client CA bundle cannot verify clients.
    #[error("--tls-client-ca {path}: {reason}", path = path.display())]
    ClientCa {
        /// The bundle.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// TLS was asked for in a build without the `tls` feature.
    #[error("--tls-cert needs the `tls` feature, which this build of emstream was compiled without: rebuild with `--features tls` (it is on by default)")]
    TlsOff,
    /// The token file is empty or its first line is too long.
    #[error("token file {path}: {reason}", path = path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the token itself).
        reason: String,
    },
}

/// A shared secret, kept only as its SHA-256 hash.
#[derive(Clone)]
pub struct Token {
    hash: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Token {
    /// The token `secret` (already trimmed).
    pub fn new(secret: &[u8]) -> Self {
        Token {
            hash: sha256(secret),
        }
    }

    /// The first line of the regular file `path` (its line end and
    /// surrounding spaces trimmed).
    ///
    /// # Errors
    ///
    /// [`SecurityError::File`] when the file cannot be read or is not a
    /// regular file; [`SecurityError::Token`] when the first line is empty
    /// or longer than [`MAX_TOKEN_BYTES`].
    pub fn from_file(path: &Path) -> Result<Self, SecurityError> {
        let bytes = read_regular(path, MAX_PEM_BYTES).map_err(|e| SecurityError::File {
            what: "token file",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let secret = line.trim_ascii();
        let bad = |reason: String| SecurityError::Token {
            path: path.to_path_buf(),
            reason,
        };
        if secret.is_empty() {
            return Err(bad("the first line is empty: write the token on it".into()));
        }
        if secret.len() > MAX_TOKEN_BYTES {
            return Err(bad(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        Ok(Token::new(secret))
    }

    /// Whether `presented` is the token: their SHA-256 hashes compared in
    /// constant time (so neither the token's length nor the position of the
    /// first differing byte shows in the time taken). Surrounding spaces and
    /// a line end are trimmed first.
    pub fn matches(&self, presented: &[u8]) -> bool {
        sha256(presented.trim_ascii()).ct_eq(&self.hash).into()
    }
}

/// A connection through a [`Guard`]: TLS or plain.
#[cfg(feature = "tls")]
pub type GuardedStream<S> = Either<TlsStream<S>, S>;
/// A connection through a [`Guard`]: plain (a build without TLS).
#[cfg(not(feature = "tls"))]
pub type GuardedStream<S> = S;

/// The TLS configuration a [`Guard`] is built from
/// ([`Guard::from_parts`]); in a build without the `tls` feature a type
/// with no values, so the guard has no TLS.
#[cfg(feature = "tls")]
pub type ServerTls = Arc<rustls::ServerConfig>;
/// The TLS configuration a [`Guard`] is built from
/// ([`Guard::from_parts`]); in a build without the `tls` feature a type
/// with no values, so the guard has no TLS.
#[cfg(not(feature = "tls"))]
pub type ServerTls = std::convert::Infallible;

/// Why a connection was refused before any of its data was used; the text
/// is what the client is told (one line) and what is counted and logged.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// The TLS handshake failed (plain text to a TLS port, an unknown
    /// client certificate, a protocol error).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The handshake or the token line took longer than
    /// [`HANDSHAKE_TIMEOUT`].
    #[error("timed out after {secs}s waiting for the {1}", secs = .0.as_secs())]
    Timeout(Duration, &'static str),
    /// The first line is not the token.
    #[error("wrong token")]
    WrongToken,
    /// The connection closed or sent more than a token's worth of bytes
    /// before the first line ended.
    #[error("no token: the first line must be the token")]
    NoToken,
    /// The bearer token is missing from the request.
    #[error("missing Authorization: Bearer token")]
    MissingBearer,
    /// As many handshakes as allowed are in progress already.
    #[error("{0} handshakes in progress already")]
    Busy(usize),
}

/// Access control of one listener: TLS and/or a token, or neither.
#[derive(Clone, Default)]
pub struct Guard {
    #[cfg(feature = "tls")]
    tls: Option<TlsAcceptor>,
    mutual: bool,
    token: Option<Token>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("tls", &self.tls())
            .field("mutual", &self.mutual)
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Guard {
    /// Loads the certificates, key, client CAs and token named in `files`.
    ///
    /// # Errors
    ///
    /// A [`SecurityError`] naming the file and what to change.
    pub fn load(files: &AccessFiles) -> Result<Self, SecurityError> {
        let tls: Option<ServerTls> = match (&files.tls_cert, &files.tls_key) {
            #[cfg(feature = "tls")]
            (Some(cert), Some(key)) => Some(Arc::new(server_config(
                cert,
                key,
                files.tls_client_ca.as_deref(),
            )?)),
            #[cfg(not(feature = "tls"))]
            (Some(_), Some(_)) => return Err(SecurityError::TlsOff),
            (None, None) if files.tls_client_ca.is_some() => {
                return Err(SecurityError::ClientCaWithoutTls)
            }
            (None, None) => None,
            _ => return Err(SecurityError::CertWithoutKey),
        };
        let token = files
            .auth_token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()?;
        Ok(Guard {
            mutual: files.tls_client_ca.is_some(),
            ..Guard::from_parts(tls, token)
        })
    }

    /// A guard with the given parts (for tests and embedders that build
    /// their own rustls configuration).
    pub fn from_parts(tls: Option<ServerTls>, token: Option<Token>) -> Self {
        #[cfg(not(feature = "tls"))]
        if let Some(never) = tls {
            match never {}
        }
        Guard {
            #[cfg(feature = "tls")]
            tls: tls.map(TlsAcceptor::from),
            mutual: false,
            token,
        }
    }

    /// Whether connections are encrypted.
    pub fn tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// The token connections must present, if any.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// What this guard does, for the start-up line, e.g. `TLS, client
    /// certificates, token`; `None` when it lets everyone in.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.tls() {
            parts.push("TLS");
        }
        if self.mutual {
            parts.push("client certificates");
        }
        if self.token.is_some() {
            parts.push("token");
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// The warning to log when binding `addr`: anyone who can reach a
    /// non-loopback address can use a listener without TLS or a token.
    pub fn exposure_warning(&self, addr: SocketAddr, what: &str) -> Option<String> {
        if addr.ip().is_loopback() || self.tls() || self.token.is_some() {
            return None;
        }
        Some(format!(
            "warning: {what} on {addr} is reachable from other hosts without TLS or a token: \
             anyone who can connect is trusted; add --tls-cert/--tls-key and/or --auth-token-file, \
             or listen on 127.0.0.1"
        ))
    }

    /// Wraps an accepted stream: the TLS handshake (under
    /// [`HANDSHAKE_TIMEOUT`]) when TLS is on, else the stream as it is.
    /// The token, if any, is checked by the protocol on top
    /// ([`Guard::check_first_line`] or [`Guard::check_bearer`]).
    ///
    /// # Errors
    ///
    /// [`Denied::Handshake`] or [`Denied::Timeout`].
    pub async fn accept<S>(&self, stream: S) -> Result<GuardedStream<S>, Denied>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        #[cfg(not(feature = "tls"))]
        return Ok(stream);
        #[cfg(feature = "tls")]
        {
            let Some(acceptor) = &self.tls else {
                return Ok(Either::Right(stream));
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => Ok(Either::Left(s)),
                Ok(Err(e)) => Err(Denied::Handshake(e)),
                Err(_) => Err(Denied::Timeout(HANDSHAKE_TIMEOUT, "TLS handshake")),
            }
        }
    }

    /// Checks a line protocol's first line: `None` when no token is
    /// required; else whether `line` (without its line end) is the token.
    ///
    /// # Errors
    ///
    /// [`Denied::WrongToken`].
    pub fn check_first_line(&self, line: &[u8]) -> Result<(), Denied> {
        match &self.token {
            Some(t) if !t.matches(line) => Err(Denied::WrongToken),
            _ => Ok(()),
        }
    }

    /// Checks an HTTP `Authorization` header value (`Bearer TOKEN`) when a
    /// token is required; a guard without a token lets every request in.
    ///
    /// # Errors
    ///
    /// [`Denied::MissingBearer`] without a bearer token,
    /// [`Denied::WrongToken`] with another one.
    pub fn check_bearer(&self, authorization: Option<&str>) -> Result<(), Denied> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })
            .ok_or(Denied::MissingBearer)?;
        if token.matches(presented.as_bytes()) {
            Ok(())
        } else {
            Err(Denied::WrongToken)
        }
    }
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`].
#[cfg(feature = "tls")]
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    read_regular(path, MAX_PEM_BYTES).map_err(|e| SecurityError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every certificate of a PEM file; at least one.
#[cfg(feature = "tls")]
fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<pki_types::CertificateDer<'static>>, SecurityError> {
    use pki_types::pem::PemObject;
    let bytes = read_pem(what, path)?;
    let certs = pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::Pem {
            what,
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::Pem {
            what,
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block found: give a PEM certificate file".into(),
        });
    }
    Ok(certs)
}

/// The provider: ring only (two providers in one binary make rustls panic
/// at the first handshake, so none is installed process-wide).
#[cfg(feature = "tls")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration of a certificate chain, its key and,
/// for mutual TLS, the client CAs.
#[cfg(feature = "tls")]
fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, SecurityError> {
    use pki_types::pem::PemObject;
    let chain = read_certs("TLS certificate", cert)?;
    let key_bytes = read_pem("TLS key", key)?;
    let key_der =
        pki_types::PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| SecurityError::Pem {
            what: "TLS key",
            path: key.to_path_buf(),
            reason: format!("no usable private key ({e}): give a PEM PKCS#8, PKCS#1 or SEC1 key"),
        })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("client CA bundle", ca)? {
                roots.add(c).map_err(|e| SecurityError::ClientCa {
                    path: ca.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| SecurityError::ClientCa {
                path: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(chain, key_der)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself_trimmed() {
        let t = Token::new(b"s3cret");
        assert!(t.matches(b"s3cret"));
        assert!(t.matches(b"s3cret\r\n"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret2"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn bearer_header_is_checked() {
        let g = Guard::from_parts(None, Some(Token::new(b"abc")));
        assert!(g.check_bearer(Some("Bearer abc")).is_ok());
        assert!(g.check_bearer(Some("bearer abc")).is_ok());
        assert!(matches!(
            g.check_bearer(Some("Bearer abd")),
            Err(Denied::WrongToken)
        ));
        assert!(matches!(
            g.check_bearer(Some("Basic abc")),
            Err(Denied::MissingBearer)
        ));
        assert!(matches!(g.check_bearer(None), Err(Denied::MissingBearer)));
        assert!(Guard::default().check_bearer(None).is_ok());
    }

    #[test]
    fn token_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  tok \nignored\n").unwrap();
        let t = Token::from_file(&p).unwrap();
        assert!(t.matches(b"tok"));
        std::fs::write(&p, "\n").unwrap();
        let e = Token::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("first line is empty"), "{e}");
        let e = Token::from_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn readable_secrets_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "tok\n").unwrap();
        let files = AccessFiles {
            auth_token_file: Some(p.clone()),
            ..AccessFiles::default()
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = files.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("chmod 600"), "{w:?}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(files.warnings().is_empty());
    }

    #[test]
    fn half_configured_tls_is_refused() {
        let files = AccessFiles {
            tls_cert: Some("c.pem".into()),
            ..AccessFiles::default()
        };
        assert!(matches!(
            Guard::load(&files),
            Err(SecurityError::CertWithoutKey)
        ));
        let files = AccessFiles {
            tls_client_ca: Some("ca.pem".into()),
            ..AccessFiles::default()
        };
        assert!(matches!(
            Guard::load(&files),
            Err(SecurityError::ClientCaWithoutTls)
        ));
    }

    #[test]
    fn exposure_warning_only_for_open_non_loopback() {
        let open = Guard::default();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(open.exposure_warning(any, "listener").is_some());
        assert!(open.exposure_warning(lo, "listener").is_none());
        let tok = Guard::from_parts(None, Some(Token::new(b"x")));
        assert!(tok.exposure_warning(any, "listener").is_none());
    }
}
