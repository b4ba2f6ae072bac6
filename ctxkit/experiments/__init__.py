"""One module per experiment: the steps its notebook calls, each returning data the notebook shows."""
