//! Whom outbound TLS trusts and what it presents, as the platform has it:
//!
//! - the system store, honouring `SSL_CERT_FILE` and `SSL_CERT_DIR` as
//!   OpenSSL and Python do, with webpki's roots where the system has none
//!   ([`PlatformRoots`], read once at start);
//! - the server-wide `--ca-file` (env `FLYTE_CONNECT_CA_FILE`);
//! - per plugin, each `[[http.tls]]` entry of its manifest: for the hosts it
//!   names (all, without `hosts`), more CA roots (`ca_file`) and a client
//!   certificate and key for mutual TLS (`client_cert_file`,
//!   `client_key_file`).
//!
//! Files are read at each load, and a change to one reloads the plugin.
//! [`describe_tls_error`] turns a failed handshake into the message a call
//! fails with: the host and the reason, in words.

use std::{path::Path, path::PathBuf, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, ConfigBuilder, RootCertStore, client::WantsClientCert,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;

use crate::runtime::capabilities::{GrantError, LoadScope, egress::HostRule};

/// Protocols offered by ALPN, HTTP/2 first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The CA roots every plugin trusts: the system's, read once at start.
#[derive(Clone)]
pub(in crate::runtime) struct PlatformRoots {
    store: Arc<RootCertStore>,
}

impl PlatformRoots {
    /// The system store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the system
    /// bundle); webpki's roots when it holds none.
    pub(in crate::runtime) fn load() -> Self {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::warn!("reading the system's CA certificates: {err}");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!("{ignored} of the system's CA certificates could not be used");
        }
        if added == 0 {
            tracing::warn!(
                "no CA certificates in the system store (SSL_CERT_FILE, SSL_CERT_DIR or the system \
                 bundle): outbound TLS trusts the webpki roots"
            );
            return Self::webpki();
        }
        tracing::debug!(
            roots = added,
            "outbound TLS trusts the system's CA certificates"
        );
        Self {
            store: Arc::new(store),
        }
    }

    /// The webpki roots (Mozilla's), alone.
    pub(in crate::runtime) fn webpki() -> Self {
        let mut store = RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self {
            store: Arc::new(store),
        }
    }
}

/// One `[[http.tls]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    #[serde(default)]
    hosts: Vec<String>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
}

impl TlsSection {
    /// The rules and configuration of this entry, named `key`, trusting
    /// `base` and its own `ca_file`.
    fn entry(
        &self,
        key: &str,
        base: &RootCertStore,
        load: &mut LoadScope<'_>,
    ) -> Result<(Vec<HostRule>, Arc<ClientConfig>), GrantError> {
        let rules = self
            .hosts
            .iter()
            .map(|host| {
                HostRule::parse(host)
                    .map_err(|err| GrantError::invalid(format!("{key}.hosts"), err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut roots = base.clone();
        if let Some(path) = &self.ca_file {
            let shown = format!("{key}.ca_file");
            let pem = load.read_file(&shown, path)?;
            add_roots(&mut roots, &shown, path, &pem)?;
        }
        let builder = trusting(roots).map_err(|err| GrantError::invalid(key, err.to_string()))?;
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key_file)) => {
                let shown = format!("{key}.client_cert_file");
                let pem = load.read_file(&shown, cert)?;
                let chain = certificates(&shown, cert, &pem)?;
                let shown = format!("{key}.client_key_file");
                let pem = load.read_file(&shown, key_file)?;
                let private_key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
                    GrantError::invalid(
                        &shown,
                        format!("no private key in {}: {err}", key_file.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|err| {
                        GrantError::invalid(key, format!("the client certificate and key: {err}"))
                    })?
            }
            _ => {
                return Err(GrantError::invalid(
                    key,
                    "client_cert_file and client_key_file go together",
                ));
            }
        };
        Ok((rules, with_alpn(config)))
    }
}

/// The TLS configurations of one plugin's connections.
pub(super) struct TlsProfile {
    /// `[[http.tls]]` entries in manifest order: the first whose rules allow
    /// a host is its configuration.
    entries: Vec<(Vec<HostRule>, Arc<ClientConfig>)>,
    /// Hosts no entry names.
    default: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProfile")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl TlsProfile {
    /// The platform's roots and `ca_file`'s, with `sections` for the hosts
    /// they name; files are read through `load`.
    pub(super) fn new(
        platform: &PlatformRoots,
        ca_file: Option<&Path>,
        sections: &[TlsSection],
        load: &mut LoadScope<'_>,
    ) -> Result<Self, GrantError> {
        let mut base = (*platform.store).clone();
        if let Some(path) = ca_file {
            let pem = load.read_operator_file("--ca-file", path)?;
            add_roots(&mut base, "--ca-file", path, &pem)?;
        }
        let entries = sections
            .iter()
            .enumerate()
            .map(|(index, section)| section.entry(&format!("http.tls[{index}]"), &base, load))
            .collect::<Result<_, _>>()?;
        let default = trusting(base)
            .map_err(|err| GrantError::invalid("TLS", err.to_string()))?
            .with_no_client_auth();
        Ok(Self {
            entries,
            default: with_alpn(default),
        })
    }

    /// The platform's roots and those of `ca_file` (named by manifest key
    /// `key`, read through `load`), for every host.
    pub(super) fn with_ca_file(
        platform: &PlatformRoots,
        key: &str,
        ca_file: Option<&Path>,
        load: &mut LoadScope<'_>,
    ) -> Result<Self, GrantError> {
        let mut base = (*platform.store).clone();
        if let Some(path) = ca_file {
            let pem = load.read_file(key, path)?;
            add_roots(&mut base, key, path, &pem)?;
        }
        let default = trusting(base)
            .map_err(|err| GrantError::invalid("TLS", err.to_string()))?
            .with_no_client_auth();
        Ok(Self {
            entries: Vec::new(),
            default: with_alpn(default),
        })
    }

    /// Whether `path` holds CA certificates `platform`'s roots can take:
    /// `--ca-file`, checked once at start.
    pub(super) fn check_ca_file(platform: &PlatformRoots, path: &Path) -> anyhow::Result<()> {
        let pem = std::fs::read(path)
            .map_err(|err| anyhow::anyhow!("--ca-file: cannot read {}: {err}", path.display()))?;
        let mut store = (*platform.store).clone();
        add_roots(&mut store, "--ca-file", path, &pem)?;
        Ok(())
    }

    /// The configuration of connections to `host:port`.
    pub(super) fn for_host(&self, host: &str, port: u16) -> Arc<ClientConfig> {
        self.entries
            .iter()
            .find(|(rules, _)| {
                rules.is_empty() || rules.iter().any(|r| r.allows("https", host, port))
            })
            .map_or(&self.default, |(_, config)| config)
            .clone()
    }
}

/// A configuration on ring's provider and the safe protocol versions,
/// trusting `roots`, its client authentication still to choose.
fn trusting(
    roots: RootCertStore,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots),
    )
}

fn with_alpn(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The certificates of `pem`, read from `path`, at least one.
fn certificates(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, GrantError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| GrantError::invalid(key, format!("{} is not PEM: {err}", path.display())))?;
    if certs.is_empty() {
        return Err(GrantError::invalid(
            key,
            format!("no certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

/// Adds the certificates of `pem`, read from `path`, to `store` as roots.
fn add_roots(
    store: &mut RootCertStore,
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<(), GrantError> {
    for cert in certificates(key, path, pem)? {
        store.add(cert).map_err(|err| {
            GrantError::invalid(
                key,
                format!("a certificate of {} is not a CA: {err}", path.display()),
            )
        })?;
    }
    Ok(())
}

/// Why a TLS handshake failed, in words, and a short label for metrics.
pub(super) fn describe_tls_error(error: &rustls::Error) -> (&'static str, String) {
    use rustls::Error;
    match error {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => (
                "unknown_issuer",
                "the server's certificate is not trusted (unknown issuer): trust its CA with \
                 SSL_CERT_FILE, --ca-file or ca_file in the manifest's [[http.tls]]"
                    .to_owned(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                (
                    "name_mismatch",
                    "the server's certificate is not valid for this name (name mismatch)"
                        .to_owned(),
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ("expired", "the server's certificate has expired".to_owned())
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "not_yet_valid",
                "the server's certificate is not valid yet".to_owned(),
            ),
            CertificateError::Revoked => (
                "revoked",
                "the server's certificate has been revoked".to_owned(),
            ),
            other => (
                "invalid_certificate",
                format!("the server's certificate is invalid ({other:?})"),
            ),
        },
        Error::AlertReceived(alert) => (
            "alert",
            format!(
                "the server refused the handshake ({alert:?}): if it requires a client \
                 certificate, set client_cert_file and client_key_file in the manifest's \
                 [[http.tls]]"
            ),
        ),
        other => ("protocol", format!("{other}")),
    }
}

/// The rustls error behind an I/O error or one of its sources, if any.
pub(super) fn find_tls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}
