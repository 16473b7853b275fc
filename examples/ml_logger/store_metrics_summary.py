# ruff: noqa  -- ML-Logger's README code as written there, only the import line changed
"""ML-Logger's README: "Asynchronously log the summary of LOTs of training metrics", with the
import changed to rayplex.compat (and a prefix configured, so that the run is easy to find)."""
from rayplex.compat.ml_logger import logger

logger.configure(prefix="readme-user/examples/summary")

# You log lots of metrics during training.
for i in range(100):
    logger.store_metrics(metrics={'some_val/smooth': 10}, some=20, timestep=i)
# you can peak what's inside the cache and print out a table like this:
logger.peek_stored_metrics(len=4)

# The metrics are stored in-memory. Now we need to actually log the summaries:
logger.log_metrics_summary(silent=True)
# outputs ~> . (data is now logged to the server)
