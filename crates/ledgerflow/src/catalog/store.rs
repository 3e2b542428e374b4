//! A day-partitioned directory of Parquet files behind `object_store`:
//! `<root>/<table>/date=YYYY-MM-DD/*.parquet`, on local disk, S3 or HDFS.
//! Both layers use it; nothing above it knows which store it is.

use std::path::Path as FsPath;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::config::{S3Config, S3UrlStyle};
use crate::day::partition_dir;
use crate::error::{Error, Result};
use crate::location::Location;

/// Files whose footers or small columns are read at once (a speed day has
/// ~1,500 micro-batch files per table: one at a time, each open waits on the
/// store's round trips, ~0.5 ms locally and far more on S3).
pub const FILES_IN_FLIGHT: usize = 16;

/// Rows per Parquet row group: large enough for good compression and scan
/// speed, small enough that a reader can split a file across cores.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Data page size of ingested files (Parquet's default is 1 MiB). A page's
/// values are copied three times while it is built (encoded, grown,
/// framed) and then compressed, likely within the core's L2 cache at
/// 256 KiB: the writer thread's copies were ~20% of its time, and a 1 GB
/// ingest took 1.6-2.6% less CPU and 2-5% less wall time (12 alternating
/// runs), files the same size. Batch-layer files written for queries keep
/// the default.
pub const INGEST_PAGE_BYTES: usize = 256 << 10;

/// The batch layer's compression: zstd level 1, most of zstd's size gain
/// for little CPU.
pub fn zstd() -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level"))
}

#[derive(Debug, Clone)]
pub struct PartitionStore {
    /// The store with the location's prefix applied: paths are relative to
    /// the layer's root.
    store: Arc<dyn ObjectStore>,
    /// The same store without the prefix, as the query engine resolves
    /// `s3://bucket/key` URLs.
    base: Arc<dyn ObjectStore>,
    location: Location,
}

impl PartitionStore {
    /// Opens a location as a store. A local directory is created if
    /// needed; a remote store is not contacted until first used.
    pub fn open(location: &Location, s3: &S3Config) -> Result<Self> {
        let os_err = |cause| Error::ObjectStore {
            location: location.to_string(),
            cause,
        };
        match location {
            Location::Local(root) => {
                std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
                let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
                let store = LocalFileSystem::new_with_prefix(&root).map_err(os_err)?;
                Ok(Self {
                    store: Arc::new(store),
                    base: Arc::new(LocalFileSystem::new()),
                    location: Location::Local(root),
                })
            }
            Location::S3 { bucket, prefix } => {
                let base: Arc<dyn ObjectStore> =
                    Arc::new(s3_builder(bucket, s3).build().map_err(os_err)?);
                Ok(Self::prefixed(base, prefix, location))
            }
            Location::Hdfs { authority, path } => {
                let base = super::hdfs::open(authority).map_err(os_err)?;
                Ok(Self::prefixed(base, path, location))
            }
        }
    }

    /// Opens (creating if needed) a local directory as a store.
    pub fn local(root: &FsPath) -> Result<Self> {
        Self::open(&Location::Local(root.to_path_buf()), &S3Config::default())
    }

    fn prefixed(base: Arc<dyn ObjectStore>, prefix: &str, location: &Location) -> Self {
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            base.clone()
        } else {
            Arc::new(PrefixStore::new(base.clone(), prefix))
        };
        Self {
            store,
            base,
            location: location.clone(),
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The local directory of a local store (`None` on S3 or HDFS).
    pub fn local_root(&self) -> Option<&FsPath> {
        match &self.location {
            Location::Local(root) => Some(root),
            _ => None,
        }
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Makes the query engine read this store's URLs through it (local
    /// files need nothing: the engine has them).
    pub fn register_with(&self, ctx: &datafusion::prelude::SessionContext) {
        if let Some((url, store)) = self.engine_store() {
            ctx.register_object_store(&url, store);
        }
    }

    /// The store the query engine reads this location's URLs through, and
    /// the URL it is registered under; `None` for local files.
    pub fn engine_store(&self) -> Option<(url::Url, Arc<dyn ObjectStore>)> {
        if self.location.is_local() {
            return None;
        }
        let url = url::Url::parse(&self.location.base_url()).expect("a location's base URL");
        Some((url, self.base.clone()))
    }

    pub fn day_prefix(table: &str, day: NaiveDate) -> Path {
        Path::from(format!("{table}/{}", partition_dir(day)))
    }

    /// Human-readable location of a day partition, for errors.
    pub fn describe_day(&self, table: &str, day: NaiveDate) -> String {
        self.describe(&Self::day_prefix(table, day))
    }

    /// Human-readable location of an object (never with credentials).
    pub fn describe(&self, path: &Path) -> String {
        format!("{}/{}", self.location, path.as_ref())
    }

    /// URL of an object for the query engine.
    pub fn url(&self, path: &Path) -> String {
        let prefix = self.location.prefix();
        if prefix.is_empty() {
            format!("{}/{}", self.location.base_url(), path.as_ref())
        } else {
            format!("{}/{prefix}/{}", self.location.base_url(), path.as_ref())
        }
    }

    fn os_err(&self, path: &Path, cause: object_store::Error) -> Error {
        Error::ObjectStore {
            location: self.describe(path),
            cause,
        }
    }

    /// Data files of a day partition, sorted by name (= arrival order for the
    /// landing dir). Hidden and temporary files (`.` or `_` prefixes) and
    /// non-Parquet files are not data.
    pub async fn list_day(&self, table: &str, day: NaiveDate) -> Result<Vec<ObjectMeta>> {
        self.list_day_prefix(&Self::day_prefix(table, day)).await
    }

    pub async fn list_day_prefix(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let mut files: Vec<ObjectMeta> = self
            .list_level(prefix)
            .await?
            .objects
            .into_iter()
            .filter(|m| {
                let name = m.location.filename().unwrap_or_default();
                name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_')
            })
            .collect();
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }

    /// Days that have a partition directory for `table`, sorted.
    pub async fn list_days(&self, table: &str) -> Result<Vec<NaiveDate>> {
        let mut days: Vec<NaiveDate> = self
            .list_level(&Path::from(table))
            .await?
            .common_prefixes
            .iter()
            .filter_map(|p| {
                let name = p.filename()?;
                NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()
            })
            .collect();
        days.sort();
        Ok(days)
    }

    /// The objects one level under `prefix`, sorted by path.
    pub async fn list_files(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let mut files = self.list_level(prefix).await?.objects;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }

    /// One level under `prefix`: its objects and its sub-prefixes (empty
    /// when nothing is there).
    async fn list_level(&self, prefix: &Path) -> Result<object_store::ListResult> {
        match self.store.list_with_delimiter(Some(prefix)).await {
            Ok(listed) => Ok(listed),
            Err(object_store::Error::NotFound { .. }) => Ok(object_store::ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
            }),
            Err(e) => Err(self.os_err(prefix, e)),
        }
    }

    pub async fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.head(path).await?.is_some())
    }

    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.os_err(path, e)),
        }
    }

    /// A small object's bytes, `None` if it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<bytes::Bytes>> {
        Ok(self.get_versioned(path).await?.map(|(bytes, _)| bytes))
    }

    /// A small object's bytes and the version to make a conditional
    /// [`put_if`](Self::put_if) against.
    pub async fn get_versioned(
        &self,
        path: &Path,
    ) -> Result<Option<(bytes::Bytes, UpdateVersion)>> {
        match self.store.get(path).await {
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got.bytes().await.map_err(|e| self.os_err(path, e))?;
                Ok(Some((bytes, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.os_err(path, e)),
        }
    }

    pub async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.os_err(path, e))?;
        Ok(())
    }

    /// Writes an object only if none exists (`If-None-Match: *` on S3):
    /// `false` when one does. One request, so a reader sees all of it or
    /// nothing.
    pub async fn create(&self, path: &Path, bytes: Vec<u8>) -> Result<bool> {
        self.put_conditional(path, bytes, PutMode::Create).await
    }

    /// Replaces an object only if it is still at `version` (`If-Match` on
    /// S3): `false` when someone else changed or removed it first.
    pub async fn put_if(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        version: UpdateVersion,
    ) -> Result<bool> {
        self.put_conditional(path, bytes, PutMode::Update(version))
            .await
    }

    /// A PUT under `mode`: `false` when its condition does not hold.
    async fn put_conditional(&self, path: &Path, bytes: Vec<u8>, mode: PutMode) -> Result<bool> {
        let opts = PutOptions::from(mode);
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.os_err(path, e)),
        }
    }

    /// Small objects under `prefix` (recursively), sorted by path.
    pub async fn list_all(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let mut all: Vec<ObjectMeta> = match self.store.list(Some(prefix)).try_collect().await {
            Ok(all) => all,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.os_err(prefix, e)),
        };
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.os_err(path, e)),
        }
    }

    /// Moves an object (on S3: a server-side copy, then a delete).
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.store
            .rename(from, to)
            .await
            .map_err(|e| self.os_err(from, e))
    }

    /// Streams an object into a local file (created or truncated): a
    /// large archive never sits in memory. Returns its size.
    pub async fn download(&self, path: &Path, dest: &FsPath) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let got = self
            .store
            .get(path)
            .await
            .map_err(|e| self.os_err(path, e))?;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        let mut stream = got.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.os_err(path, e))? {
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(dest, e))?;
        }
        file.flush().await.map_err(|e| Error::io(dest, e))?;
        Ok(size)
    }

    /// Uploads a local file (multipart above a few MiB: the object appears
    /// whole, or not at all). Returns its size.
    pub async fn upload(&self, src: &FsPath, path: &Path) -> Result<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut file = tokio::fs::File::open(src)
            .await
            .map_err(|e| Error::io(src, e))?;
        let mut writer = BufWriter::new(self.store.clone(), path.clone());
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(|e| Error::io(src, e))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if let Err(e) = writer.write_all(&buf[..n]).await {
                writer.abort().await.ok();
                return Err(self.upload_err(path, e));
            }
        }
        writer
            .shutdown()
            .await
            .map_err(|e| self.upload_err(path, e))?;
        Ok(size)
    }

    /// Uploads every file under a local directory, keeping relative paths
    /// (`dir/a/b` -> `<location>/a/b`). Returns the files uploaded.
    pub async fn upload_tree(&self, dir: &FsPath) -> Result<usize> {
        let mut pending = vec![dir.to_path_buf()];
        let mut count = 0;
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
                let path = entry.map_err(|e| Error::io(&d, e))?.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir).expect("under the walked dir");
                let key = Path::from_iter(relative.iter().map(|p| p.to_string_lossy().to_string()));
                self.upload(&path, &key).await?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The store's error inside a [`BufWriter`]'s `io::Error`.
    fn upload_err(&self, path: &Path, e: std::io::Error) -> Error {
        let cause = match e.downcast::<object_store::Error>() {
            Ok(cause) => cause,
            Err(e) => object_store::Error::Generic {
                store: "upload",
                source: Box::new(e),
            },
        };
        self.os_err(path, cause)
    }

    /// Encodes batches as one LZ4 Parquet file in memory and creates it
    /// with [`create`](Self::create): for small files that must appear
    /// whole under their final name (landing micro-batches), as S3 has no
    /// rename. `false` if the name is taken. Not zstd: a reader sets up a
    /// zstd context (two, in parquet-rs) per column chunk, which on a day
    /// of ~1,500 micro-batches cost more than decoding them.
    pub async fn create_parquet(
        &self,
        path: &Path,
        schema: SchemaRef,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<bool> {
        let mut buf = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            &mut buf,
            schema,
            Some(Self::properties(Compression::LZ4_RAW).build()),
        )
        .map_err(|e| Error::data(self.describe(path), e))?;
        for batch in batches {
            writer
                .write(&batch)
                .map_err(|e| Error::data(self.describe(path), e))?;
        }
        writer
            .close()
            .map_err(|e| Error::data(self.describe(path), e))?;
        self.create(path, buf).await
    }

    /// A streaming zstd Parquet writer to `path` (a multipart upload on S3:
    /// the object appears only once the writer is closed). `sorted_by`
    /// names a column the caller writes in ascending order, recorded as the
    /// row groups' `sorting_columns`: DataFusion then knows the file's
    /// order and aggregates over it as a stream (the realtime dashboard's
    /// minutes). A false claim gives wrong results, so only a writer that
    /// checks the order (`PartitionWriter`) passes one.
    pub fn parquet_writer(
        &self,
        path: &Path,
        schema: SchemaRef,
        sorted_by: Option<usize>,
    ) -> Result<AsyncArrowWriter<BufWriter>> {
        let sorting = sorted_by.map(|column| {
            vec![SortingColumn {
                column_idx: column as i32,
                descending: false,
                nulls_first: false,
            }]
        });
        let props = Self::properties(zstd()).set_sorting_columns(sorting);
        self.writer(path, schema, props.build())
    }

    /// The writer of ingested files: [`parquet_writer`](Self::parquet_writer)
    /// with the given compression, dictionary encoding off for `plain`
    /// columns (for values that are nearly all distinct a dictionary only
    /// costs time: hashing every value until it overflows, once per row
    /// group, then falling back to plain), and data pages of
    /// [`INGEST_PAGE_BYTES`].
    pub fn parquet_writer_with(
        &self,
        path: &Path,
        schema: SchemaRef,
        compression: Compression,
        plain: &[String],
    ) -> Result<AsyncArrowWriter<BufWriter>> {
        let mut props = Self::properties(compression).set_data_page_size_limit(INGEST_PAGE_BYTES);
        for column in plain {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false);
        }
        self.writer(path, schema, props.build())
    }

    fn properties(compression: Compression) -> WriterPropertiesBuilder {
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
    }

    fn writer(
        &self,
        path: &Path,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<AsyncArrowWriter<BufWriter>> {
        let object_writer = BufWriter::new(self.store.clone(), path.clone());
        AsyncArrowWriter::try_new(object_writer, schema, Some(props))
            .map_err(|e| Error::data(self.describe(path), e))
    }

    // ParquetObjectReader is deprecated in favour of hand-written readers; it
    // still does exactly what we need (ranged reads with a known size).
    #[allow(deprecated)]
    fn reader(&self, meta: &ObjectMeta) -> parquet::arrow::async_reader::ParquetObjectReader {
        parquet::arrow::async_reader::ParquetObjectReader::new(
            self.store.clone(),
            meta.location.clone(),
        )
        .with_file_size(meta.size)
    }

    /// A failed read of a data file: the store failing (a 5xx, a timeout,
    /// a lost connection: transient) is a store error naming the file, not
    /// a corrupt file (permanent), which only the bytes themselves make.
    pub fn parquet_error(&self, meta: &ObjectMeta, e: parquet::errors::ParquetError) -> Error {
        let file = self.describe(&meta.location);
        match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<object_store::Error>() {
                    Ok(cause) => Error::ObjectStore {
                        location: file,
                        cause: *cause,
                    },
                    Err(other) => Error::CorruptFile {
                        file,
                        message: format!("External: {other}"),
                    },
                }
            }
            other => Error::CorruptFile {
                file,
                message: other.to_string(),
            },
        }
    }

    /// The schemas of `files`, in order, up to [`FILES_IN_FLIGHT`] read at
    /// once.
    pub async fn file_schemas(&self, files: &[ObjectMeta]) -> Result<Vec<SchemaRef>> {
        use futures::StreamExt;
        // The futures are made first: a closure inside the stream's type
        // trips rustc's higher-ranked Send check in spawned callers.
        let reads: Vec<_> = files.iter().map(|meta| self.file_schema(meta)).collect();
        futures::stream::iter(reads)
            .buffered(FILES_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Reads the footer of a data file: its Arrow schema. A truncated or
    /// corrupt file fails here, named.
    pub async fn file_schema(&self, meta: &ObjectMeta) -> Result<SchemaRef> {
        let reader = self.reader(meta);
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| self.parquet_error(meta, e))?;
        Ok(builder.schema().clone())
    }

    /// Streams a data file's batches (bounded memory, one row group at a
    /// time).
    #[allow(deprecated)]
    pub async fn read_stream(
        &self,
        meta: &ObjectMeta,
    ) -> Result<
        parquet::arrow::async_reader::ParquetRecordBatchStream<
            parquet::arrow::async_reader::ParquetObjectReader,
        >,
    > {
        let failed = |e| self.parquet_error(meta, e);
        ParquetRecordBatchStreamBuilder::new(self.reader(meta))
            .await
            .map_err(failed)?
            .build()
            .map_err(failed)
    }

    /// Rows of a data file, from its footer.
    pub async fn row_count(&self, meta: &ObjectMeta) -> Result<u64> {
        let builder = ParquetRecordBatchStreamBuilder::new(self.reader(meta))
            .await
            .map_err(|e| self.parquet_error(meta, e))?;
        Ok(builder.metadata().file_metadata().num_rows() as u64)
    }

    /// Reads a few columns of a file in full (small files: block headers).
    pub async fn read_columns(
        &self,
        meta: &ObjectMeta,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        self.read_columns_stream(meta, columns)
            .await?
            .try_collect()
            .await
            .map_err(|e| self.parquet_error(meta, e))
    }

    /// Streams a few columns of a file, a row group at a time.
    #[allow(deprecated)]
    pub async fn read_columns_stream(
        &self,
        meta: &ObjectMeta,
        columns: &[&str],
    ) -> Result<
        parquet::arrow::async_reader::ParquetRecordBatchStream<
            parquet::arrow::async_reader::ParquetObjectReader,
        >,
    > {
        let failed = |e| self.parquet_error(meta, e);
        let builder = ParquetRecordBatchStreamBuilder::new(self.reader(meta))
            .await
            .map_err(failed)?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        builder.with_projection(mask).build().map_err(failed)
    }
}

/// An S3 client for `bucket`: credentials and defaults from the standard
/// AWS environment, then `[batch.s3]`.
fn s3_builder(bucket: &str, s3: &S3Config) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &s3.endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        b = b.with_region(region);
    } else if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        b = b.with_region("us-east-1");
    }
    if let Some(key) = &s3.access_key_id {
        b = b.with_access_key_id(&key.0);
    }
    if let Some(secret) = &s3.secret_access_key {
        b = b.with_secret_access_key(&secret.0);
    }
    // Client options first: `with_allow_http` sets one of them.
    b.with_client_options(
        ClientOptions::new()
            .with_timeout(s3.timeout)
            .with_connect_timeout(s3.connect_timeout),
    )
    .with_allow_http(s3.allow_http)
    .with_virtual_hosted_style_request(s3.url_style == S3UrlStyle::VirtualHosted)
    .with_retry(RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: s3.max_retries,
        retry_timeout: s3.retry_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Retry;

    /// A file larger than the writer's buffer goes up as a multipart upload
    /// to a real S3 server (SeaweedFS) and arrives whole, byte for byte.
    #[tokio::test]
    async fn a_large_upload_goes_in_parts_and_arrives_whole() {
        use rand::{RngCore, SeedableRng};
        use sha2::{Digest, Sha256};
        let server = ledgerflow_testkit::s3::S3Server::start(&["big"]);
        let s3 = S3Config {
            endpoint: Some(server.endpoint()),
            allow_http: true,
            access_key_id: Some(crate::secret::Secret(
                ledgerflow_testkit::s3::ACCESS_KEY.into(),
            )),
            secret_access_key: Some(crate::secret::Secret(server.secret().into())),
            ..Default::default()
        };
        let location = Location::parse("s3://big/lake", FsPath::new("")).unwrap();
        let store = PartitionStore::open(&location, &s3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (src, back) = (dir.path().join("src.bin"), dir.path().join("back.bin"));
        let mut bytes = vec![0u8; 25 << 20];
        rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut bytes);
        std::fs::write(&src, &bytes).unwrap();
        let path = Path::from("t/date=2026-11-01/part-0.bin");
        assert_eq!(store.upload(&src, &path).await.unwrap(), bytes.len() as u64);
        assert_eq!(
            store.download(&path, &back).await.unwrap(),
            bytes.len() as u64
        );
        let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
        assert_eq!(digest(&std::fs::read(&back).unwrap()), digest(&bytes));
        // S3 names a multipart object's ETag after its part count.
        let meta = store.store.head(&path).await.unwrap();
        let etag = meta.e_tag.unwrap_or_default();
        assert!(
            etag.trim_matches('"').contains('-'),
            "not multipart: {etag}"
        );
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(name),
            last_modified: chrono::Utc::now(),
            size: 10,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn a_store_failing_a_read_is_transient_and_bad_bytes_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::local(dir.path()).unwrap();
        let file = meta("blocks/date=2026-11-05/0.parquet");
        let unavailable =
            parquet::errors::ParquetError::External(Box::new(object_store::Error::Generic {
                store: "S3",
                source: "Server returned non-2xx status code: 500 Internal Server Error".into(),
            }));
        let err = store.parquet_error(&file, unavailable);
        assert_eq!(err.retry(), Retry::Transient, "{err}");
        assert!(
            err.to_string().contains("date=2026-11-05/0.parquet"),
            "{err}"
        );
        assert!(!err.to_string().contains("corrupt"), "{err}");

        let truncated = parquet::errors::ParquetError::EOF("file too small".into());
        let err = store.parquet_error(&file, truncated);
        assert_eq!(err.retry(), Retry::Permanent, "{err}");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
