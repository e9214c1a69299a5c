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
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::no_arguments("test", args)?;
    step::run_all("test", STEPS)
}
