//! Where the table's files live: a local directory or an S3 bucket (S3-compatible stores and
//! emulators through `endpoint`). Files go through iceberg-rust's OpenDAL storage, which
//! picks the backend by each path's scheme; S3 requests are signed with credentials from the
//! same AWS chain and `auth` settings as every other AWS component ([`crate::aws`]), so a
//! profile, an assumed role or IMDS work here as they do for the `aws_s3` sink.

use crate::aws::{AwsAuth, AwsConnection};
use crate::sinks::retry::RequestConfig;
use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use iceberg::io::{StorageFactory, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION};
use iceberg_storage_opendal::{CustomAwsCredentialLoader, OpenDalResolvingStorageFactory};
use std::collections::HashMap;
use std::sync::Arc;

/// The warehouse location, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warehouse {
    /// A `file://` URL of an absolute local directory.
    Local(String),
    /// An `s3://bucket/prefix` URL.
    S3(String),
}

impl Warehouse {
    /// Reads `warehouse`: a path, a `file://` URL or an `s3://` (`s3a://`) URL.
    pub fn parse(location: &str) -> Result<Warehouse, String> {
        let location = location.trim();
        if let Some(rest) = ["s3://", "s3a://"]
            .iter()
            .find_map(|scheme| location.strip_prefix(scheme))
        {
            let rest = rest.trim_end_matches('/');
            let bucket = rest.split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(format!("warehouse `{location}`: names no bucket"));
            }
            return Ok(Warehouse::S3(format!("s3://{rest}")));
        }
        if location.contains("://") && !location.starts_with("file://") {
            return Err(format!(
                "warehouse `{location}`: use a local directory (a path or file:// URL) or s3://bucket/prefix"
            ));
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        if path.is_empty() {
            return Err("warehouse: must not be empty".into());
        }
        let path = std::path::absolute(path).map_err(|e| format!("warehouse `{location}`: {e}"))?;
        Ok(Warehouse::Local(format!("file://{}", path.display())))
    }

    /// The directory of a local warehouse.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Warehouse::Local(url) => url.strip_prefix("file://").map(std::path::Path::new),
            Warehouse::S3(_) => None,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Warehouse::Local(url) | Warehouse::S3(url) => url,
        }
    }
}

/// The AWS settings of an `s3://` warehouse, as on the other AWS components.
pub struct S3Settings<'a> {
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub force_path_style: bool,
    pub auth: Option<&'a AwsAuth>,
}

impl S3Settings<'_> {
    fn connection<'a>(&'a self, request: &'a RequestConfig) -> AwsConnection<'a> {
        AwsConnection {
            region: self.region,
            endpoint: self.endpoint,
            auth: self.auth,
            request,
        }
    }

    /// Field and message of what is wrong, without the network.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.connection(&RequestConfig::default()).check()
    }

    /// For `sluice validate`: the warehouse's bucket exists and answers.
    pub async fn check_bucket(&self, warehouse: &str) -> Result<(), String> {
        let bucket = warehouse
            .strip_prefix("s3://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        crate::aws::head_bucket(
            &self.connection(&RequestConfig::default()),
            self.force_path_style,
            bucket,
        )
        .await
        .map_err(|e| format!("warehouse: {e}"))
    }

    /// The storage factory and its properties (region, endpoint, addressing) for the
    /// catalog's file IO.
    pub async fn storage(&self) -> (Arc<dyn StorageFactory>, HashMap<String, String>) {
        let request = RequestConfig::default();
        let sdk = self.connection(&request).sdk_config().await;
        let mut props = HashMap::new();
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        props.insert(S3_REGION.to_string(), region);
        if let Some(endpoint) = self.endpoint {
            props.insert(S3_ENDPOINT.to_string(), endpoint.to_string());
        }
        props.insert(
            S3_PATH_STYLE_ACCESS.to_string(),
            self.force_path_style.to_string(),
        );
        let mut factory = OpenDalResolvingStorageFactory::new();
        if let Some(provider) = sdk.credentials_provider() {
            factory =
                factory.with_s3_credential_loader(CustomAwsCredentialLoader::new(SdkCredentials {
                    provider,
                }));
        }
        (Arc::new(factory), props)
    }
}

/// Hands OpenDAL's request signer the credentials of the AWS SDK's chain.
#[derive(Debug)]
struct SdkCredentials {
    provider: SharedCredentialsProvider,
}

impl reqsign_core::ProvideCredential for SdkCredentials {
    type Credential = reqsign_aws_v4::Credential;

    async fn provide_credential(
        &self,
        _context: &reqsign_core::Context,
    ) -> reqsign_core::Result<Option<Self::Credential>> {
        let credentials = self.provider.provide_credentials().await.map_err(|e| {
            reqsign_core::Error::credential_invalid(format!("no AWS credentials: {e}"))
                .set_retryable(true)
        })?;
        let expires_in = credentials
            .expiry()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| reqsign_core::time::Timestamp::from_second(d.as_secs() as i64).ok());
        Ok(Some(reqsign_aws_v4::Credential {
            access_key_id: credentials.access_key_id().to_string(),
            secret_access_key: credentials.secret_access_key().to_string(),
            session_token: credentials.session_token().map(str::to_string),
            expires_in,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Warehouse;

    #[test]
    fn warehouses_are_local_directories_or_s3_urls() {
        assert_eq!(
            Warehouse::parse("s3://lake/warehouse/").unwrap(),
            Warehouse::S3("s3://lake/warehouse".into())
        );
        assert_eq!(
            Warehouse::parse("s3a://lake").unwrap(),
            Warehouse::S3("s3://lake".into())
        );
        assert!(Warehouse::parse("s3://").unwrap_err().contains("no bucket"));
        assert!(Warehouse::parse("gs://lake")
            .unwrap_err()
            .contains("s3://bucket/prefix"));
        assert_eq!(
            Warehouse::parse("file:///var/lake").unwrap(),
            Warehouse::Local("file:///var/lake".into())
        );
        match Warehouse::parse("lake").unwrap() {
            Warehouse::Local(url) => assert!(url.starts_with("file:///") && url.ends_with("/lake")),
            other => panic!("{other:?}"),
        }
    }
}
