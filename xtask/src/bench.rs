//! `cargo xtask bench`: the benchmarks whose figures the issues quote (core replay, SQLite provider
//! cycle, runtime workloads on in-memory SQLite, file SQLite and PostgreSQL with `pgbench -N` as the
//! physical reference, the PostgreSQL ceilings of the Python figures (the least SQL those workloads
//! need, run by pgbench alone), and the Python workloads). Each prints JSON lines.

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
    // Runtime workloads (hello latency, chain3, fan-out, timers, 10,000 waiting) with no argument run
    // in memory and on a file.
    Step::new(
        "runtime workloads (sqlite)",
        &["cargo", "bench", "-p", "duroxide-runtime", "--bench", "workloads"],
    ),
    Step::new("pgbench -N reference", &["bash", "xtask/pgbench_reference.sh"]),
    Step::new(
        "postgres ceilings (pgbench alone)",
        &["bash", "xtask/pg_ceilings.sh"],
    ),
    Step::new(
        "runtime workloads (postgres)",
        &[
            "cargo",
            "bench",
            "-p",
            "duroxide-runtime",
            "--bench",
            "workloads",
            "--",
            "pg",
        ],
    ),
    // The same with the runtime in a child process: cross-process latency and the idle load.
    Step::new(
        "runtime workloads (postgres, across processes)",
        &[
            "cargo",
            "bench",
            "-p",
            "duroxide-runtime",
            "--bench",
            "workloads",
            "--",
            "pg-xproc",
        ],
    ),
    Step::new("python workloads", &["bash", "crates/duroxide-py/run_bench.sh"]),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::no_arguments("bench", args)?;
    step::run_all("bench", STEPS)
}
