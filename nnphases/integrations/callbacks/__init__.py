"""Callbacks that run a :class:`~nnphases.recording.recorder.Recorder` inside the trainers people use.

:mod:`nnphases.integrations.callbacks.lightning` (``pip install 'nnphases[lightning]'``) and
:mod:`nnphases.integrations.callbacks.huggingface` (``pip install 'nnphases[huggingface]'``)
each define ``NnphasesCallback``; this package itself imports neither
framework, so importing it (or anything else in nnphases) never needs them.
Both share :class:`CallbackOptions` and :class:`Logits`, the adapter that
turns a model's output (e.g. a Hugging Face ``ModelOutput``) into the
``[batch, classes]`` logits the Recorder measures.
"""

from ._core import CallbackOptions, Logits

__all__ = ["CallbackOptions", "Logits"]
