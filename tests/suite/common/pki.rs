//! Certificates made in the test with rcgen: a CA and the leaves it signs, as PEM files.
//! Included with `#[path]` as the crate's `pki` module.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;

/// A CA and what it signed, as PEM files in `dir`: `<name>.crt` and `<name>.key`.
pub struct Pki;

impl Pki {
    pub fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL (librdkafka) takes a leaf whose issuer equals its own
        // subject for self-signed, and refuses it.
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        Issuer::new(params, key)
    }

    pub fn leaf(dir: &Path, name: &str, issuer: &Issuer<'static, KeyPair>) {
        Self::leaf_with(dir, name, issuer, |_| {});
    }

    pub fn leaf_with(
        dir: &Path,
        name: &str,
        issuer: &Issuer<'static, KeyPair>,
        adjust: impl FnOnce(&mut CertificateParams),
    ) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        adjust(&mut params);
        let cert = params.signed_by(&key, issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
