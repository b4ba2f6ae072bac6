"""ctxkit: a Jupyter-first harness for LLM-serving experiments on real vLLM."""

__version__ = "0.1.0"
