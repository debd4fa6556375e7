//! Where objects go: an S3 bucket (PutObject, or a multipart upload for large objects), or a
//! local directory laid out like a bucket (`<local_directory>/<bucket>/<key>`), written to
//! a temporary name, fsynced and renamed, so a reader never sees half an object.

use crate::aws::classify;
use crate::sinks::retry::Attempt;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use std::path::PathBuf;

/// Sets the object metadata of `options` on a PutObject or CreateMultipartUpload builder
/// (two SDK types with the same setters).
macro_rules! with_object_options {
    ($builder:expr, $options:expr) => {
        $builder
            .content_type(&$options.content_type)
            .set_content_encoding($options.content_encoding.map(str::to_string))
            .set_storage_class($options.storage_class.as_deref().map(StorageClass::from))
            .set_server_side_encryption(
                $options
                    .server_side_encryption
                    .as_deref()
                    .map(ServerSideEncryption::from),
            )
            .set_ssekms_key_id($options.ssekms_key_id.clone())
            .set_tagging($options.tagging.clone())
    };
}

/// Object metadata, the same for every object of a sink.
#[derive(Debug, Clone, Default)]
pub struct ObjectOptions {
    pub content_type: String,
    pub content_encoding: Option<&'static str>,
    pub storage_class: Option<String>,
    pub server_side_encryption: Option<String>,
    pub ssekms_key_id: Option<String>,
    /// URL-encoded `k=v&k2=v2`.
    pub tagging: Option<String>,
    /// Objects at least this large are uploaded in parts.
    pub multipart_threshold: usize,
    pub part_size: usize,
}

pub enum ObjectStore {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    Directory {
        root: PathBuf,
    },
}

impl ObjectStore {
    /// Where objects end up, for logs.
    pub fn describe(&self) -> String {
        match self {
            ObjectStore::S3 { bucket, .. } => format!("s3://{bucket}"),
            ObjectStore::Directory { root } => root.display().to_string(),
        }
    }

    pub async fn put(&self, key: &str, body: Bytes, options: &ObjectOptions) -> Attempt<()> {
        match self {
            ObjectStore::S3 { client, bucket } => {
                if body.len() >= options.multipart_threshold {
                    put_multipart(client, bucket, key, body, options).await
                } else {
                    put_object(client, bucket, key, body, options).await
                }
            }
            ObjectStore::Directory { root } => put_file(root, key, body).await,
        }
    }
}

async fn put_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Bytes,
    options: &ObjectOptions,
) -> Attempt<()> {
    let request = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body));
    let request = with_object_options!(request, options);
    match request.send().await {
        Ok(_) => Attempt::Done(()),
        Err(error) => classify(error),
    }
}

/// CreateMultipartUpload, UploadPart for each `part_size` slice, CompleteMultipartUpload; an
/// upload that fails part way is aborted (the retry starts a new one).
async fn put_multipart(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Bytes,
    options: &ObjectOptions,
) -> Attempt<()> {
    let created = client.create_multipart_upload().bucket(bucket).key(key);
    let created = with_object_options!(created, options).send().await;
    let upload_id = match created {
        Ok(created) => created.upload_id().unwrap_or_default().to_string(),
        Err(error) => return classify(error),
    };
    let mut parts = Vec::new();
    for (index, start) in (0..body.len()).step_by(options.part_size).enumerate() {
        let number = index as i32 + 1;
        let chunk = body.slice(start..(start + options.part_size).min(body.len()));
        let uploaded = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(chunk))
            .send()
            .await;
        match uploaded {
            Ok(part) => parts.push(
                CompletedPart::builder()
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            ),
            Err(error) => {
                abort(client, bucket, key, &upload_id).await;
                return classify(error);
            }
        }
    }
    let completed = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match completed {
        Ok(_) => Attempt::Done(()),
        Err(error) => {
            abort(client, bucket, key, &upload_id).await;
            classify(error)
        }
    }
}

async fn abort(client: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) {
    let _ = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
}

async fn put_file(root: &std::path::Path, key: &str, body: Bytes) -> Attempt<()> {
    let path = root.join(key);
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let parent = path.parent().expect("object paths have a parent");
        std::fs::create_dir_all(parent)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = parent.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(parent)?.sync_all()
    })
    .await;
    match result {
        Ok(Ok(())) => Attempt::Done(()),
        // A full or failing disk may recover; retrying keeps the events.
        Ok(Err(error)) => Attempt::Retry(format!("cannot write object {key}: {error}"), None),
        Err(error) => Attempt::Permanent(format!("object writer failed: {error}")),
    }
}

/// `k=v&k2=v2`, percent-encoded, as S3's `x-amz-tagging` wants.
pub fn tagging(tags: &indexmap::IndexMap<String, String>) -> Option<String> {
    fn encode(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    })
}
