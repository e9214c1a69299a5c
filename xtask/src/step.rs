//! Named commands run in order from the workspace root, stopping at the first failure.

use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Instant;

use anyhow::Context as _;

/// One named command of a pipeline. The first word of `command` is the program; `cargo` means the
/// cargo that launched xtask, so a pipeline never switches toolchains halfway through.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub command: &'static [&'static str],
}

impl Step {
    pub const fn new(name: &'static str, command: &'static [&'static str]) -> Self {
        Self { name, command }
    }

    fn run(&self, root: &Path) -> anyhow::Result<()> {
        let (program, args) = self
            .command
            .split_first()
            .context("a step needs a program to run")?;
        let mut cmd = if *program == "cargo" {
            // `cargo run` sets CARGO to the real toolchain binary; fall back to PATH when run otherwise.
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        } else {
            Command::new(program)
        };
        let status = cmd
            .args(args)
            .current_dir(root)
            .status()
            .with_context(|| format!("step `{}`: could not start `{program}`", self.name))?;
        if status.success() {
            Ok(())
        } else {
            Err(StepFailed { step: *self, status }.into())
        }
    }
}

/// A step's command ran and reported failure.
#[derive(Debug)]
pub struct StepFailed {
    step: Step,
    status: ExitStatus,
}

impl StepFailed {
    /// The code xtask should exit with: the command's own code when it had a usable one.
    pub fn exit_code(&self) -> u8 {
        match self.status.code() {
            Some(code @ 1..=255) => code as u8,
            // Killed by a signal, or a code that would wrap to 0 and read as success.
            _ => 1,
        }
    }
}

impl fmt::Display for StepFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step `{}` failed: `{}` ({})",
            self.step.name,
            self.step.command.join(" "),
            self.status
        )
    }
}

impl std::error::Error for StepFailed {}

/// The workspace root, which every step runs in whatever directory xtask was started from.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
}

/// Runs `steps` in order, printing each one's name first and a summary line at the end.
pub fn run_all(task: &str, steps: &[Step]) -> anyhow::Result<()> {
    let root = workspace_root();
    let started = Instant::now();
    for (index, step) in steps.iter().enumerate() {
        eprintln!(
            "==> [{}/{}] {}: {}",
            index + 1,
            steps.len(),
            step.name,
            step.command.join(" ")
        );
        if let Err(err) = step.run(root) {
            let passed: Vec<&str> = steps[..index].iter().map(|s| s.name).collect();
            eprintln!(
                "==> xtask {task}: FAILED at step {} of {} (`{}`) after {:.1?}; passed: {}",
                index + 1,
                steps.len(),
                step.name,
                started.elapsed(),
                if passed.is_empty() {
                    "none".to_owned()
                } else {
                    passed.join(", ")
                },
            );
            return Err(err);
        }
    }
    let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
    eprintln!(
        "==> xtask {task}: all {} steps passed ({}) in {:.1?}",
        steps.len(),
        names.join(", "),
        started.elapsed()
    );
    Ok(())
}
