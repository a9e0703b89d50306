"""Recording: what runs while a model trains.

The :class:`Recorder` measures a model at the steps of a :class:`Schedule`: it finds the ReLU sites
(``capture``), streams the evaluation data (``stream``), runs the passes its measures ask for
(``measures/``), adds their sums across processes (``distributed``) and hands their finished tables to the
store. ``plan`` sizes a measurement before any training. This layer imports the kernels, the probes and the
store, never the analysis, integrations or experiments above it.
"""
