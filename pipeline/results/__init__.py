"""Results: scores, summaries, plots and the static report (issue 11).

In: pandas DataFrames or pyarrow Tables the caller read from the workspace (manifest rows,
prediction rows, the stages' stats rows, per-frame AU activations), the ordered class list
and the run's lineage. Out: DataFrames of the ``schemas.results`` tables, Parquet files,
PNG plots and a self-contained ``index.html`` in a given local folder. No Ray, no
workspace I/O: ``autt report`` wires these functions to the workspace.
"""
