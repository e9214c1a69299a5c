//! `cargo xtask <command>`: project automation for duroxide (checks, conformance runs, benchmarks).

mod bench;
mod conformance;
mod soak;
mod step;
mod test;

use std::fmt;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test                           fmt check, clippy (-D warnings), all tests: what CI runs
  conformance <sqlite|postgres>  run the provider conformance suite against one provider
  bench                          run the benchmarks: core replay, provider cycle, runtime and Python workloads
  soak [--minutes N]             chaos, crash and fuzz runs with random seeds for about N minutes (default 10)";

/// Bad command-line arguments; reported with the usage text and exit code 2, as getopt-style tools do.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("", &[][..]),
    };
    let result = match command {
        "test" => test::run(rest),
        "conformance" => conformance::run(rest),
        "bench" => bench::run(rest),
        "soak" => soak::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "" => Err(UsageError("no command given".to_owned()).into()),
        other => Err(UsageError(format!("unknown command `{other}`")).into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.is::<UsageError>() {
                eprintln!("\n{USAGE}");
                return ExitCode::from(2);
            }
            // A failed step exits with that step's own code so CI logs and scripts see what cargo said.
            let code = err
                .downcast_ref::<step::StepFailed>()
                .map_or(1, step::StepFailed::exit_code);
            ExitCode::from(code)
        }
    }
}

/// Fails with a usage error if a command that takes no arguments was given some.
fn no_arguments(command: &str, args: &[String]) -> anyhow::Result<()> {
    match args.first() {
        None => Ok(()),
        Some(arg) => Err(UsageError(format!("`{command}` takes no arguments, got `{arg}`")).into()),
    }
}
