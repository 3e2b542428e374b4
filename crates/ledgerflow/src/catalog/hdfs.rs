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
        source: "this build has no HDFS support (build with --features hdfs)".into(),
    })
}

#[cfg(all(test, feature = "hdfs"))]
mod tests {
    #[test]
    fn a_bad_namenode_url_is_a_builder_error() {
        assert!(super::open("hdfs://").is_err());
    }
}
