pub async fn bench(_a: crate::cli::BenchArgs) -> anyhow::Result<u8> { todo!() }
