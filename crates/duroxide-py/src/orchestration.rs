//! Orchestrations: a Rust `OrchestrationHandler` whose future drives a Python generator.
//!
//! Each poll first polls the durable future of the task the generator is waiting on, without the GIL.
//! Only when it is ready is the GIL taken, the value (or failure) sent (or thrown) into the generator,
//! and the next yielded task turned into durable futures. The engine keeps this future, and so the
//! live generator, in the runtime's instance cache: a cached instance's next turn resumes the
//! generator instead of replaying it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use duroxide_core::engine::OrchestrationFuture;
use duroxide_core::{OrchestrationContext, OrchestrationHandler};
use pyo3::exceptions::PyStopIteration;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString};

use crate::context::PyOrchestrationContext;
use crate::rt::OrchestrationScope;
use crate::task::{self, Failure, Outcome, Shape, Task, TaskFuture, Value};
use crate::thread_state;

/// The Python helpers of `duroxide._glue` the driver calls.
struct Glue {
    format_error: Py<PyAny>,
    make_failure: Py<PyAny>,
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    generator_type: Py<PyAny>,
}

static GLUE: PyOnceLock<Glue> = PyOnceLock::new();

fn glue(py: Python<'_>) -> PyResult<&Glue> {
    GLUE.get_or_try_init(py, || {
        let m = py.import("duroxide._glue")?;
        Ok(Glue {
            format_error: m.getattr("format_error")?.unbind(),
            make_failure: m.getattr("make_failure")?.unbind(),
            dumps: m.getattr("dumps")?.unbind(),
            loads: m.getattr("loads")?.unbind(),
            generator_type: py.import("types")?.getattr("GeneratorType")?.unbind(),
        })
    })
}

impl Glue {
    /// `"<ExceptionType>: <message>"` (or the original text of a task failure).
    fn error_text(&self, py: Python<'_>, error: PyErr) -> String {
        self.format_error
            .call1(py, (error.into_value(py),))
            .and_then(|t| t.extract::<String>(py))
            .unwrap_or_else(|e| format!("orchestration failed, and so did formatting its error: {e}"))
    }

    /// The orchestration's output as JSON; a value JSON cannot encode fails it, naming the type.
    fn output(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> Result<String, String> {
        match self.dumps.call1(py, (value,)) {
            Ok(text) => text.extract::<String>(py).map_err(|e| e.to_string()),
            Err(e) => Err(self.error_text(py, e)),
        }
    }

    fn exception(&self, py: Python<'_>, failure: Failure) -> PyResult<Py<PyAny>> {
        let text = failure.error.to_string();
        let kind = format!("{:?}", failure.error.kind);
        self.make_failure
            .call1(py, (failure.source, failure.name, text, kind))
    }

    fn to_py<'py>(&self, py: Python<'py>, value: Value, shape: &Shape) -> PyResult<Bound<'py, PyAny>> {
        let v = match value {
            Value::Json(text) => self.loads.bind(py).call1((text,))?,
            Value::Str(s) => PyString::new(py, &s).into_any(),
            Value::Int(n) => n.into_pyobject(py)?.into_any(),
            Value::None => py.None().into_bound(py),
            Value::List(items) => {
                let list = PyList::empty(py);
                for (i, item) in items.into_iter().enumerate() {
                    let dict = PyDict::new(py);
                    match item {
                        Ok(v) => dict.set_item(intern!(py, "ok"), self.to_py(py, v, child(shape, i))?)?,
                        Err(f) => dict.set_item(intern!(py, "err"), f.error.to_string())?,
                    }
                    list.append(dict)?;
                }
                list.into_any()
            }
            Value::Race(index, v) => {
                let dict = PyDict::new(py);
                dict.set_item(intern!(py, "index"), index)?;
                dict.set_item(intern!(py, "value"), self.to_py(py, *v, child(shape, index))?)?;
                dict.into_any()
            }
        };
        match &shape.post {
            Some(post) => post.bind(py).call1((v,)),
            None => Ok(v),
        }
    }
}

const NO_SHAPE: &Shape = &Shape {
    post: None,
    children: Vec::new(),
};

fn child(shape: &Shape, i: usize) -> &Shape {
    shape.children.get(i).unwrap_or(NO_SHAPE)
}

/// A registered Python orchestration. `entry(native_ctx, input_json)` is the Python layer's wrapper:
/// it builds the `OrchestrationContext`, decodes the input and calls the user's function, returning a
/// generator (or, for a plain function, the result).
pub struct PyOrchestration {
    entry: Arc<Py<PyAny>>,
}

impl PyOrchestration {
    pub fn new(entry: Py<PyAny>) -> Self {
        PyOrchestration {
            entry: Arc::new(entry),
        }
    }
}

impl OrchestrationHandler for PyOrchestration {
    fn invoke(&self, ctx: OrchestrationContext, input: String) -> OrchestrationFuture {
        Box::pin(Driver {
            entry: self.entry.clone(),
            ctx,
            input: Some(input),
            generator: None,
            waiting: None,
            finished: false,
        })
    }
}

/// What the generator did after being resumed.
enum Step {
    Wait(TaskFuture, Shape),
    Done(Result<String, String>),
}

struct Driver {
    entry: Arc<Py<PyAny>>,
    ctx: OrchestrationContext,
    input: Option<String>,
    generator: Option<Py<PyAny>>,
    waiting: Option<(TaskFuture, Shape)>,
    finished: bool,
}

impl Future for Driver {
    type Output = Result<String, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Pending;
        }
        let mut resume = None;
        loop {
            if let Some((future, _)) = this.waiting.as_mut() {
                match future.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(outcome) => {
                        let shape = this.waiting.take().map(|(_, s)| s);
                        resume = shape.map(|s| (outcome, s));
                    }
                }
            }
            let step = thread_state::attach(|py| this.advance(py, resume.take()));
            match step {
                Step::Wait(future, shape) => this.waiting = Some((future, shape)),
                Step::Done(result) => {
                    this.finished = true;
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl Driver {
    /// Starts the code or resumes the generator with the outcome of the task it waited on.
    fn advance(&mut self, py: Python<'_>, resume: Option<(Outcome, Shape)>) -> Step {
        let _scope = OrchestrationScope::enter();
        let glue = match glue(py) {
            Ok(g) => g,
            Err(e) => return Step::Done(Err(format!("duroxide Python package is broken: {e}"))),
        };
        let sent = match &self.generator {
            None => {
                let input = self.input.take().unwrap_or_default();
                let native = match Py::new(py, PyOrchestrationContext::new(self.ctx.clone())) {
                    Ok(n) => n,
                    Err(e) => return Step::Done(Err(glue.error_text(py, e))),
                };
                let result = match self.entry.call1(py, (native, input)) {
                    Ok(r) => r.into_bound(py),
                    Err(e) => return Step::Done(Err(glue.error_text(py, e))),
                };
                if !result.is_instance(glue.generator_type.bind(py)).unwrap_or(false) {
                    // A plain function: what it returned is the output.
                    return Step::Done(glue.output(py, &result));
                }
                self.generator = Some(result.clone().unbind());
                result.call_method1(intern!(py, "send"), (py.None(),))
            }
            Some(generator) => {
                let generator = generator.bind(py);
                match resume {
                    None => generator.call_method1(intern!(py, "send"), (py.None(),)),
                    Some((Ok(value), shape)) => match glue.to_py(py, value, &shape) {
                        Ok(v) => generator.call_method1(intern!(py, "send"), (v,)),
                        Err(e) => generator.call_method1(intern!(py, "throw"), (e.into_value(py),)),
                    },
                    Some((Err(failure), _)) => match glue.exception(py, failure) {
                        Ok(exc) => generator.call_method1(intern!(py, "throw"), (exc,)),
                        Err(e) => return Step::Done(Err(glue.error_text(py, e))),
                    },
                }
            }
        };
        match sent {
            Ok(yielded) => match yielded.cast::<Task>() {
                Ok(task) => match task::start(py, task, &self.ctx) {
                    Ok((future, shape)) => Step::Wait(future, shape),
                    Err(e) => Step::Done(Err(glue.error_text(py, e))),
                },
                Err(_) => Step::Done(Err(bad_yield(&yielded))),
            },
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                let value = e.value(py).getattr(intern!(py, "value"));
                match value {
                    Ok(v) => Step::Done(glue.output(py, &v)),
                    Err(e) => Step::Done(Err(glue.error_text(py, e))),
                }
            }
            Err(e) => Step::Done(Err(glue.error_text(py, e))),
        }
    }
}

/// The error for yielding something that is not a task: names what was yielded.
fn bad_yield(yielded: &Bound<'_, PyAny>) -> String {
    let type_name = yielded
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let repr = yielded
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    let repr: String = if repr.chars().count() > 200 {
        repr.chars().take(200).chain("...".chars()).collect()
    } else {
        repr
    };
    let hint = if type_name == "list" || type_name == "tuple" {
        " (to wait for several tasks, yield ctx.all([...]))"
    } else {
        ""
    };
    format!(
        "TypeError: orchestration yielded {repr} of type {type_name}; only tasks returned by ctx methods \
         (schedule_activity, schedule_timer, wait_for_event, all, race, ...) can be yielded{hint}"
    )
}
