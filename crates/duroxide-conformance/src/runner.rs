//! Running checks: the registry entry, outcomes and reports, `run_all`, and the blocking entry point
//! behind `conformance_tests!`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use duroxide_core::provider::ProviderError;

use crate::factory::ProviderFactory;

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The provider broke the contract (or failed a call it should have served).
    Failed(String),
    /// The check does not apply to this provider (a capability it lacks).
    Skipped(String),
}

impl CheckError {
    pub fn failed(message: impl Into<String>) -> Self {
        CheckError::Failed(message.into())
    }
    pub fn skipped(reason: impl Into<String>) -> Self {
        CheckError::Skipped(reason.into())
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Failed(m) => write!(f, "failed: {m}"),
            CheckError::Skipped(r) => write!(f, "skipped: {r}"),
        }
    }
}

impl std::error::Error for CheckError {}

impl From<ProviderError> for CheckError {
    /// A provider call that should have succeeded but failed; `?` records where.
    #[track_caller]
    fn from(e: ProviderError) -> Self {
        let at = Location::caller();
        CheckError::Failed(format!(
            "unexpected provider error: {e} (at {}:{})",
            at.file(),
            at.line()
        ))
    }
}

/// What every check returns.
pub type CheckResult = Result<(), CheckError>;

/// A boxed, running check.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// A check as stored in the registry.
pub type CheckFn = for<'a> fn(&'a dyn ProviderFactory) -> CheckFuture<'a>;

/// One entry of [`checks`](crate::checks()).
#[derive(Clone, Copy)]
pub struct Check {
    /// The category (module) the check belongs to, e.g. `peek_lock`.
    pub category: &'static str,
    /// The check's function name, e.g. `abandoned_messages_are_fetched_again`.
    pub name: &'static str,
    /// Source of the category module; the doc comment is read from it so it cannot drift.
    pub(crate) source: &'static str,
    pub run: CheckFn,
}

impl Check {
    /// `category::name`, the id used in reports and by `conformance_tests!`.
    pub fn id(&self) -> String {
        format!("{}::{}", self.category, self.name)
    }

    /// What the check proves: its doc comment, read from the source of its module.
    pub fn doc(&self) -> String {
        doc_comment_of(self.source, self.name).unwrap_or_default()
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("category", &self.category)
            .field("name", &self.name)
            .finish()
    }
}

/// The `///` lines directly above `pub async fn <name>(`, joined into one paragraph.
pub(crate) fn doc_comment_of(source: &str, name: &str) -> Option<String> {
    let signature = format!("pub async fn {name}(");
    let lines: Vec<&str> = source.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&signature))?;
    let mut doc = Vec::new();
    for line in lines[..at].iter().rev() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
        } else if line.starts_with("#[") {
            continue;
        } else {
            break;
        }
    }
    doc.reverse();
    let text = doc.join(" ").trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The outcome of one check with its id and duration.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub id: String,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// The outcomes of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<CheckReport>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count()
    }
    pub fn skipped(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .count()
    }
    /// The failed checks, with their messages.
    pub fn failures(&self) -> Vec<&CheckReport> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect()
    }
    /// Panics listing every failure by name, so one run shows all of them.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.failures().is_empty() {
            panic!("{self}");
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failures = self.failures();
        writeln!(
            f,
            "conformance: {} passed, {} failed, {} skipped",
            self.passed(),
            failures.len(),
            self.skipped()
        )?;
        for r in failures {
            if let Outcome::Failed(message) = &r.outcome {
                writeln!(f, "FAILED {}: {message}", r.id)?;
            }
        }
        Ok(())
    }
}

/// A check that takes this long has hung (a fetch that never returns, a deadlock): fail it rather than
/// the whole run.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one check on a fresh provider from `factory`; panics and hangs become failures.
pub async fn run_check(factory: &dyn ProviderFactory, check: &Check) -> Outcome {
    let guarded = CatchUnwind(Box::pin((check.run)(factory)));
    match tokio::time::timeout(CHECK_TIMEOUT, guarded).await {
        Err(_) => Outcome::Failed(format!("did not finish within {CHECK_TIMEOUT:?}")),
        Ok(Err(panic)) => Outcome::Failed(format!("panicked: {}", panic_message(&*panic))),
        Ok(Ok(Ok(()))) => Outcome::Passed,
        Ok(Ok(Err(CheckError::Failed(m)))) => Outcome::Failed(m),
        Ok(Ok(Err(CheckError::Skipped(r)))) => Outcome::Skipped(r),
    }
}

/// Runs every check, one after another, and reports all outcomes (a failure does not stop the run).
pub async fn run_all(factory: &dyn ProviderFactory) -> Report {
    run_matching(factory, |_| true).await
}

/// Runs the checks `select` accepts (e.g. one category), in registry order.
pub async fn run_matching(factory: &dyn ProviderFactory, select: impl Fn(&Check) -> bool) -> Report {
    let mut report = Report::default();
    for check in crate::checks().iter().filter(|c| select(c)) {
        let started = Instant::now();
        let outcome = run_check(factory, check).await;
        report.results.push(CheckReport {
            id: check.id(),
            outcome,
            elapsed: started.elapsed(),
        });
    }
    report
}

/// The body of each test that `conformance_tests!` generates: builds a runtime, makes the factory
/// inside it, runs the check with id `category::name` and panics with the failure message.
#[doc(hidden)]
pub fn run_test<F: ProviderFactory>(id: &str, make_factory: impl FnOnce() -> F) {
    let check = crate::checks()
        .into_iter()
        .find(|c| c.id() == id)
        .unwrap_or_else(|| panic!("no conformance check named {id}"));
    // Multi-threaded, because several checks prove exclusivity with truly concurrent fetchers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime for the conformance check");
    let outcome = runtime.block_on(async move {
        let factory = make_factory();
        run_check(&factory, &check).await
    });
    match outcome {
        Outcome::Passed => {}
        Outcome::Skipped(reason) => eprintln!("conformance check {id} skipped: {reason}"),
        Outcome::Failed(message) => panic!(
            "conformance check {id} failed: {message}\n  it proves: {}",
            check.doc()
        ),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Turns a panic while polling the check into an error, so `run_all` reports it and carries on.
struct CatchUnwind<'a>(CheckFuture<'a>);

impl Future for CatchUnwind<'_> {
    type Output = Result<CheckResult, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A check that panicked is never polled again, so a broken invariant inside it cannot leak.
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comment_is_read_from_the_lines_above_the_function() {
        let src = "//! m\n\n/// Proves one thing\n/// and another.\n#[allow(x)]\npub async fn a(f: X) {}\n\n\
                   pub async fn b(f: X) {}\n";
        assert_eq!(
            doc_comment_of(src, "a").as_deref(),
            Some("Proves one thing and another.")
        );
        assert_eq!(doc_comment_of(src, "b"), None);
        assert_eq!(doc_comment_of(src, "c"), None);
    }
}
