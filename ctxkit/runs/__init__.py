"""Run folders: ids, metadata, atomic writes, papermill execution and the HTML report."""
