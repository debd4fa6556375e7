//! Settings shared by the Kafka source and sink: brokers, TLS and SASL, mapped onto
//! librdkafka's configuration. Secrets come from the environment (`${VAR}`) or
//! files (`password_file`) and are never logged: errors name the setting, never its value.

use crate::topology::BuildError;
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
    /// Client certificate (PEM), for brokers that require mutual TLS. Named as in every
    /// other `tls:` block; `cert_file` is accepted too.
    #[serde(default, alias = "cert_file")]
    pub crt_file: Option<PathBuf>,
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

/// The connection settings the source and the sink share (each config holds the fields, so
/// each keeps its own `deny_unknown_fields` and field docs).
#[derive(Debug, Clone, Copy)]
pub struct KafkaConnection<'a> {
    pub bootstrap_servers: &'a str,
    pub tls: Option<&'a KafkaTls>,
    pub sasl: Option<&'a KafkaSasl>,
}

impl KafkaConnection<'_> {
    /// The librdkafka settings of this connection.
    pub fn client_config(&self) -> Result<ClientConfig, BuildError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(BuildError::new(
                "bootstrap_servers",
                "must name at least one broker",
            ));
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers);
        let protocol = match (self.tls, self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(tls) = self.tls {
            let files = [
                (&tls.ca_file, "tls.ca_file", "ssl.ca.location"),
                (&tls.crt_file, "tls.crt_file", "ssl.certificate.location"),
                (&tls.key_file, "tls.key_file", "ssl.key.location"),
            ];
            for (file, field, setting) in files {
                if let Some(path) = file {
                    // librdkafka's own error for a missing file is an OpenSSL code.
                    std::fs::File::open(path).map_err(|e| {
                        BuildError::new(
                            field,
                            format!("cannot read {}: {}", path.display(), e.kind()),
                        )
                    })?;
                    config.set(setting, path.to_string_lossy());
                }
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
        if let Some(sasl) = self.sasl {
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
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not parsed here").unwrap();
        let tls: KafkaTls = serde_yaml::from_str(&format!(
            "ca_file: {}\nverify_hostname: false\n",
            ca.display()
        ))
        .unwrap();
        let sasl: KafkaSasl = serde_yaml::from_str(&format!(
            "mechanism: SCRAM-SHA-512\nusername: svc\npassword_file: {}\n",
            secret.display()
        ))
        .unwrap();
        let connection = KafkaConnection {
            bootstrap_servers: "b1:9093,b2:9093",
            tls: Some(&tls),
            sasl: Some(&sasl),
        };
        let config = connection.client_config().unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("ssl.ca.location"), ca.to_str());
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
    }

    #[test]
    fn an_unreadable_tls_file_is_named_by_its_field() {
        let tls: KafkaTls =
            serde_yaml::from_str("crt_file: /nonexistent/client.crt\nkey_file: /nonexistent/k\n")
                .unwrap();
        let connection = KafkaConnection {
            bootstrap_servers: "b:9093",
            tls: Some(&tls),
            sasl: None,
        };
        let error = connection.client_config().unwrap_err();
        assert_eq!(error.field, Some("tls.crt_file"));
        assert!(
            error.message.contains("/nonexistent/client.crt"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_missing_password_file_is_named_without_leaking_anything() {
        let sasl: KafkaSasl = serde_yaml::from_str(
            "mechanism: PLAIN\nusername: u\npassword_file: /nonexistent/secret\n",
        )
        .unwrap();
        let connection = KafkaConnection {
            bootstrap_servers: "b:9092",
            tls: None,
            sasl: Some(&sasl),
        };
        let error = connection.client_config().unwrap_err();
        assert_eq!(error.field, Some("sasl"));
        assert!(error.message.contains("/nonexistent/secret"));
    }
}
