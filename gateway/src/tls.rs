//! TLS with rustls (its default provider, aws-lc-rs, with post-quantum hybrid
//! key exchange): the proxy listener's certificate,
//! reloaded while the gateway runs, and the client side for `https://`
//! origins and `rediss://` Redis.
//!
//! * **Listener** ([`ServerTls`]): `--tls-cert` (a PEM chain, leaf first) and
//!   `--tls-key` (a PEM PKCS#8, PKCS#1 or SEC1 key), checked at start-up (a
//!   missing file, no PEM, or a key that does not match the certificate is
//!   one clear error). ALPN offers `h2`, then `http/1.1`. Both files are
//!   re-read on `SIGHUP` and when either one's modification time or size
//!   changes (polled every `--tls-reload-interval`); a new pair that does not
//!   load — half written, mismatched, unreadable — is logged and the current
//!   certificate kept, so a bad rotation never takes the listener down.
//!   Connections already open keep the certificate they were made with.
//! * **Clients** ([`client_config`]): the roots compiled into the binary
//!   (`webpki-roots`, Mozilla's list; no system store is read, so the image
//!   needs no CA bundle) plus, with `--origin-ca` / `--redis-ca`, the
//!   certificates of a private CA (PEM). The server name checked (and sent as
//!   SNI) is the URL's host.

use anyhow::{Context as _, anyhow, bail};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The one crypto provider every TLS context of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every PEM certificate in `path` (at least one). `flag` names the option
/// the path came from, for the error.
pub fn read_certificates(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{flag} {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// The certificate chain of `cert` with the private key of `key`, checked to
/// belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(cert, "--tls-cert")?;
    let pem_key =
        std::fs::read(key).with_context(|| format!("cannot read --tls-key {}", key.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem_key).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "--tls-key {}: no private key in it (expected PEM: PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ),
        e => anyhow!("--tls-key {}: not a PEM private key: {e}", key.display()),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| anyhow!("--tls-key {}: unusable private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        anyhow!(
            "--tls-key {} does not belong to the certificate in --tls-cert {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

/// The certificate handshakes are answered with; swapped on reload.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// When a file last changed, as far as polling can tell.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// TLS for the proxy listener (see the module docs).
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    slot: Arc<CertSlot>,
    acceptor: TlsAcceptor,
    seen: std::sync::Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Load `cert` and `key`; an error says which file is wrong and how.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let seen = (stamp(cert), stamp(key));
        let certified = load_certified_key(cert, key)?;
        let slot = Arc::new(CertSlot(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(slot.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(ServerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            slot,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            seen: std::sync::Mutex::new(seen),
        }))
    }

    /// The acceptor for the listener (always answers with the current certificate).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-read both files; on success the next handshakes use them, on
    /// failure the current certificate stays (and the error is returned).
    pub fn reload(&self) -> anyhow::Result<()> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            (stamp(&self.cert), stamp(&self.key));
        let certified = load_certified_key(&self.cert, &self.key)?;
        *self.slot.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// Whether either file changed since it was last read.
    fn changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    fn reload_logged(&self, why: &'static str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.cert.display(),
                trigger = why,
                "TLS certificate reloaded"
            ),
            Err(err) => tracing::warn!(
                error = %format!("{err:#}"),
                trigger = why,
                "TLS certificate not reloaded; keeping the current one"
            ),
        }
    }

    /// Reload on `SIGHUP` and whenever the files change (polled every
    /// `interval`), until the runtime ends.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; reloading on file changes only"))
                .ok();
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = hangup => this.reload_logged("SIGHUP"),
                    _ = tick.tick() => {
                        if this.changed() {
                            this.reload_logged("file changed");
                        }
                    }
                }
            }
        });
    }
}

/// A client TLS configuration: the built-in roots, plus the certificates in
/// `extra_ca` (the option named `flag`) when given.
pub fn client_config(extra_ca: Option<&Path>, flag: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for cert in read_certificates(path, flag)? {
            roots.add(cert).map_err(|e| {
                anyhow!(
                    "{flag} {}: not a usable CA certificate: {e}",
                    path.display()
                )
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
