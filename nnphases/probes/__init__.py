"""Probes of one layer: a linear classifier and an input decoder (spec section 2).

Two modes, fed the same way (``update_train`` batches, ``fit``, ``update_test`` batches, ``result``) and
reporting the same keys. Fast mode (:class:`RidgeProbe`) streams float64 normal-equation statistics and
solves two ridge problems in closed form: a one-hot least-squares classifier (scored by argmax accuracy)
and a linear decoder of the network input, which is the reconstruction function of the source's theory
(its Definition 3.4). Paper mode (:class:`PaperProbe`, :func:`train_paper_probes`) follows the source's
protocol: a dense classifier trained 20 epochs by SGD at lr 0.003 and an auto-encoder-style decoder trained
30 epochs by Adam at lr 3e-4, on the training activations held in memory.

The reconstruction error is normalised as ``nmse = mse / (sum_j var_j(R_test) / input_dim)``, i.e.
``1 - R^2`` against the test inputs' own per-dimension (population) variance: 0 means a perfect
reconstruction, 1 means no better than predicting the test mean; it is ``None`` when the test inputs have
zero variance. Accuracies are fractions of samples.
"""

from ._common import ProbeError
from .paper import DECODERS, PaperProbe, conv_decoder, dense_decoder, train_paper_probes
from .ridge import HOLDOUT_EVERY, RIDGE_EXPONENTS, RidgeProbe

MODES = ("fast", "paper")

__all__ = [
    "ProbeError",
    "RidgeProbe",
    "PaperProbe",
    "train_paper_probes",
    "conv_decoder",
    "dense_decoder",
    "DECODERS",
    "MODES",
    "RIDGE_EXPONENTS",
    "HOLDOUT_EVERY",
]
