"""Analysis: what is read back from run folders (findings, phases, figures) and the statistics they share.

It reads run folders through the store and sits above the recording layer for one reason: the built-in measures
declare the columns of the tables analysed here, so importing them first makes every reader conform each file
to its table's declaration (an old file lacking a column added later reads with nulls there), whatever else the
caller imported."""

from ..recording import measures  # noqa: F401  (declares the built-in measures' tables)
