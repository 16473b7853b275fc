# ruff: noqa  -- ML-Logger's README code as written there, only the import line changed
"""ML-Logger's README: "Full Logging API", "Logging Text, and Metrics", "Searching for Hyper
Parameters", "Logging Matplotlib Figures" and "Logging Videos", with the import changed to
rayplex.compat (the default prefix is ML-Logger's: ``{USER}/scratch/<date>/<time>``)."""
from rayplex.compat.ml_logger import logger, Color, percent

logger.log_params(G=dict(some_config="hey"))
logger.log(some=Color(0.1, 'yellow'), step=0)
logger.log(some=Color(0.28571, 'yellow', lambda v: "{:.5f}%".format(v * 100)), step=1)
logger.log(some=Color(0.85, 'yellow', percent), step=2)
logger.log({"some_var/smooth": 10}, some=Color(0.85, 'yellow', percent), step=3)
logger.log(some=Color(10, 'yellow'), step=4)

Args = dict(
    learning_rate=10,
    hidden_size=200
)
logger.log_parameters(Args=Args)

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

xs = np.linspace(-5, 5)

plt.plot(xs, np.cos(xs), label='Cosine Func')
logger.savefig('cosine_function.pdf')


def im(x, y):
    canvas = np.zeros((200, 200))
    for i in range(200):
        for j in range(200):
            if x - 5 < i < x + 5 and y - 5 < j < y + 5:
                canvas[i, j] = 1
    return canvas


frames = [im(100 + i, 80) for i in range(20)]

logger.log_video(frames, "test_video.mp4")
