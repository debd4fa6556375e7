//! Settings shared by the Kafka source and sink: brokers, TLS, SASL and librdkafka passthrough,
//! mapped onto librdkafka's configuration. Secrets come from the environment (`${VAR}`) or
//! files (`password_file`) and are never logged: errors name the setting, never its value.

use crate::topology::BuildError;
use indexmap::IndexMap;
use rdkafka::ClientConfig;
use serde::Deserialize;
use std::path::PathBuf;

/// TLS to the brokers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// CA bundle (PEM) that signs the brokers' certificates; default: the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that require mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Password of an encrypted `key_file`.
    #[serde(default)]
    pub key_password: Option<String>,
    /// Check the brokers' certificates (default true).
    #[serde(default = "yes")]
    pub verify_certificate: bool,
    /// Check that a certificate names the broker's host (default true).
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

fn yes() -> bool {
    true
}

/// The SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// SASL authentication.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    pub username: String,
    /// The password; prefer `${ENV_VAR}` or `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (e.g. a mounted Kubernetes secret); trailing newline ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Connection settings common to the source and the sink.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConnection {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// TLS to the brokers.
    #[serde(default)]
    pub tls: Option<KafkaTls>,
    /// SASL authentication.
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    /// Any other librdkafka setting, passed as is (they win over Sluice's defaults).
    #[serde(default)]
    pub librdkafka_options: IndexMap<String, String>,
}

impl KafkaConnection {
    /// The librdkafka settings of this connection.
    pub fn client_config(&self) -> Result<ClientConfig, BuildError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(BuildError::new(
                "bootstrap_servers",
                "must name at least one broker",
            ));
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        let protocol = match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(ca) = &tls.ca_file {
                config.set("ssl.ca.location", path(ca));
            }
            if let Some(cert) = &tls.cert_file {
                config.set("ssl.certificate.location", path(cert));
            }
            if let Some(key) = &tls.key_file {
                config.set("ssl.key.location", path(key));
            }
            if let Some(password) = &tls.key_password {
                config.set("ssl.key.password", password);
            }
            config.set(
                "enable.ssl.certificate.verification",
                tls.verify_certificate.to_string(),
            );
            config.set(
                "ssl.endpoint.identification.algorithm",
                if tls.verify_hostname { "https" } else { "none" },
            );
        }
        if let Some(sasl) = &self.sasl {
            let mechanism = match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            let password = match (&sasl.password, &sasl.password_file) {
                (Some(p), None) => p.clone(),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map_err(|e| {
                        BuildError::new(
                            "sasl",
                            format!("cannot read password_file {}: {}", file.display(), e.kind()),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                _ => {
                    return Err(BuildError::new(
                        "sasl",
                        "set exactly one of `password` and `password_file`",
                    ))
                }
            };
            config.set("sasl.mechanism", mechanism);
            config.set("sasl.username", &sasl.username);
            config.set("sasl.password", password);
        }
        for (key, value) in &self.librdkafka_options {
            config.set(key, value);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_map_onto_librdkafka_settings() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let yaml = format!(
            "bootstrap_servers: b1:9093,b2:9093\ntls:\n  ca_file: /etc/ca.pem\n  verify_hostname: false\nsasl:\n  mechanism: SCRAM-SHA-512\n  username: svc\n  password_file: {}\nlibrdkafka_options:\n  client.id: sluice-test\n",
            secret.display()
        );
        let connection: KafkaConnection = serde_yaml::from_str(&yaml).unwrap();
        let config = connection.client_config().unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(
            config.get("ssl.endpoint.identification.algorithm"),
            Some("none")
        );
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            config.get("sasl.password"),
            Some("s3cret"),
            "file contents without the newline"
        );
        assert_eq!(config.get("client.id"), Some("sluice-test"));
    }

    #[test]
    fn a_missing_password_file_is_named_without_leaking_anything() {
        let yaml = "bootstrap_servers: b:9092\nsasl:\n  mechanism: PLAIN\n  username: u\n  password_file: /nonexistent/secret\n";
        let connection: KafkaConnection = serde_yaml::from_str(yaml).unwrap();
        let error = connection.client_config().unwrap_err();
        assert_eq!(error.field, Some("sasl"));
        assert!(error.message.contains("/nonexistent/secret"));
    }
}
