//! Deterministic composition of orchestration futures: join and select over any number of them.
//!
//! Both poll a child only when it was woken (or on the first poll), so the cost of delivering one
//! completion does not grow with the number of children: a join of 100,000 activities replays in
//! linear time. Each child gets its own waker that records its index; nothing depends on an outside
//! executor re-polling everything.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Either of two values: the result of [`select2`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Indices of children woken since the last poll, plus the waker of whoever polls the combinator.
#[derive(Debug, Default)]
struct WokenSet {
    inner: Mutex<WokenInner>,
}

#[derive(Debug, Default)]
struct WokenInner {
    indices: Vec<usize>,
    parent: Option<Waker>,
}

struct ChildWaker {
    index: usize,
    set: Arc<WokenSet>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parent = {
            let mut inner = self.set.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.indices.push(self.index);
            inner.parent.clone()
        };
        if let Some(parent) = parent {
            parent.wake();
        }
    }
}

/// The children of a join or select, polled only when woken.
struct Children<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    wakers: Vec<Waker>,
    woken: Arc<WokenSet>,
    first_poll: bool,
}

impl<F: Future> Children<F> {
    fn new(futures: Vec<F>) -> Self {
        let woken = Arc::new(WokenSet::default());
        let wakers = (0..futures.len())
            .map(|index| {
                Waker::from(Arc::new(ChildWaker {
                    index,
                    set: woken.clone(),
                }))
            })
            .collect();
        Children {
            futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
            wakers,
            woken,
            first_poll: true,
        }
    }

    /// Indices to poll now: all of them the first time, then those woken since, in wake order.
    fn due(&mut self, cx: &Context<'_>) -> Vec<usize> {
        let mut inner = self.woken.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.parent.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            inner.parent = Some(cx.waker().clone());
        }
        if std::mem::take(&mut self.first_poll) {
            inner.indices.clear();
            return (0..self.futures.len()).collect();
        }
        std::mem::take(&mut inner.indices)
    }

    /// Polls child `i` if it is still running.
    fn poll_child(&mut self, i: usize) -> Option<F::Output> {
        let fut = self.futures.get_mut(i)?.as_mut()?;
        let mut cx = Context::from_waker(&self.wakers[i]);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => {
                self.futures[i] = None;
                Some(out)
            }
            Poll::Pending => None,
        }
    }
}

/// Waits for all futures; outputs in input order. See [`join`].
#[must_use = "futures do nothing unless awaited"]
pub struct JoinAll<F: Future> {
    children: Children<F>,
    outputs: Vec<Option<F::Output>>,
    remaining: usize,
}

impl<F: Future> std::fmt::Debug for JoinAll<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinAll")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let due = this.children.due(cx);
            if due.is_empty() {
                break;
            }
            for i in due {
                if let Some(out) = this.children.poll_child(i) {
                    this.outputs[i] = Some(out);
                    this.remaining -= 1;
                }
            }
        }
        if this.remaining == 0 {
            let outputs = std::mem::take(&mut this.outputs);
            return Poll::Ready(
                outputs
                    .into_iter()
                    .map(|o| o.expect("every child finished"))
                    .collect(),
            );
        }
        Poll::Pending
    }
}

/// Waits for every future and returns their outputs in input order (any number, including zero).
pub fn join<F: Future>(futures: Vec<F>) -> JoinAll<F> {
    let n = futures.len();
    JoinAll {
        children: Children::new(futures),
        outputs: (0..n).map(|_| None).collect(),
        remaining: n,
    }
}

/// Waits for the first future to finish and returns its index and output. See [`select`].
#[must_use = "futures do nothing unless awaited"]
pub struct SelectAll<F: Future> {
    children: Children<F>,
}

impl<F: Future> std::fmt::Debug for SelectAll<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectAll")
            .field("children", &self.children.futures.len())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Unpin for SelectAll<F> {}

impl<F: Future> Future for SelectAll<F> {
    type Output = (usize, F::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let due = this.children.due(cx);
            if due.is_empty() {
                return Poll::Pending;
            }
            for i in due {
                if let Some(out) = this.children.poll_child(i) {
                    // Dropping the losers cancels what they were waiting for (activities, children).
                    this.children.futures.clear();
                    return Poll::Ready((i, out));
                }
            }
        }
    }
}

/// Waits for the first of the futures to finish (lowest index wins a tie) and returns its index and
/// output; the others are dropped, which cancels their activities and sub-orchestrations.
///
/// # Panics
/// Selecting over no futures would wait forever; it panics instead.
pub fn select<F: Future>(futures: Vec<F>) -> SelectAll<F> {
    assert!(!futures.is_empty(), "select needs at least one future");
    SelectAll {
        children: Children::new(futures),
    }
}

/// Waits for two futures of different types.
pub async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let out = join(vec![Either2::Left(Box::pin(a)), Either2::Right(Box::pin(b))]).await;
    let mut it = out.into_iter();
    match (it.next(), it.next()) {
        (Some(Either::Left(a)), Some(Either::Right(b))) => (a, b),
        _ => unreachable!("join keeps input order"),
    }
}

/// Waits for the first of two futures of different types; the loser is dropped (cancelled).
pub async fn select2<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    select(vec![Either2::Left(Box::pin(a)), Either2::Right(Box::pin(b))])
        .await
        .1
}

/// Adapts two future types to one so the N-way combinators can hold them.
enum Either2<A, B> {
    Left(Pin<Box<A>>),
    Right(Pin<Box<B>>),
}

impl<A: Future, B: Future> Future for Either2<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Either2::Left(a) => a.as_mut().poll(cx).map(Either::Left),
            Either2::Right(b) => b.as_mut().poll(cx).map(Either::Right),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn join_of_nothing_is_ready() {
        let mut j = join(Vec::<std::future::Ready<u8>>::new());
        assert_eq!(Pin::new(&mut j).poll(&mut noop_cx()), Poll::Ready(vec![]));
    }

    #[test]
    fn join_and_select_of_ready_futures() {
        let mut j = join((0..5).map(std::future::ready).collect());
        assert_eq!(
            Pin::new(&mut j).poll(&mut noop_cx()),
            Poll::Ready(vec![0, 1, 2, 3, 4])
        );
        let futures: Vec<Pin<Box<dyn Future<Output = i32>>>> = vec![
            Box::pin(std::future::pending()),
            Box::pin(std::future::ready(7)),
            Box::pin(std::future::ready(8)),
        ];
        let mut s = select(futures);
        assert_eq!(Pin::new(&mut s).poll(&mut noop_cx()), Poll::Ready((1, 7)));
    }
}
