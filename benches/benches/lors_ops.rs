//! The `lors` client's benchmark: see `ibp_benches::lors_ops` (also run
//! as `ibp-bench lors`).

fn main() -> anyhow::Result<()> {
    ibp_benches::lors_ops::bench_main()
}
