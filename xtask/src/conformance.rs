//! `cargo xtask conformance <provider>`: the provider conformance suite against one backend.

use anyhow::bail;

use crate::step::{self, Step};
use crate::UsageError;

const SQLITE: &[Step] = &[Step::new(
    "sqlite conformance",
    &["cargo", "test", "-p", "duroxide-sqlite", "--test", "conformance"],
)];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [provider] if provider == "sqlite" => step::run_all("conformance sqlite", SQLITE),
        // Exiting non-zero matters: a placeholder that "passes" would read as a verified provider.
        [provider] if provider == "postgres" => {
            bail!("the PostgreSQL provider is not built yet; no conformance run happened")
        }
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
