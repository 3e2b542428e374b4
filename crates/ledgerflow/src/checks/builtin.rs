//! The checks a new project starts with (`ledgerflow init` writes them into
//! `checks/`): the reconciliations between the default models and their
//! inputs.

/// (file name, SQL) of each default check.
pub const CHECKS: [(&str, &str); 2] = [
    (
        "block_daily_metrics_counts_match_inputs.sql",
        include_str!("builtin/block_daily_metrics_counts_match_inputs.sql"),
    ),
    (
        "daily_metrics_match_user_activity.sql",
        include_str!("builtin/daily_metrics_match_user_activity.sql"),
    ),
];
