//! A simulated host: runs orchestrations to completion in memory by carrying out their actions.
//!
//! It stores what a provider would (histories per execution, queues, KV, custom status), drives every
//! turn through [`crate::turn::process_item`] exactly as the runtime does, runs activities with
//! registered closures, and keeps a virtual clock that jumps to the next timer when nothing else can
//! run. A seed makes it deliver completions in a shuffled (but causally valid) order and batching.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::codec;
use crate::engine::{LogRecord, ReplayEngine};
use crate::history::Event;
use crate::message::{ActivityWork, OrchestratorMessage};
use crate::provider::{
    CustomStatus, CustomStatusChange, ExecutionStatus, HistoryRecord, InstanceInfo, InstanceStatus, KvChange,
    KvEntry, NewMessage, OrchestrationItem, StoredMessage, TurnAck,
};
use crate::registry::OrchestrationRegistry;
use crate::turn::{process_item, TurnDecision, TurnOptions};

/// An activity implementation for the simulated host.
pub type SimActivity = Arc<dyn Fn(&ActivityWork) -> Result<String, String> + Send + Sync>;

/// One stored instance.
#[derive(Debug, Clone)]
pub struct SimInstance {
    pub info: InstanceInfo,
    /// History per execution (index 0 = execution 1).
    pub executions: Vec<Vec<HistoryRecord>>,
    pub queue: Vec<(u64, String)>,
    pub kv: BTreeMap<String, KvEntry>,
    pub kv_snapshot: Vec<KvEntry>,
    pub custom_status: CustomStatus,
    pub attempts: u32,
}

/// Final state of an instance as a client would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResult {
    pub status: InstanceStatus,
    pub output: Option<String>,
}

/// Runs orchestrations without a database. See the module documentation.
pub struct SimHost {
    registry: OrchestrationRegistry,
    activities: HashMap<String, SimActivity>,
    instances: BTreeMap<String, SimInstance>,
    work: VecDeque<ActivityWork>,
    cache: HashMap<String, ReplayEngine>,
    use_cache: bool,
    now_ms: u64,
    rng: u64,
    shuffle: bool,
    activities_first: bool,
    /// Activity executions in the order they ran: (instance, activity name).
    pub activity_log: Vec<(String, String)>,
    pub logs: Vec<LogRecord>,
    pub max_attempts: u32,
    /// Turns run so far.
    pub turns: u64,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost")
            .field("now_ms", &self.now_ms)
            .field("instances", &self.instances.len())
            .finish()
    }
}

impl SimHost {
    pub fn new(registry: OrchestrationRegistry) -> Self {
        SimHost {
            registry,
            activities: HashMap::new(),
            instances: BTreeMap::new(),
            work: VecDeque::new(),
            cache: HashMap::new(),
            use_cache: true,
            now_ms: 1_000_000,
            rng: 0x5EED,
            shuffle: false,
            activities_first: false,
            activity_log: Vec::new(),
            logs: Vec::new(),
            max_attempts: 10,
            turns: 0,
        }
    }

    /// Registers an activity implementation.
    pub fn activity(
        mut self,
        name: &str,
        f: impl Fn(&ActivityWork) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.activities.insert(name.to_string(), Arc::new(f));
        self
    }

    /// Delivers completions in an order and batching drawn from `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.rng = seed | 1;
        self.shuffle = true;
        self
    }

    /// Runs every ready activity before the next turn, so completions arrive in large batches.
    pub fn activities_first(mut self) -> Self {
        self.activities_first = true;
        self
    }

    /// Replays every turn from history instead of reusing engines (exercises full replay).
    pub fn without_cache(mut self) -> Self {
        self.use_cache = false;
        self
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Starts an instance as a client would.
    pub fn start(&mut self, instance_id: &str, name: &str, input: &str) {
        let start = OrchestratorMessage::StartOrchestration {
            name: name.to_string(),
            version: None,
            input: input.to_string(),
            parent: None,
        };
        self.create(instance_id, name, None, codec::encode_message(&start));
    }

    fn create(&mut self, instance_id: &str, name: &str, parent: Option<String>, payload: String) {
        if self.instances.contains_key(instance_id) {
            return;
        }
        let info = InstanceInfo {
            instance_id: instance_id.to_string(),
            name: name.to_string(),
            version: None,
            current_execution_id: 1,
            status: InstanceStatus::Running,
            output: None,
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            parent_instance_id: parent,
        };
        let instance = SimInstance {
            info,
            executions: vec![Vec::new()],
            queue: vec![(0, payload)],
            kv: BTreeMap::new(),
            kv_snapshot: Vec::new(),
            custom_status: CustomStatus::default(),
            attempts: 0,
        };
        self.instances.insert(instance_id.to_string(), instance);
    }

    /// Raises an external event (the instance must exist).
    pub fn raise_event(&mut self, instance_id: &str, name: &str, data: &str) {
        self.send(
            instance_id,
            &OrchestratorMessage::ExternalEvent {
                name: name.into(),
                data: data.into(),
            },
        );
    }

    /// Enqueues a queue message (the instance must exist).
    pub fn enqueue_event(&mut self, instance_id: &str, queue: &str, data: &str) {
        self.send(
            instance_id,
            &OrchestratorMessage::QueueMessage {
                queue: queue.into(),
                data: data.into(),
            },
        );
    }

    /// Requests cancellation (the instance must exist).
    pub fn cancel(&mut self, instance_id: &str, reason: &str) {
        self.send(
            instance_id,
            &OrchestratorMessage::CancelRequested {
                reason: reason.into(),
            },
        );
    }

    /// Writes a raw stored message (tests of corrupt data).
    pub fn send_raw(&mut self, instance_id: &str, payload: &str) {
        if let Some(i) = self.instances.get_mut(instance_id) {
            i.queue.push((0, payload.to_string()));
        }
    }

    fn send(&mut self, instance_id: &str, message: &OrchestratorMessage) {
        self.send_raw(instance_id, &codec::encode_message(message));
    }

    pub fn instance(&self, instance_id: &str) -> Option<&SimInstance> {
        self.instances.get(instance_id)
    }

    pub fn instance_mut(&mut self, instance_id: &str) -> Option<&mut SimInstance> {
        self.instances.get_mut(instance_id)
    }

    pub fn instance_ids(&self) -> Vec<String> {
        self.instances.keys().cloned().collect()
    }

    /// The client's view of an instance.
    pub fn result(&self, instance_id: &str) -> Option<SimResult> {
        self.instances.get(instance_id).map(|i| SimResult {
            status: i.info.status,
            output: i.info.output.clone(),
        })
    }

    /// Decoded history of the current execution.
    pub fn history(&self, instance_id: &str) -> Vec<Event> {
        self.execution_history(
            instance_id,
            self.instances
                .get(instance_id)
                .map_or(1, |i| i.executions.len() as u64),
        )
    }

    /// Decoded history of one execution (1-based).
    pub fn execution_history(&self, instance_id: &str, execution_id: u64) -> Vec<Event> {
        let Some(i) = self.instances.get(instance_id) else {
            return Vec::new();
        };
        let Some(records) = i.executions.get(execution_id as usize - 1) else {
            return Vec::new();
        };
        codec::decode_history(records).expect("the simulated host only stores what the engine produced")
    }

    /// Runs until nothing can happen without outside input or the step budget runs out; timers make
    /// the virtual clock jump. Returns the number of steps taken.
    pub fn run(&mut self, max_steps: usize) -> usize {
        for step in 0..max_steps {
            if !self.step() {
                return step;
            }
        }
        max_steps
    }

    /// Runs until idle (up to a million steps) and returns the instance's result.
    pub fn run_to_completion(&mut self, instance_id: &str) -> SimResult {
        self.run(1_000_000);
        self.result(instance_id).expect("instance exists")
    }

    /// One step: a turn of some instance with visible messages, else one activity, else advance the
    /// clock to the next timer. Returns false when nothing can happen.
    pub fn step(&mut self) -> bool {
        let runnable: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.queue.iter().any(|(at, _)| *at <= self.now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        let run_activity_first =
            !self.work.is_empty() && (self.activities_first || (self.shuffle && self.random() % 2 == 0));
        if !runnable.is_empty() && !run_activity_first {
            let pick = if self.shuffle {
                (self.random() as usize) % runnable.len()
            } else {
                0
            };
            self.turn(&runnable[pick]);
            return true;
        }
        if !self.work.is_empty() {
            let pick = if self.shuffle {
                (self.random() as usize) % self.work.len()
            } else {
                0
            };
            let work = if self.shuffle {
                self.work.swap_remove_back(pick)
            } else {
                self.work.pop_front()
            };
            let Some(work) = work else { return false };
            self.run_activity(work);
            return true;
        }
        let next_timer = self
            .instances
            .values()
            .flat_map(|i| i.queue.iter().map(|(at, _)| *at))
            .min();
        match next_timer {
            Some(at) if at > self.now_ms => {
                self.now_ms = at;
                true
            }
            _ => false,
        }
    }

    fn run_activity(&mut self, work: ActivityWork) {
        self.activity_log
            .push((work.instance_id.clone(), work.name.clone()));
        let result = match self.activities.get(&work.name) {
            Some(f) => f(&work).map_err(crate::error::ErrorDetails::application),
            None => Err(crate::error::ErrorDetails::new(
                crate::error::ErrorKind::Configuration,
                format!("activity {:?} is not registered", work.name),
            )),
        };
        let completion = work.completion(result);
        if let Some(i) = self.instances.get_mut(&work.instance_id) {
            i.queue.push((0, codec::encode_message(&completion)));
        }
    }

    /// Runs one turn of `instance_id` over its visible messages.
    pub fn turn(&mut self, instance_id: &str) {
        self.turns += 1;
        let now = self.now_ms;
        let entropy = self.random();
        let Some(inst) = self.instances.get_mut(instance_id) else {
            return;
        };
        // Shuffled hosts sometimes deliver only a prefix of the visible messages (smaller batches).
        let visible: Vec<usize> = inst
            .queue
            .iter()
            .enumerate()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(i, _)| i)
            .collect();
        // A prefix models messages that arrived after the fetch. A start message for the next
        // execution is never among those: it was committed by the previous turn, before anything
        // behind it could be fetched, so a real provider always returns it with the rest.
        let has_start = visible.iter().any(|&i| {
            matches!(
                codec::decode_message(&inst.queue[i].1),
                Ok(OrchestratorMessage::StartOrchestration { .. }
                    | OrchestratorMessage::ContinueAsNew { .. })
            )
        });
        let take = if self.shuffle && visible.len() > 1 && !has_start {
            1 + (entropy as usize % visible.len())
        } else {
            visible.len()
        };
        let taken: Vec<usize> = visible.into_iter().take(take).collect();
        let taken_set: std::collections::HashSet<usize> = taken.iter().copied().collect();
        inst.attempts += 1;
        let item = OrchestrationItem {
            instance_id: instance_id.to_string(),
            lock_token: "sim".into(),
            attempt: inst.attempts,
            instance: inst.info.clone(),
            history: inst.executions.last().cloned().unwrap_or_default(),
            messages: taken
                .iter()
                .map(|&i| StoredMessage {
                    payload: inst.queue[i].1.clone(),
                })
                .collect(),
            kv_snapshot: inst.kv_snapshot.clone(),
            custom_status: inst.custom_status.clone(),
        };
        let cached = if self.use_cache {
            self.cache.remove(instance_id)
        } else {
            None
        };
        let options = TurnOptions {
            now_ms: now,
            entropy,
            max_attempts: self.max_attempts,
        };
        match process_item(&item, &self.registry, cached, &options) {
            TurnDecision::Ack { ack, engine, report } => {
                self.logs.extend(report.logs);
                if let Some(engine) = engine {
                    self.cache.insert(instance_id.to_string(), engine);
                }
                let inst = self.instances.get_mut(instance_id).expect("exists");
                inst.attempts = 0;
                let mut i = 0;
                inst.queue.retain(|_| {
                    let keep = !taken_set.contains(&i);
                    i += 1;
                    keep
                });
                self.apply(instance_id, *ack);
            }
            TurnDecision::Abandon { delay, .. } => {
                let inst = self.instances.get_mut(instance_id).expect("exists");
                for &i in &taken {
                    inst.queue[i].0 = now + delay.as_millis() as u64;
                }
            }
        }
    }

    /// Applies an ack the way the provider contract says.
    fn apply(&mut self, instance_id: &str, ack: TurnAck) {
        let now = self.now_ms;
        let inst = self.instances.get_mut(instance_id).expect("exists");
        if ack.execution_id > inst.info.current_execution_id {
            inst.executions.push(Vec::new());
            inst.info.current_execution_id = ack.execution_id;
            inst.kv_snapshot = inst.kv.values().cloned().collect();
        }
        inst.executions
            .last_mut()
            .expect("one execution")
            .extend(ack.history);
        if let Some(status) = ack.status {
            inst.info.status = status.instance_status();
            if status != ExecutionStatus::ContinuedAsNew {
                inst.info.output = ack.output;
            }
        }
        if let Some(name) = ack.name {
            inst.info.name = name;
        }
        if ack.version.is_some() {
            inst.info.version = ack.version;
        }
        inst.info.updated_at_ms = now;
        if let CustomStatusChange::Set(status) = ack.custom_status {
            inst.custom_status.status = status;
            inst.custom_status.version += 1;
        }
        for change in ack.kv_changes {
            match change {
                KvChange::Set {
                    key,
                    value,
                    updated_at_ms,
                } => {
                    inst.kv.insert(
                        key.clone(),
                        KvEntry {
                            key,
                            value,
                            updated_at_ms,
                        },
                    );
                }
                KvChange::Delete { key } => {
                    inst.kv.remove(&key);
                }
            }
        }
        for item in ack.worker_items {
            self.work
                .push_back(codec::decode_activity(&item.payload).expect("engine-made payload"));
        }
        for cancel in ack.cancel_activities {
            self.work.retain(|w| {
                !(w.instance_id == cancel.instance_id
                    && w.execution_id == cancel.execution_id
                    && w.event_id == cancel.event_id)
            });
        }
        let mut pending: VecDeque<NewMessage> = ack.messages.into();
        while let Some(m) = pending.pop_front() {
            let at = m.visible_at_ms.unwrap_or(0);
            match (&m.creates, self.instances.get_mut(&m.instance_id)) {
                (Some(_), Some(_)) => {}
                (Some(c), None) => {
                    let (name, parent) = (c.name.clone(), c.parent_instance_id.clone());
                    self.create(&m.instance_id, &name, parent, m.payload);
                    if let Some(i) = self.instances.get_mut(&m.instance_id) {
                        i.queue[0].0 = at;
                    }
                }
                (None, Some(target)) => target.queue.push((at, m.payload)),
                (None, None) => {}
            }
        }
    }
}
