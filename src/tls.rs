//! TLS settings for servers (http_server, the api) and clients (the http sink), on rustls.
//! A server with `ca_file` requires client certificates signed by it (mutual TLS).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS for a server or a client.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates. On a server: client certificates must be signed by one
    /// of them (mutual TLS). On a client: the server's certificate may be signed by one of
    /// them (besides the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain: the server's own, or the client's certificate for mutual TLS.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// PEM private key of `crt_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Clients: check the server's certificate and name (default true). Turning it off
    /// accepts any server: for tests only.
    #[serde(default = "yes")]
    pub verify_certificate: bool,
}

fn yes() -> bool {
    true
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", path.display()))
}

impl TlsConfig {
    /// The files this config names (for `sluice validate`).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca_file, &self.crt_file, &self.key_file]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// A server configuration: `crt_file` and `key_file` required; with `ca_file`, clients
    /// must present a certificate it signed. Errors name the field.
    pub fn server(&self) -> Result<Arc<rustls::ServerConfig>, (&'static str, String)> {
        let crt = self
            .crt_file
            .as_deref()
            .ok_or(("tls.crt_file", "a server needs its certificate".to_string()))?;
        let key = self
            .key_file
            .as_deref()
            .ok_or(("tls.key_file", "a server needs its private key".to_string()))?;
        let chain = certificates(crt).map_err(|m| ("tls.crt_file", m))?;
        let key = private_key(key).map_err(|m| ("tls.key_file", m))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ("tls", e.to_string()))?;
        let builder = match &self.ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca).map_err(|m| ("tls.ca_file", m))? {
                    roots
                        .add(cert)
                        .map_err(|e| ("tls.ca_file", format!("{}: {e}", ca.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| ("tls.ca_file", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            (
                "tls.key_file",
                format!("does not match the certificate: {e}"),
            )
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A rustls client configuration (for clients that take one, e.g. the postgres sink):
    /// the Mozilla roots plus `ca_file`, and `crt_file` + `key_file` as the client certificate.
    /// `verify_certificate: false` is refused here: these clients always check the server.
    pub fn rustls_client(&self) -> Result<Arc<rustls::ClientConfig>, (&'static str, String)> {
        if !self.verify_certificate {
            return Err((
                "tls.verify_certificate",
                "cannot be turned off for this sink; give the server's CA in ca_file".into(),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &self.ca_file {
            for cert in certificates(ca).map_err(|m| ("tls.ca_file", m))? {
                roots
                    .add(cert)
                    .map_err(|e| ("tls.ca_file", format!("{}: {e}", ca.display())))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ("tls", e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.crt_file, &self.key_file) {
            (Some(crt), Some(key)) => {
                let chain = certificates(crt).map_err(|m| ("tls.crt_file", m))?;
                let key = private_key(key).map_err(|m| ("tls.key_file", m))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    (
                        "tls.key_file",
                        format!("does not match the certificate: {e}"),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err((
                    "tls.key_file",
                    "crt_file and key_file go together".to_string(),
                ))
            }
        };
        Ok(Arc::new(config))
    }

    /// Applies the client side to a reqwest builder.
    pub fn client(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, (&'static str, String)> {
        if let Some(ca) = &self.ca_file {
            for cert in certificates(ca).map_err(|m| ("tls.ca_file", m))? {
                let cert = reqwest::Certificate::from_der(&cert)
                    .map_err(|e| ("tls.ca_file", e.to_string()))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&self.crt_file, &self.key_file) {
            (Some(crt), Some(key)) => {
                let mut pem = std::fs::read(crt).map_err(|e| {
                    (
                        "tls.crt_file",
                        format!("cannot read {}: {e}", crt.display()),
                    )
                })?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| {
                    (
                        "tls.key_file",
                        format!("cannot read {}: {e}", key.display()),
                    )
                })?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    (
                        "tls.crt_file",
                        format!("not a usable certificate and key: {e}"),
                    )
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err((
                    "tls.key_file",
                    "crt_file and key_file go together".to_string(),
                ))
            }
        }
        if !self.verify_certificate {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}
