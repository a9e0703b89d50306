"""Experiments: the sources' protocols as configurations and presets, the training loop that runs them
(``train``), sweeps of them (``sweep``), their data and models, and the two stand-alone studies
(``singlelayer``, ``theory``). The top layer under the command line."""
