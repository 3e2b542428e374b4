//! Orchestration: `ledgerflow schedule` runs `[[jobs]]` on their cron
//! schedules, exactly once per (model, day) whatever happens to the
//! process; `ledgerflow status` reports on them.
//!
//! | module | job |
//! |---|---|
//! | `job` | a job's settings, tick -> day, SLA deadline, catch-up plan, retry delays (pure) |
//! | `clock` | system or simulated time (`LEDGERFLOW_CLOCK`) |
//! | `store` | ticks, alerts and gaps in `ledgerflow_schedule` (serving database) |
//! | `leader` | one leader per serving database (advisory lock / lock file) |
//! | `alert` | SLA webhook delivery with backoff |
//! | `scheduler` | the leader loop, retries, shutdown |
//! | `status` | `ledgerflow status` |

pub mod alert;
pub mod clock;
pub mod job;
pub mod leader;
pub mod scheduler;
pub mod status;
pub mod store;

pub use scheduler::{serve, ScheduleOptions, ScheduleSummary};
