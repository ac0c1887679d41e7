"""The MITH runner: hands the model the training-set labels before training starts.

MITH's likelihood terms compare every batch with the whole training set (its four memory banks), so the
model needs the labels of all N training items from the first step, not only those of the current batch.
"""
from __future__ import annotations

from common.register import registry
from runners.base import BaseRunner


@registry.register_runner("MITHRunner")
class MITHRunner(BaseRunner):
    """:class:`BaseRunner` plus the training labels for MITH (``run.runner: MITHRunner``)."""

    def on_train_start(self) -> None:
        """Also after a resume: the labels are data, not saved with the model."""
        self.model.set_train_labels(self.data.train.labels)
