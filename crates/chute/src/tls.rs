//! TLS for deployments without a proxy in front (`tls_cert`, `tls_key`): rustls with
//! aws-lc-rs (post-quantum hybrid key exchange first), ALPN offering HTTP/2 and HTTP/1.1, and the certificate and key re-read from
//! their PEM files on SIGHUP or when either file changes (checked every 2 s), so that a
//! renewed certificate takes effect without a restart or a dropped connection. A reload that
//! fails (a half-written file, a key that does not match) keeps the certificate in use and
//! says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::Settings;

/// How often the files' modification times are compared.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The server's TLS: the acceptor, and the certificate it presents (swapped on reload).
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert.cert)
            .finish()
    }
}

#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reads a certificate chain and its private key from PEM files.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no certificate in it", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("tls_key does not belong to tls_cert: {e}"))?;
    Ok(certified)
}

impl Tls {
    /// The TLS of the settings, when `tls_cert` and `tls_key` are set (both or neither).
    pub fn from_settings(s: &Settings) -> Result<Option<Self>, String> {
        match (
            s.tls_cert.as_os_str().is_empty(),
            s.tls_key.as_os_str().is_empty(),
        ) {
            (true, true) => Ok(None),
            (false, false) => Self::new(&s.tls_cert, &s.tls_key).map(Some),
            _ => Err("set both tls_cert and tls_key, or neither".into()),
        }
    }

    pub fn new(cert: &Path, key: &Path) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = (modified(cert), modified(key));
        let first = load(cert, key, &provider)?;
        let resolver = Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(first)),
            loaded: Mutex::new(stamps),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert: resolver,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again when `force` or when either changed since the last load.
    /// Ok(true) when a new certificate is in use.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let r = &self.cert;
        let stamps = (modified(&r.cert), modified(&r.key));
        {
            let loaded = r.loaded.lock().map_err(|_| "tls state poisoned")?;
            if !force && *loaded == stamps {
                return Ok(false);
            }
        }
        let fresh = load(&r.cert, &r.key, &r.provider);
        // Tried once per change: a broken file is not read again until it changes again.
        if let Ok(mut loaded) = r.loaded.lock() {
            *loaded = stamps;
        }
        let fresh = fresh?;
        let mut current = r.current.write().map_err(|_| "tls state poisoned")?;
        *current = Arc::new(fresh);
        Ok(true)
    }

    /// Reloads on SIGHUP and when the files change, until the task is aborted.
    pub fn spawn_watcher(&self) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let forced = match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = h.recv() => true,
                        () = tokio::time::sleep(WATCH_EVERY) => false,
                    },
                    None => {
                        tokio::time::sleep(WATCH_EVERY).await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tokio::time::sleep(WATCH_EVERY).await;
                    false
                };
                match tls.reload(forced) {
                    Ok(true) => {
                        tracing::info!(cert = %tls.cert.cert.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; the one in use stays")
                    }
                }
            }
        })
    }
}
