//! Where a backup lives: `s3://bucket/prefix` (any S3-compatible service, through the
//! `object_store` crate) or `file:///path` (a local directory or mounted volume), and opening
//! it as an object store rooted at the backup's prefix.

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Why a destination could not be parsed or opened.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("backup location {0:?} must start with s3:// or file://")]
    Scheme(String),
    #[error("backup location {0:?} names no bucket")]
    NoBucket(String),
    #[error("backup location {0:?} must be an absolute path (file:///path)")]
    RelativePath(String),
    #[error("invalid object prefix {prefix:?}")]
    Prefix {
        prefix: String,
        #[source]
        source: object_store::path::Error,
    },
    #[error("creating the backup directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuring the object store for {url}")]
    Configure {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// A parsed backup location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    File { path: PathBuf },
}

/// Parses `s3://bucket[/prefix]` or `file:///absolute/path`.
pub fn parse_location(url: &str) -> Result<Location, DestinationError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(DestinationError::NoBucket(url.to_owned()));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(DestinationError::RelativePath(url.to_owned()));
        }
        return Ok(Location::File {
            path: PathBuf::from(path),
        });
    }
    Err(DestinationError::Scheme(url.to_owned()))
}

/// Connection settings of an S3-compatible service (unset fields fall back to the standard
/// `AWS_*` environment variables of the process that opens the destination).
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://minio.backup:9000`; unset for AWS S3 itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// A backup destination as sent to nodes: its URL and, for S3, how to reach the service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// `s3://bucket/prefix` or `file:///path`.
    pub url: String,
    #[serde(default)]
    pub s3: S3Options,
}

/// An opened destination: the object store and the prefix every object name is under.
#[derive(Clone, Debug)]
pub struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
}

impl Opened {
    /// The full path of object `name` under the backup's prefix.
    pub fn path(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }
}

impl Destination {
    pub fn new(url: impl Into<String>, s3: S3Options) -> Self {
        Self {
            url: url.into(),
            s3,
        }
    }

    /// The same destination with `child` appended to its prefix (one backup of a series).
    pub fn child(&self, child: &str) -> Self {
        Self {
            url: format!("{}/{}", self.url.trim_end_matches('/'), child),
            s3: self.s3.clone(),
        }
    }

    /// Opens the object store (creating the directory of a `file://` destination).
    pub fn open(&self) -> Result<Opened, DestinationError> {
        match parse_location(&self.url)? {
            Location::File { path } => {
                std::fs::create_dir_all(&path).map_err(|source| DestinationError::CreateDir {
                    path: path.display().to_string(),
                    source,
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&path)
                    .map_err(|source| self.configure(source))?
                    .with_automatic_cleanup(true);
                Ok(Opened {
                    store: Arc::new(fs),
                    prefix: ObjectPath::default(),
                })
            }
            Location::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                let s3 = &self.s3;
                if let Some(e) = &s3.endpoint {
                    b = b
                        .with_endpoint(e)
                        .with_allow_http(e.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &s3.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                if let Some(t) = &s3.session_token {
                    b = b.with_token(t);
                }
                let store = b.build().map_err(|source| self.configure(source))?;
                let prefix =
                    ObjectPath::parse(&prefix).map_err(|source| DestinationError::Prefix {
                        prefix: prefix.clone(),
                        source,
                    })?;
                Ok(Opened {
                    store: Arc::new(store),
                    prefix,
                })
            }
        }
    }

    fn configure(&self, source: object_store::Error) -> DestinationError {
        DestinationError::Configure {
            url: self.url.clone(),
            source,
        }
    }
}

/// Command-line flags of an S3-compatible service; each also reads the standard `AWS_*`
/// environment variable.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct S3Args {
    /// Endpoint of an S3-compatible service (e.g. http://127.0.0.1:9000); unset for AWS S3.
    #[arg(long = "s3-endpoint", env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[arg(long = "s3-region", env = "AWS_REGION")]
    pub region: Option<String>,
    /// Access key id.
    #[arg(long = "s3-access-key-id", env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[arg(
        long = "s3-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
}

impl S3Args {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            parse_location("s3://bkt/a/b/").unwrap_or_else(|e| panic!("{e:?}")),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            parse_location("s3://bkt").unwrap_or_else(|e| panic!("{e:?}")),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse_location("file:///var/backups").unwrap_or_else(|e| panic!("{e:?}")),
            Location::File {
                path: "/var/backups".into()
            }
        );
        assert!(matches!(
            parse_location("s3:///x"),
            Err(DestinationError::NoBucket(_))
        ));
        assert!(matches!(
            parse_location("file://rel"),
            Err(DestinationError::RelativePath(_))
        ));
        assert!(matches!(
            parse_location("gs://b"),
            Err(DestinationError::Scheme(_))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let o = S3Options {
            secret_access_key: Some("hunter2".into()),
            ..S3Options::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn a_child_extends_the_prefix() {
        let d = Destination::new("s3://b/p/", S3Options::default());
        assert_eq!(d.child("x").url, "s3://b/p/x");
    }
}
