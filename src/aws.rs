//! AWS connection settings shared by the S3, Kinesis and Firehose components: region,
//! endpoint (S3-compatible stores, emulators) and credentials — the standard chain (env,
//! profile, web identity, IMDS/ECS) unless `auth` says otherwise.
//!
//! The SDK's own retries are off: each component retries with its `request` settings
//! ([`crate::sinks::retry`]), so attempts are counted and logged the same way everywhere.

use crate::sinks::retry::{Attempt, RequestConfig};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde::Deserialize;
use std::time::Duration;

/// Explicit credentials (default: the standard AWS credential chain).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAuth {
    /// Access key id (with `secret_access_key`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key (with `access_key_id`); use `${VAR}` rather than writing it inline.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// A named profile from `~/.aws/config` / `~/.aws/credentials`.
    #[serde(default)]
    pub profile: Option<String>,
    /// A role to assume (STS AssumeRole) with the credentials above or from the chain.
    #[serde(default)]
    pub assume_role: Option<String>,
}

/// A component's connection fields, borrowed from its config. Each AWS component repeats
/// `region`, `endpoint`, `auth` and `request` at its top level (as Vector's do) rather than
/// sharing a flattened struct: serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, and a misspelt field must stay an error.
pub struct AwsConnection<'a> {
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub auth: Option<&'a AwsAuth>,
    pub request: &'a RequestConfig,
}

impl AwsConnection<'_> {
    /// Checks what can be checked without the network: field name and message on error.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = self.endpoint {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| ("endpoint", format!("`{endpoint}` is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(("endpoint", format!("`{endpoint}`: use http:// or https://")));
            }
        }
        if let Some(auth) = self.auth {
            if auth.access_key_id.is_some() != auth.secret_access_key.is_some() {
                return Err((
                    "auth",
                    "access_key_id and secret_access_key go together".into(),
                ));
            }
        }
        self.request
            .check()
            .map_err(|(field, message)| (field, message.to_string()))
    }

    /// Loads the SDK configuration (credentials are resolved lazily, on first use).
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs_f64(self.request.timeout_secs))
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(region) = self.region {
            loader = loader.region(Region::new(region.to_string()));
        }
        if let Some(endpoint) = self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(auth) = self.auth {
            if let Some(profile) = &auth.profile {
                loader = loader.profile_name(profile);
            }
            if let (Some(key), Some(secret)) = (&auth.access_key_id, &auth.secret_access_key) {
                loader = loader.credentials_provider(Credentials::new(
                    key,
                    secret,
                    auth.session_token.clone(),
                    None,
                    "sluice-config",
                ));
            }
        }
        let config = loader.load().await;
        match self.auth.and_then(|a| a.assume_role.as_deref()) {
            Some(role) => {
                let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                    .session_name("sluice")
                    .configure(&config)
                    .build()
                    .await;
                config
                    .into_builder()
                    .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                        provider,
                    ))
                    .build()
            }
            None => config,
        }
    }
}

/// Checks that `bucket` exists and these credentials reach it (S3 HeadBucket), for
/// `sluice validate`.
pub async fn head_bucket(
    connection: &AwsConnection<'_>,
    force_path_style: bool,
    bucket: &str,
) -> Result<(), String> {
    let shared = connection.sdk_config().await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(force_path_style)
            .build(),
    );
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(error) => match classify::<(), _>(error) {
            Attempt::Retry(reason, _) | Attempt::Permanent(reason) => {
                Err(format!("bucket `{bucket}`: {reason}"))
            }
            Attempt::Done(()) => Ok(()),
        },
    }
}

/// Sorts an SDK error into retry or give up: connection failures, timeouts, throttling and
/// 5xx are retried; any other service error (access denied, no such bucket/stream, bad
/// request) is permanent.
pub fn classify<T, E>(error: SdkError<E>) -> Attempt<T>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default();
            let reason = format!(
                "{code} (HTTP {status}): {}",
                service.err().message().unwrap_or_default()
            );
            let throttled = status == 429
                || code.contains("Throttl")
                || code == "SlowDown"
                || code == "ProvisionedThroughputExceededException"
                || code == "LimitExceededException"
                || code == "RequestTimeout";
            if status >= 500 || throttled {
                Attempt::Retry(reason, None)
            } else {
                Attempt::Permanent(reason)
            }
        }
        SdkError::ConstructionFailure(_) => {
            Attempt::Permanent(DisplayErrorContext(&error).to_string())
        }
        _ => Attempt::Retry(DisplayErrorContext(&error).to_string(), None),
    }
}
