"""Programs the data generators run in fresh interpreters (see :mod:`zhisuan._child`)."""
