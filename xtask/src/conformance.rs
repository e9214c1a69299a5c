//! `cargo xtask conformance <provider>`: the provider conformance suite against one backend.

use crate::step::{self, Step};
use crate::UsageError;

const SQLITE: &[Step] = &[Step::new(
    "sqlite conformance",
    &["cargo", "test", "-p", "duroxide-sqlite", "--test", "conformance"],
)];

/// Reads `DUROXIDE_PG_URL` (default: the local server); fails with instructions when none answers.
const POSTGRES: &[Step] = &[Step::new(
    "postgres conformance",
    &[
        "cargo",
        "test",
        "-p",
        "duroxide-postgres",
        "--test",
        "conformance",
    ],
)];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [provider] if provider == "sqlite" => step::run_all("conformance sqlite", SQLITE),
        [provider] if provider == "postgres" => step::run_all("conformance postgres", POSTGRES),
        [provider] => Err(UsageError(format!(
            "unknown provider `{provider}` (expected sqlite or postgres)"
        ))
        .into()),
        [] => Err(UsageError("`conformance` needs a provider: sqlite or postgres".to_owned()).into()),
        [_, extra, ..] => {
            Err(UsageError(format!("`conformance` takes one provider, got also `{extra}`")).into())
        }
    }
}
