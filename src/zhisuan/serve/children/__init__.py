"""Programs the serving code runs in fresh interpreters (see :mod:`zhisuan._child`)."""
