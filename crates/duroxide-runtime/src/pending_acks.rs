//! A dispatcher slot's commits still in flight: the slot goes on to its next item while they run.
//!
//! Why: on a database server an ack's round trip and commit take about as long as running a short
//! activity or turn, and a slot that waited for each one spent much of its time waiting (Python
//! fan-out on PostgreSQL: +25-35% activities/s once worker slots stopped waiting). What a commit
//! does once it answers (caching, notifying waiters) is part of its future, so nothing else needs to
//! wait for it; an instance stays locked until its turn's ack commits, so its next turn cannot start
//! early.

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinSet;

use crate::cancel::CancelSignal;

/// The commit of a processed item, still to be awaited.
pub(crate) type PendingAck = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many of a slot's acks may be outstanding when it takes its next item.
const MAX_IN_FLIGHT: usize = 4;

/// The acks of one slot, each on a task of its own.
#[derive(Default)]
pub(crate) struct PendingAcks {
    tasks: JoinSet<()>,
}

impl PendingAcks {
    /// Forgets the acks that finished, and waits while [`MAX_IN_FLIGHT`] are still running.
    pub(crate) async fn make_room(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= MAX_IN_FLIGHT {
            self.tasks.join_next().await;
        }
    }

    pub(crate) fn push(&mut self, ack: PendingAck) {
        self.tasks.spawn(ack);
    }

    /// Waits for every ack, until `hard_stop`: then the rest are dropped, and their items are
    /// fetched again once their locks expire (activities run at least once; a turn runs again from
    /// the stored history).
    pub(crate) async fn finish(mut self, hard_stop: &CancelSignal) {
        tokio::select! {
            () = async { while self.tasks.join_next().await.is_some() {} } => {}
            () = hard_stop.cancelled() => self.tasks.abort_all(),
        }
    }
}
