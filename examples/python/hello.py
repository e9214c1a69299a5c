"""The user guide's minimal example: one orchestration calling one activity on in-memory SQLite.

Run with `python examples/python/hello.py` after `pip install ./crates/duroxide-py`.
"""

from duroxide import SqliteProvider, Client, Runtime

provider = SqliteProvider.in_memory()
client = Client(provider)
runtime = Runtime(provider)


@runtime.register_activity("SayHello")
def say_hello(ctx, name):
    return f"Hello, {name}!"


@runtime.register_orchestration("HelloWorkflow")
def hello_workflow(ctx, input):
    greeting = yield ctx.schedule_activity("SayHello", input["name"])
    return greeting


runtime.start()

client.start_orchestration("hello-1", "HelloWorkflow", {"name": "World"})
result = client.wait_for_orchestration("hello-1")
print(result.output)  # "Hello, World!"

runtime.shutdown()
