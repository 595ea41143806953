//! The object stores a plugin writes to, built on first use from the URI's
//! scheme and bucket with the pod's ambient credentials (the standard
//! variables of each cloud, web identity, the metadata server) and kept:
//! S3 and S3-compatible stores (`s3://`, with the manifest's endpoint),
//! GCS (`gs://`), Azure (`abfs://`, `az://`) and the pod's file system
//! (`file://`, under the manifest's `local_roots` only).

use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use object_store::{
    ObjectStore, aws::AmazonS3Builder, azure::MicrosoftAzureBuilder,
    gcp::GoogleCloudStorageBuilder, local::LocalFileSystem, path::Path as ObjectPath,
};

use super::{StorageError, http::StoreHttp, uri::ObjectUri};

/// Where S3-compatible stores are, from `[storage]`.
#[derive(Debug, Clone, Default)]
pub(super) struct S3Settings {
    /// `http(s)://host:port` of an S3-compatible store (MinIO); AWS's
    /// when absent (or `AWS_ENDPOINT_URL` of the pod).
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
}

/// An object's store and its path there.
#[derive(Clone)]
pub(super) struct Located {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) path: ObjectPath,
}

/// One plugin's stores.
pub(super) struct Stores {
    s3: S3Settings,
    local_roots: Vec<PathBuf>,
    http: StoreHttp,
    built: Mutex<HashMap<(String, String), Arc<dyn ObjectStore>>>,
}

impl Stores {
    pub(super) fn new(s3: S3Settings, local_roots: Vec<PathBuf>, http: StoreHttp) -> Self {
        Self {
            s3,
            local_roots,
            http,
            built: Mutex::default(),
        }
    }

    /// The store `uri` names and its path there.
    pub(super) fn locate(&self, uri: &ObjectUri) -> Result<Located, StorageError> {
        let key = uri.key();
        let path = ObjectPath::parse(&key).map_err(|err| {
            StorageError::Invalid(format!("{} is not an object path: {err}", uri.text))
        })?;
        if uri.scheme == "file" {
            self.check_local(uri)?;
        }
        let store_key = (uri.scheme.clone(), uri.bucket.clone());
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = built.get(&store_key) {
            return Ok(Located {
                store: Arc::clone(store),
                path,
            });
        }
        let store = self.build(uri)?;
        built.insert(store_key, Arc::clone(&store));
        Ok(Located { store, path })
    }

    /// A `file://` URI must be under one of the manifest's roots.
    fn check_local(&self, uri: &ObjectUri) -> Result<(), StorageError> {
        let path: PathBuf = std::iter::once(Component::RootDir.as_os_str().to_owned())
            .chain(uri.segments.iter().map(Into::into))
            .collect();
        if self.local_roots.iter().any(|root| path.starts_with(root)) {
            return Ok(());
        }
        Err(StorageError::NotAllowed(if self.local_roots.is_empty() {
            format!(
                "{} is on the pod's file system, and the plugin's [storage] names no local_roots",
                uri.text
            )
        } else {
            format!(
                "{} is outside the plugin's [storage] local_roots ({})",
                uri.text,
                self.local_roots
                    .iter()
                    .map(|root| root.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }))
    }

    fn build(&self, uri: &ObjectUri) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let failed = |err: object_store::Error| {
            StorageError::Invalid(format!("cannot use the store of {}: {err}", uri.text))
        };
        let store: Arc<dyn ObjectStore> = match uri.scheme.as_str() {
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&uri.bucket)
                    .with_http_connector(self.http.clone());
                if let Some(endpoint) = &self.s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = &self.s3.region {
                    builder = builder.with_region(region);
                }
                Arc::new(builder.build().map_err(failed)?)
            }
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&uri.bucket)
                    .with_http_connector(self.http.clone())
                    .build()
                    .map_err(failed)?,
            ),
            "abfs" | "abfss" | "az" | "azure" | "adl" => {
                let root = format!("{}://{}", uri.scheme, uri.bucket);
                Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_url(root)
                        .with_http_connector(self.http.clone())
                        .build()
                        .map_err(failed)?,
                )
            }
            "file" => Arc::new(LocalFileSystem::new()),
            other => {
                return Err(StorageError::NotAllowed(format!(
                    "{}: object stores of scheme {other} are not supported (s3, gs, abfs, \
                     file)",
                    uri.text
                )));
            }
        };
        Ok(store)
    }
}

/// `local_roots` of `[storage]`: absolute folders, without `..`.
pub(super) fn local_root(root: &Path) -> Result<PathBuf, String> {
    if !root.is_absolute() || root.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{} is not an absolute folder without `..`",
            root.display()
        ));
    }
    Ok(root.components().collect())
}
