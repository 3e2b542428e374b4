//! `explain`: a model's plan for a day, writing nothing.

use std::path::Path;

use chrono::NaiveDate;
use ledgerflow::runner::Runner;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The model.
    pub model: String,
    /// The day whose inputs it is planned over.
    #[arg(long)]
    pub date: NaiveDate,
    /// Run the query (here; nothing is written) and show each operator's
    /// rows, time, memory and spills.
    #[arg(long)]
    pub analyze: bool,
    /// Every plan the optimizer went through, not only the final ones
    /// (DataFusion's EXPLAIN VERBOSE).
    #[arg(long)]
    pub all_plans: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn explain(config: &Path, args: ExplainArgs) -> anyhow::Result<u8> {
    let runner = Runner::open_read_only(crate::commands::load(config)?).await?;
    let e = runner
        .explain(&args.model, args.date, args.all_plans, args.analyze)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(0);
    }
    println!(
        "{} for {} (inputs from the {} layer)",
        e.model, e.day, e.layer
    );
    for (kind, plan) in &e.plans {
        println!("\n{kind}:\n{plan}");
    }
    Ok(0)
}
