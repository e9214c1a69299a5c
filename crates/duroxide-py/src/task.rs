//! Task descriptors: what orchestration code yields. A task is plain data until it is yielded; the
//! driver then turns it into the engine's durable futures (so creation order on the Python side never
//! matters, and a task that is never yielded schedules nothing).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use duroxide_core::context::SYSCALL_GET_KV_VALUE;
use duroxide_core::{ActivityOptions, ErrorDetails, OrchestrationContext, RetryPolicy};
use pyo3::prelude::*;

use crate::errors;

/// What one task resolves to, before it is converted to a Python value.
#[derive(Debug)]
pub enum Value {
    /// JSON text (decoded leniently: text that is not JSON arrives as a string).
    Json(String),
    Str(String),
    Int(u64),
    None,
    /// `all`: one outcome per task, in input order.
    List(Vec<Outcome>),
    /// `race`: the index of the winner and its value.
    Race(usize, Box<Value>),
}

/// Why a task failed: which kind of work, its name, and the recorded error.
#[derive(Debug)]
pub struct Failure {
    pub source: &'static str,
    pub name: String,
    pub error: ErrorDetails,
}

pub type Outcome = Result<Value, Failure>;
pub type TaskFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The Python-side post-processing of a task's value (typed variants), mirroring nested tasks.
#[derive(Debug)]
pub struct Shape {
    pub post: Option<Py<PyAny>>,
    pub children: Vec<Shape>,
}

/// One kind of yieldable work.
#[derive(Debug)]
pub enum TaskKind {
    Activity {
        name: String,
        input: String,
        options: ActivityOptions,
        retry: Option<RetryPolicy>,
    },
    Timer {
        delay_ms: u64,
    },
    Event {
        name: String,
    },
    Dequeue {
        queue: String,
    },
    SubOrchestration {
        name: String,
        version: Option<String>,
        instance_id: Option<String>,
        input: String,
    },
    StartOrchestration {
        name: String,
        version: Option<String>,
        instance_id: String,
        input: String,
    },
    /// Already recorded when created; never resolves, the execution ends instead.
    ContinueAsNew,
    UtcNow,
    NewGuid,
    KvFromInstance {
        instance_id: String,
        key: String,
    },
    All(Vec<Py<Task>>),
    Race(Vec<Py<Task>>),
}

impl TaskKind {
    fn label(&self) -> &'static str {
        match self {
            TaskKind::Activity { .. } => "activity",
            TaskKind::Timer { .. } => "timer",
            TaskKind::Event { .. } => "wait_for_event",
            TaskKind::Dequeue { .. } => "dequeue_event",
            TaskKind::SubOrchestration { .. } => "sub_orchestration",
            TaskKind::StartOrchestration { .. } => "start_orchestration",
            TaskKind::ContinueAsNew => "continue_as_new",
            TaskKind::UtcNow => "utc_now",
            TaskKind::NewGuid => "new_guid",
            TaskKind::KvFromInstance { .. } => "get_kv_value_from_instance",
            TaskKind::All(_) => "all",
            TaskKind::Race(_) => "race",
        }
    }
}

/// A yieldable task returned by the `OrchestrationContext` methods.
#[pyclass(module = "duroxide._native", name = "Task")]
#[derive(Debug)]
pub struct Task {
    pub kind: TaskKind,
    pub post: Option<Py<PyAny>>,
}

impl Task {
    pub fn new(kind: TaskKind) -> Self {
        Task { kind, post: None }
    }
}

#[pymethods]
impl Task {
    /// Routes this activity to workers whose tag filter accepts `tag`; returns the same task.
    fn with_tag(mut slf: PyRefMut<'_, Self>, tag: String) -> PyResult<PyRefMut<'_, Self>> {
        if let Err(message) = duroxide_core::limits::validate_tag(&tag) {
            return Err(errors::value_error(message));
        }
        match &mut slf.kind {
            TaskKind::Activity { options, .. } => options.tag = Some(tag),
            other => {
                return Err(errors::value_error(format!(
                    "with_tag applies to activity tasks, not to a {} task",
                    other.label()
                )))
            }
        }
        Ok(slf)
    }

    /// Sets a function applied to the task's value before the orchestration sees it.
    fn _then(mut slf: PyRefMut<'_, Self>, post: Py<PyAny>) -> PyRefMut<'_, Self> {
        slf.post = Some(post);
        slf
    }

    /// The kind of task (`activity`, `timer`, `all`, ...).
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind.label()
    }

    fn __repr__(&self) -> String {
        match &self.kind {
            TaskKind::Activity { name, options, .. } => match (&options.session_id, &options.tag) {
                (None, None) => format!("<Task activity {name:?}>"),
                (s, t) => format!("<Task activity {name:?} session={s:?} tag={t:?}>"),
            },
            TaskKind::Timer { delay_ms } => format!("<Task timer {delay_ms} ms>"),
            TaskKind::Event { name } => format!("<Task wait_for_event {name:?}>"),
            TaskKind::Dequeue { queue } => format!("<Task dequeue_event {queue:?}>"),
            TaskKind::SubOrchestration { name, .. } => format!("<Task sub_orchestration {name:?}>"),
            TaskKind::StartOrchestration { name, .. } => format!("<Task start_orchestration {name:?}>"),
            TaskKind::All(t) => format!("<Task all of {}>", t.len()),
            TaskKind::Race(t) => format!("<Task race of {}>", t.len()),
            other => format!("<Task {}>", other.label()),
        }
    }
}

fn ready(outcome: Outcome) -> TaskFuture {
    Box::pin(std::future::ready(outcome))
}

fn activity_failure(name: &str, error: ErrorDetails) -> Failure {
    Failure {
        source: "activity",
        name: name.to_string(),
        error,
    }
}

/// Turns a yielded task into a durable future (recording its commands now) and the shape of its
/// post-processing.
pub fn start(
    py: Python<'_>,
    task: &Bound<'_, Task>,
    ctx: &OrchestrationContext,
) -> PyResult<(TaskFuture, Shape)> {
    let task = task.borrow();
    let mut children = Vec::new();
    let future: TaskFuture = match &task.kind {
        TaskKind::Activity {
            name,
            input,
            options,
            retry: None,
        } => {
            let fut = ctx.schedule_activity_detailed(name, input.as_str(), options);
            let name = name.clone();
            Box::pin(async move {
                match fut.await {
                    Ok(out) => Ok(Value::Json(out)),
                    Err(error) => Err(activity_failure(&name, error)),
                }
            })
        }
        TaskKind::Activity {
            name,
            input,
            options,
            retry: Some(policy),
        } => {
            let (ctx, name, input) = (ctx.clone(), name.clone(), input.clone());
            let (options, policy) = (options.clone(), policy.clone());
            Box::pin(async move {
                match ctx
                    .schedule_activity_with_retry_and_options(&name, input, &policy, &options)
                    .await
                {
                    Ok(out) => Ok(Value::Json(out)),
                    Err(error) => Err(activity_failure(&name, ErrorDetails::application(error))),
                }
            })
        }
        TaskKind::Timer { delay_ms } => {
            let fut = ctx.schedule_timer(Duration::from_millis(*delay_ms));
            Box::pin(async move {
                fut.await;
                Ok(Value::None)
            })
        }
        TaskKind::Event { name } => {
            let fut = ctx.wait_for_event(name);
            Box::pin(async move { Ok(Value::Json(fut.await)) })
        }
        TaskKind::Dequeue { queue } => {
            let fut = ctx.dequeue_event(queue);
            Box::pin(async move { Ok(Value::Json(fut.await)) })
        }
        TaskKind::SubOrchestration {
            name,
            version,
            instance_id,
            input,
        } => {
            let fut = ctx.sub_orchestration(name, version.as_deref(), instance_id.as_deref(), input.clone());
            let name = name.clone();
            Box::pin(async move {
                match fut.await {
                    Ok(out) => Ok(Value::Json(out)),
                    Err(error) => Err(Failure {
                        source: "sub_orchestration",
                        name,
                        error,
                    }),
                }
            })
        }
        TaskKind::StartOrchestration {
            name,
            version,
            instance_id,
            input,
        } => {
            ctx.start_orchestration_versioned(name, version.as_deref(), instance_id, input.as_str());
            ready(Ok(Value::None))
        }
        TaskKind::ContinueAsNew => Box::pin(std::future::pending()),
        TaskKind::UtcNow => ready(Ok(Value::Int(ctx.utc_now()))),
        TaskKind::NewGuid => ready(Ok(Value::Str(ctx.new_guid()))),
        TaskKind::KvFromInstance { instance_id, key } => {
            let input = serde_json::json!({ "instance_id": instance_id, "key": key }).to_string();
            let fut =
                ctx.schedule_activity_detailed(SYSCALL_GET_KV_VALUE, input, &ActivityOptions::default());
            Box::pin(async move {
                match fut.await {
                    Ok(out) => Ok(Value::Json(out)),
                    Err(error) => Err(activity_failure("get_kv_value_from_instance", error)),
                }
            })
        }
        TaskKind::All(tasks) => {
            let mut futures = Vec::with_capacity(tasks.len());
            for t in tasks {
                let (f, s) = start(py, t.bind(py), ctx)?;
                futures.push(f);
                children.push(s);
            }
            let join = duroxide_core::join(futures);
            Box::pin(async move { Ok(Value::List(join.await)) })
        }
        TaskKind::Race(tasks) => {
            if tasks.is_empty() {
                return Err(errors::value_error("race needs at least one task"));
            }
            let mut futures = Vec::with_capacity(tasks.len());
            for t in tasks {
                let (f, s) = start(py, t.bind(py), ctx)?;
                futures.push(f);
                children.push(s);
            }
            let select = duroxide_core::select(futures);
            Box::pin(async move {
                let (index, outcome) = select.await;
                outcome.map(|v| Value::Race(index, Box::new(v)))
            })
        }
    };
    let post = task.post.as_ref().map(|p| p.clone_ref(py));
    Ok((future, Shape { post, children }))
}
