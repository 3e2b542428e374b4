//! MongoDB as the speed layer, against a real MongoDB-protocol server
//! (SecantusDB, one per test on a free port), and against a real MongoDB
//! when `LEDGERFLOW_TEST_MONGODB_URI` is set.

use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::mongo::MongoServer;
use ledgerflow_testkit::project::{stderr, stdout, TestProject};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::{assert_daily_eq, assert_minutes_eq, Serving};

use crate::{d, project};

/// Points the project's speed layer at MongoDB. `extra` holds `key = value`
/// lines: those of `[speed.mongodb]` go into its inline table, the others
/// stay in `[speed]`.
pub fn use_mongo(p: &TestProject, uri: &str, database: &str, extra: &str) {
    let mut mongo = vec![format!("database = \"{database}\"")];
    let mut speed = Vec::new();
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap().trim();
        if ["connect_timeout", "follow", "create_indexes"].contains(&key) {
            mongo.push(line.to_string());
        } else {
            speed.push(line.to_string());
        }
    }
    p.set_config(
        "url = \"data/landing\"",
        &format!(
            "url = \"{uri}\"\nmongodb = {{ {} }}\n{}",
            mongo.join(", "),
            speed.join("\n")
        ),
    );
}

/// Daily models over a MongoDB day (with reorgs) and a batch day equal the
/// reference; an unchanged MongoDB day is skipped by fingerprint; after
/// compaction the day reads from the batch layer with the same numbers.
async fn daily_models_case(uri: &str, database: &str) {
    let params = GenParams {
        seed: 7,
        scale: 0.01,
        reorg_rate: 0.15,
        ..Default::default()
    };
    let days = [d("2026-11-02"), d("2026-11-03")];
    let data: Vec<_> = days
        .iter()
        .map(|day| generated_day(&params, *day, *day == days[1]))
        .collect();
    assert!(data[1].0.iter().any(|b| !b.canonical), "needs reorgs");

    let p = project(Serving::Postgres).await;
    use_mongo(&p, uri, database, "");
    p.generate(
        "2026-11-02",
        "2026-11-03",
        "0.01",
        &["2026-11-03"],
        &["--seed", "7", "--reorg-rate", "0.15"],
    );
    let out = p.ok(&["backfill", "--from", "2026-11-02", "--to", "2026-11-03"]);
    let text = stdout(&out);
    assert!(
        text.contains("2026-11-03 block_daily_metrics      speed"),
        "{text}"
    );
    let check = |daily: Vec<reference::BlockDailyMetrics>| {
        assert_eq!(daily.len(), 2);
        for (i, day) in days.iter().enumerate() {
            let (blocks, txs) = &data[i];
            assert_daily_eq(
                &daily[i],
                &reference::block_daily_metrics(*day, blocks, txs).unwrap(),
            );
        }
    };
    check(p.db.block_daily_metrics().await);
    for (i, day) in days.iter().enumerate() {
        let (blocks, txs) = &data[i];
        assert_eq!(
            p.db.user_activity(*day).await,
            reference::user_activity(*day, blocks, txs)
        );
    }
    let minutes: Vec<_> = days
        .iter()
        .enumerate()
        .flat_map(|(i, day)| reference::realtime_minutes(*day, &data[i].0, &data[i].1))
        .collect();
    assert_minutes_eq(&p.db.realtime_minutes().await, &minutes);

    // Same documents: same fingerprint, skipped.
    let again = stdout(&p.ok(&["run", "--date", "2026-11-03"]));
    assert_eq!(again.matches("skipped").count(), 3, "{again}");

    // Closing the day moves it to the batch layer; the numbers stay.
    let before = p.db.dump_metrics().await;
    p.ok(&["compact", "--date", "2026-11-03", "--force"]);
    let out = p.ok(&["run", "--date", "2026-11-03"]);
    assert!(stdout(&out).contains("batch"), "{}", stdout(&out));
    assert_eq!(p.db.dump_metrics().await, before);
    check(p.db.block_daily_metrics().await);
    p.expect(&["compact", "--date", "2026-11-03", "--remove-landing"], 2);
    p.drop_db().await;
}

#[tokio::test]
async fn daily_models_over_a_mongodb_day_equal_the_reference() {
    let server = MongoServer::start(false);
    daily_models_case(&server.uri(), "ledger").await;
}

/// The same suite against a real MongoDB, when one is configured (CI here
/// has none: no mongod can be installed on this machine).
#[tokio::test]
async fn daily_models_against_a_real_mongodb_when_configured() {
    let Ok(uri) = std::env::var("LEDGERFLOW_TEST_MONGODB_URI") else {
        eprintln!("LEDGERFLOW_TEST_MONGODB_URI is not set; SecantusDB covers this suite");
        return;
    };
    let database = format!("ledgerflow_test_{}", std::process::id());
    daily_models_case(&uri, &database).await;
    let client = ledgerflow::mongodb::Client::with_uri_str(&uri)
        .await
        .unwrap();
    client.database(&database).drop().await.unwrap();
}

/// A day older than the speed layer's TTL and not in the batch layer is an
/// error that says so, from `speed.ttl` or from the collection's TTL index.
#[tokio::test]
async fn a_day_beyond_the_ttl_is_an_error_not_an_empty_result() {
    let server = MongoServer::start(false);
    let p = project(Serving::Sqlite).await;
    let old = (ledgerflow::day::today() - chrono::Days::new(5)).to_string();
    use_mongo(&p, &server.uri(), "ledger", "ttl = \"48h\"");
    p.generate(&old, &old, "0.0025", &[&old], &[]);
    let out = p.expect(&["run", "--date", &old], 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("neither committed in the batch layer")
            && text.contains("TTL (2days")
            && text.contains(&old),
        "{text}"
    );

    // Without `speed.ttl`, the TTL index on blocks.timestamp says it.
    p.set_config("ttl = \"48h\"", "");
    let config = ledgerflow::config::Config::load(&p.config_path()).unwrap();
    let settings = config.speed.mongodb.clone().unwrap_or_default();
    let mongo =
        ledgerflow::catalog::speed::mongo::MongoLayer::open(&config, &server.uri(), &settings)
            .unwrap();
    let blocks = mongo
        .collection(ledgerflow::catalog::schema::Entity::Blocks)
        .await
        .unwrap();
    blocks
        .create_index(ledgerflow::catalog::speed::mongo::ttl_index(
            "timestamp",
            std::time::Duration::from_secs(72 * 3600),
        ))
        .await
        .unwrap();
    let out = p.expect(&["run", "--date", &old], 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("TTL (3days"), "{text}");
    // A day within the TTL still runs.
    let recent = ledgerflow::day::today().to_string();
    p.generate(&recent, &recent, "0.0025", &[&recent], &[]);
    p.ok(&["run", "--date", &recent]);
}

/// An unreachable speed layer: `skip` records skipped runs and exits 99,
/// `fail` exits 1; both name the host and never the password.
#[tokio::test]
async fn source_down_skips_with_99_or_fails_naming_the_host_only() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let uri = format!("mongodb://reader:s3cret-pw@127.0.0.1:{port}/?directConnection=true");
    let p = project(Serving::Sqlite).await;
    use_mongo(
        &p,
        &uri,
        "ledger",
        "connect_timeout = \"1s\"\non_unavailable = \"skip\"",
    );
    let out = p.expect(&["run", "--date", "2026-11-05"], 99);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    let runs = stdout(&p.ok(&["runs", "--json"]));
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for r in runs {
        assert_eq!(r["state"], "skipped", "{r}");
        assert!(r["error"].as_str().unwrap().contains("unavailable"), "{r}");
        assert!(!r["error"].as_str().unwrap().contains("s3cret"), "{r}");
    }
    p.set_config("on_unavailable = \"skip\"", "on_unavailable = \"fail\"");
    let out = p.expect(&["run", "--date", "2026-11-05"], 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("unavailable"), "{text}");
}
