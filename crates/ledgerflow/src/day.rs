//! UTC days: the grain of partitions, runs and the ledger.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};

/// 1970-01-01 as days from 0001-01-01 (chrono's day count): Arrow's Date32
/// counts from the former.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A day as Arrow's Date32: days since 1970-01-01.
pub fn epoch_days(day: NaiveDate) -> i32 {
    day.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

/// The day of a Date32 value (`None` out of chrono's range).
pub fn from_epoch_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}

/// Partition directory name of a day: `date=YYYY-MM-DD`.
pub fn partition_dir(day: NaiveDate) -> String {
    format!("date={}", day.format("%Y-%m-%d"))
}

/// `[start, end)` of a UTC day.
pub fn bounds(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"));
    let end = Utc.from_utc_datetime(
        &(day + Days::new(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists"),
    );
    (start, end)
}

/// Every day of the inclusive range `from..=to`.
pub fn range(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// The instant of a microsecond timestamp.
pub fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).expect("timestamp in range")
}

/// The UTC day a microsecond timestamp falls in.
pub fn of_micros(micros: i64) -> NaiveDate {
    at_micros(micros).date_naive()
}

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// A day of November 2026, the month the tests use.
#[cfg(test)]
pub(crate) fn nov(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, n).expect("a day of November")
}
