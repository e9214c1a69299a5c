//! `cargo xtask test`: everything CI checks, in order of cost, so cheap failures come first.

use crate::step::{self, Step};

/// Later stages (pytest, PostgreSQL) are one more entry each.
const STEPS: &[Step] = &[
    Step::new("fmt", &["cargo", "fmt", "--all", "--", "--check"]),
    Step::new(
        "clippy",
        &[
            "cargo",
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ),
    // Includes doc tests and the tidy test (xtask/tests/tidy.rs).
    Step::new("tests", &["cargo", "test", "--workspace"]),
    // The README's first command, and the other examples: each must run to completion.
    Step::new(
        "example hello_world",
        &["cargo", "run", "--quiet", "--example", "hello_world"],
    ),
    Step::new(
        "example fan_out",
        &["cargo", "run", "--quiet", "--example", "fan_out"],
    ),
    Step::new(
        "example timers_and_events",
        &["cargo", "run", "--quiet", "--example", "timers_and_events"],
    ),
    Step::new(
        "example continue_as_new",
        &["cargo", "run", "--quiet", "--example", "continue_as_new"],
    ),
    // Builds the Python package into <repo>/.venv (installing maturin and pytest there) and runs
    // its pytest suite on every backend.
    Step::new("python", &["bash", "crates/duroxide-py/run_tests.sh"]),
    // The test schemas' dead catalog rows, which a server without autovacuum keeps forever.
    Step::new("postgres catalogs", &["bash", "xtask/pg_vacuum_catalogs.sh"]),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::no_arguments("test", args)?;
    step::run_all("test", STEPS)
}
