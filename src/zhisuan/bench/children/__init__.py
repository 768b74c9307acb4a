"""Programs the evaluation tasks run in fresh interpreters (see :mod:`zhisuan._child`).

Each module is started by the task module its name begins with, e.g. ``reliability_crash`` by
:mod:`zhisuan.bench.reliability`; none imports torch before it has read its arguments.
"""
