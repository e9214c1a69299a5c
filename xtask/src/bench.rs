//! `cargo xtask bench`: the criterion benchmarks whose figures the issues quote.

use crate::step::{self, Step};

const STEPS: &[Step] = &[
    // The replay bench builds its histories with the core's test harness, hence `testing`.
    Step::new(
        "core replay",
        &[
            "cargo",
            "bench",
            "-p",
            "duroxide-core",
            "--features",
            "testing",
            "--bench",
            "replay",
        ],
    ),
    Step::new(
        "sqlite provider cycle",
        &[
            "cargo",
            "bench",
            "-p",
            "duroxide-sqlite",
            "--bench",
            "provider_cycle",
        ],
    ),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::no_arguments("bench", args)?;
    step::run_all("bench", STEPS)
}
