"""Probes of one layer: a linear classifier and an input decoder (spec section 2).

Two modes, fed the same way (``update_train`` batches, ``fit``, ``update_test`` batches, ``result``) and
reporting the same keys. Fast mode (:class:`RidgeProbe`) streams float64 normal-equation statistics and
solves two ridge problems in closed form: a one-hot least-squares classifier (scored by argmax accuracy)
and a linear decoder of the network input, which is the reconstruction function of the source's theory
(its Definition 3.4). The trained probes (:class:`PaperProbe`, :func:`train_paper_probes`) retrain a dense
classifier and a decoder at every measurement on the training activations held in memory, by one of two
protocols (:mod:`nnphases.probes.protocols`): ``text``, the source's text (the classifier by SGD at lr 0.003, an
auto-encoder-style decoder by Adam at lr 3e-4), or ``code``, its authors' released code (SGD with momentum and
lr drops, a linear decoder of standardised inputs).

The reconstruction error is normalised as ``nmse = mse / (sum_j var_j(R_test) / input_dim)``, i.e.
``1 - R^2`` against the test inputs' own per-dimension (population) variance: 0 means a perfect
reconstruction, 1 means no better than predicting the test mean; it is ``None`` when the test inputs have
zero variance. Accuracies are fractions of samples.
"""

from ._common import ProbeError
from .decoders import DECODERS, cladec_decoder, conv_decoder, dense_decoder, linear_decoder
from .paper import PaperProbe, train_paper_probes
from .protocols import PROTOCOLS, Protocol, released_lr_drops
from .ridge import HOLDOUT_EVERY, RIDGE_EXPONENTS, RidgeProbe

# The probe modes: the closed form, and the trained probes by the source's text or by its authors' code.
MODES = ("fast", "text", "code")

__all__ = [
    "ProbeError",
    "RidgeProbe",
    "PaperProbe",
    "train_paper_probes",
    "conv_decoder",
    "dense_decoder",
    "linear_decoder",
    "cladec_decoder",
    "DECODERS",
    "PROTOCOLS",
    "Protocol",
    "released_lr_drops",
    "MODES",
    "RIDGE_EXPONENTS",
    "HOLDOUT_EVERY",
]
