//! Prints the consistent-hashing report: every algorithm side by side (lookup ns, peak/mean
//! load, standard deviation, keys moved on add and remove vs the ideal, memory per node).
//!
//! `cargo run --release -p benches --bin hashring-report -- --nodes 100 --nodes 1000 [--json]
//! [--svg PATH]`
//!
//! `--svg` also draws the lookup time and the peak-to-mean load as a chart
//! ([`benches::hashring::chart`]); `docs/hashring.svg` is such a chart.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Consistent hashing: every algorithm side by side")]
struct Args {
    /// Cluster sizes to measure (repeatable).
    #[arg(long = "nodes", default_values_t = [100usize, 1000])]
    nodes: Vec<usize>,
    /// Number of random u64 keys.
    #[arg(long, default_value_t = benches::hashring::KEYS_DEFAULT)]
    keys: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the chart (SVG) here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rows = benches::hashring::rows(&args.nodes, args.keys.max(1));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", benches::hashring::format_table(&rows));
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, benches::hashring::chart(&rows)?)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}
