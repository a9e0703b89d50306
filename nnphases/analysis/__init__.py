"""Analysis: what is read back from run folders (findings, phases, figures) and the statistics they share.

Reads run directories through the store only; never imports the recording layer."""
