"""``rayplex view``: a live web page for the scalars of thousands of runs, served from the
columnar store (:mod:`rayplex.store`) of a logdir, local and offline.

- :mod:`rayplex.view.api`: the JSON answers (runs, tags, M4 buckets, bands, log tails) as
  plain functions over :func:`rayplex.read_series` and :func:`rayplex.sql`.
- :mod:`rayplex.view.server`: the Starlette app and the uvicorn server; the page's files are
  in ``static/`` (plain ES modules and a vendored uPlot, no build step, no CDN).

Needs ``pip install "rayplex[view]"``.
"""
