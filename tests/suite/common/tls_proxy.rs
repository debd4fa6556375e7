//! A TLS-terminating TCP proxy on 127.0.0.1 (tokio-rustls, on its own runtime): it completes
//! the TLS handshake with the client — requiring a client certificate signed by the given CA —
//! and pipes the plaintext to a service on another port. It counts handshakes accepted and
//! refused. Included with `#[path]` as the crate's `tls_proxy` module.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

pub struct TlsProxy {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
    listener: Option<TcpListener>,
}

impl TlsProxy {
    /// Binds a port now (so a service can be told to advertise it) without serving yet.
    pub fn bind() -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        TlsProxy {
            port: listener.local_addr().unwrap().port(),
            accepted: Arc::default(),
            refused: Arc::default(),
            runtime: None,
            listener: Some(listener),
        }
    }

    /// Serves with the server certificate `cert`/`key` (PEM files), requiring client
    /// certificates signed by `client_ca`, and forwards to 127.0.0.1:`upstream`.
    pub fn serve(&mut self, cert: &Path, key: &Path, client_ca: &Path, upstream: u16) {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(client_ca).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = self.listener.take().expect("serve is called once");
        listener.set_nonblocking(true).unwrap();
        let (accepted, refused) = (self.accepted.clone(), self.refused.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, accepted, refused) =
                    (acceptor.clone(), accepted.clone(), refused.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(client).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    }
                });
            }
        });
        self.runtime = Some(runtime);
    }

    /// TLS handshakes completed (the client presented a certificate the CA signed).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (no client certificate, or one the CA did not sign).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
