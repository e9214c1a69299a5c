//! `cargo xtask soak [--minutes N]`: the reliability suite with fresh random seeds for about N minutes
//! (default 10), in release mode: chaos under injected faults and SIGKILLed worker processes, each on a
//! SQLite file and on PostgreSQL (`DUROXIDE_PG_URL`), and the core fuzzers with many more cases. Every seed is printed by the tests themselves, so a failure
//! names the seed that reproduces it (`DUROXIDE_CHAOS_SEED` / `DUROXIDE_CRASH_SEED`).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::step::workspace_root;
use crate::UsageError;

/// One timed run of a test binary.
struct Run {
    name: &'static str,
    package: &'static str,
    test: &'static str,
    /// Share of the total time (chaos and crash), or none (the fuzzers run a case count).
    share: Option<f64>,
}

const RUNS: &[Run] = &[
    Run {
        name: "chaos on a SQLite file (injected faults)",
        package: "duroxide-runtime",
        test: "chaos",
        share: Some(0.3),
    },
    Run {
        name: "chaos on PostgreSQL (injected faults)",
        package: "duroxide-runtime",
        test: "chaos_postgres",
        share: Some(0.25),
    },
    Run {
        name: "crash on a SQLite file (SIGKILLed processes)",
        package: "duroxide-runtime",
        test: "crash",
        share: Some(0.2),
    },
    Run {
        name: "crash on PostgreSQL (SIGKILLed processes)",
        package: "duroxide-runtime",
        test: "crash_postgres",
        share: Some(0.15),
    },
    Run {
        name: "fuzz (decoders, replay, turn driver)",
        package: "duroxide-core",
        test: "fuzz",
        share: None,
    },
];

/// Fuzz cases per minute of soak; at release speed this takes roughly a tenth of that minute.
const FUZZ_CASES_PER_MINUTE: u64 = 40_000;

fn parse_minutes(args: &[String]) -> anyhow::Result<f64> {
    match args {
        [] => Ok(10.0),
        [flag, value] if flag == "--minutes" => {
            let minutes: f64 = value
                .parse()
                .map_err(|_| UsageError(format!("`--minutes` needs a number, got `{value}`")))?;
            if minutes.is_finite() && minutes > 0.0 {
                Ok(minutes)
            } else {
                Err(UsageError(format!("`--minutes` must be positive, got `{value}`")).into())
            }
        }
        [flag] if flag == "--minutes" => Err(UsageError("`--minutes` needs a value".into()).into()),
        [other, ..] => Err(UsageError(format!("`soak` takes `--minutes N`, got `{other}`")).into()),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let minutes = parse_minutes(args)?;
    let root = workspace_root();
    let started = Instant::now();

    // Build first, so the time budget goes to running.
    eprintln!("==> soak: building the reliability tests (release)");
    let mut build = cargo();
    build.args(["test", "--release", "--no-run"]).current_dir(root);
    for run in RUNS {
        build.args(["-p", run.package, "--test", run.test]);
    }
    let status = build.status().context("could not start cargo")?;
    if !status.success() {
        bail!("building the reliability tests failed ({status})");
    }

    for (index, run) in RUNS.iter().enumerate() {
        let mut command = cargo();
        command
            .args([
                "test",
                "--release",
                "-p",
                run.package,
                "--test",
                run.test,
                "--",
                "--nocapture",
            ])
            .current_dir(root);
        let budget = match run.share {
            Some(share) => {
                let secs = ((minutes * 60.0 * share).round() as u64).max(1);
                command.env("DUROXIDE_SOAK_SECS", secs.to_string());
                format!("{secs} s of random seeds")
            }
            None => {
                let cases = ((minutes * FUZZ_CASES_PER_MINUTE as f64) as u64).max(1_000);
                command.env("DUROXIDE_FUZZ_CASES", cases.to_string());
                format!("{cases} cases per target")
            }
        };
        eprintln!("==> soak [{}/{}] {}: {budget}", index + 1, RUNS.len(), run.name);
        let status = command
            .status()
            .with_context(|| format!("could not start `{}`", run.name))?;
        if !status.success() {
            bail!(
                "soak step `{}` failed ({status}); the seed it printed last reproduces it",
                run.name
            );
        }
    }
    eprintln!(
        "==> xtask soak: all {} runs passed in {:.1?}",
        RUNS.len(),
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn minutes_default_and_parse() {
        assert_eq!(parse_minutes(&[]).unwrap(), 10.0);
        assert_eq!(parse_minutes(&args(&["--minutes", "2.5"])).unwrap(), 2.5);
        for bad in [
            &["--minutes"][..],
            &["--minutes", "x"],
            &["--minutes", "0"],
            &["--hours", "1"],
        ] {
            let err = parse_minutes(&args(bad)).unwrap_err();
            assert!(err.is::<UsageError>(), "{bad:?}: {err}");
        }
    }

    #[test]
    fn shares_leave_room_for_the_fuzzers() {
        let total: f64 = RUNS.iter().filter_map(|r| r.share).sum();
        assert!(total < 1.0);
    }
}
