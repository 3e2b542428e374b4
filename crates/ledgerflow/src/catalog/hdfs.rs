//! HDFS stores (`hdfs://namenode:port`), through hdfs-native: a pure-Rust
//! client, no JVM. Only in builds with the `hdfs` feature; the namenode's
//! settings (HA, Kerberos) come from `HADOOP_CONF_DIR` as for Hadoop's own
//! tools.

use std::sync::Arc;

use object_store::ObjectStore;

#[cfg(feature = "hdfs")]
pub fn open(authority: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(authority)
        .build()?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "hdfs"))]
pub fn open(_authority: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    Err(object_store::Error::NotSupported {
        source: "this build has no HDFS support (the `hdfs` feature is off)".into(),
    })
}

#[cfg(all(test, feature = "hdfs"))]
mod tests {
    use std::path::Path;

    use crate::catalog::store::PartitionStore;
    use crate::config::S3Config;
    use crate::location::Location;

    #[test]
    fn a_bad_namenode_url_is_a_builder_error() {
        assert!(super::open("hdfs://").is_err());
    }

    /// No HDFS cluster can run here: the client is driven against a port
    /// nobody listens on, which must surface as a store error naming the
    /// layer, not a panic or a hang.
    #[tokio::test]
    async fn an_unreachable_namenode_is_a_named_store_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("hdfs://127.0.0.1:{port}/ledger/batch");
        let location = Location::parse(&url, Path::new("")).unwrap();
        let store = PartitionStore::open(&location, &S3Config::default()).unwrap();
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            store.list_days("transfers"),
        )
        .await
        .expect("the client gives up")
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(matches!(err, crate::Error::ObjectStore { .. }), "{err:?}");
    }
}
