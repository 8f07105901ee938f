"""Results: scores, summaries, plots and the static report (issue 11).

In: pandas DataFrames or pyarrow Tables the caller read from the workspace (manifest rows,
prediction rows, the stages' stats rows, per-frame AU activations), the ordered class list
and the run's lineage. Out: DataFrames of the ``schemas.results`` tables, Parquet files,
PNG plots and a self-contained ``index.html`` in a given local folder. No Ray, no
workspace I/O: ``autt report`` wires these functions to the workspace.

Modules: ``join`` (labels joined to predictions, segments), ``metrics`` (scikit-learn, per
subject and step), ``summary`` (over subjects with a SciPy bootstrap CI, over runs),
``stats`` (stage statistics, run summary, lineage), ``tables`` (all tables, typed and
written), ``plots`` (PNGs), ``html`` (the page), ``report`` (``make_report``: everything in
one call). Nothing is imported here, so building tables never loads matplotlib.
"""
