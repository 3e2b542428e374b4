//! The default models of a new project (MISSION.md's seed tables).

/// (file name, SQL) of each default model.
pub const MODELS: [(&str, &str); 3] = [
    (
        "block_daily_metrics.sql",
        include_str!("builtin/block_daily_metrics.sql"),
    ),
    (
        "user_activity_agg.sql",
        include_str!("builtin/user_activity_agg.sql"),
    ),
    (
        "realtime_dashboard.sql",
        include_str!("builtin/realtime_dashboard.sql"),
    ),
];
