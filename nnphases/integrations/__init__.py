"""Integrations: the Recorder inside other people's trainers (``callbacks/``: Lightning, Hugging Face) and the
loggers that send each checkpoint's rows to TensorBoard or Weights & Biases."""
