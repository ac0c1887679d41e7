"""Importing this package registers the runner, optimisers and schedules."""
from runners import base  # noqa: F401
from runners import optim  # noqa: F401
