//! Connecting to PostgreSQL, and what its errors mean: the target named
//! without a password, the message chain, whether a retry can help.

use super::*;

pub(super) async fn open(config: &Config, target: &str) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| Error::Serving {
        target: target.to_owned(),
        message: format!("cannot connect: {}", chain(&e)),
        transient: transient(&e),
    })?;
    let target = target.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("serving database {target}: connection lost: {}", chain(&e));
        }
    });
    Ok(client)
}

/// `host:port/dbname` (hosts comma-separated), without user or password.
pub(crate) fn target_of(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("{}:{}", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{addr}:{}", port(i)))
            .collect();
    }
    // libpq's default database is the user's name.
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{}/{db}", hosts.join(","))
}

/// Whether a PostgreSQL failure is the connection's or the server's state
/// (a retry may succeed) rather than the statement's or the data's: by
/// SQLSTATE class when the server answered (08 connection, 40 rollback:
/// serialization or deadlock, 53 resources, 57 operator intervention: shut
/// down or cancelled, 58 system I/O, 55P03 lock not available), else
/// whether the connection closed or an I/O error lies beneath.
pub(crate) fn transient(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            if let Some(code) = pg.code() {
                let code = code.code();
                return ["08", "40", "53", "57", "58"].contains(&&code[..2]) || code == "55P03";
            }
            if pg.is_closed() {
                return true;
            }
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// tokio-postgres errors say only "db error"; the server's message is in the
/// source chain.
pub(crate) fn chain(e: &dyn StdError) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !message.contains(&part) {
            message.push_str(": ");
            message.push_str(&part);
        }
        source = s.source();
    }
    message
}
