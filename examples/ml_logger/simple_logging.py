# ruff: noqa  -- ML-Logger's README code as written there, only the import line changed
"""ML-Logger's README, "Simple Logging Example", with the import changed to rayplex.compat.

Two more changes, because neither package is installed here: ``params_proto.ParamsProto`` is a
plain class with the same fields, and ``scipy.misc.face()`` (gone from SciPy) is a synthetic
image of the same kind. Run with ``ML_LOGGER_ROOT=<logdir> ML_LOGGER_USER=<you>``.
"""


class Args:
    """ CLI Args for the program """
    seed = 1
    D_lr = 5e-4
    G_lr = 1e-4
    Q_lr = 1e-4
    T_lr = 1e-4
    plot_interval = 10
    verbose = False


def face(gray=False):
    import numpy as np

    y, x = np.mgrid[0:768, 0:1024]
    rgb = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return rgb.mean(axis=-1).astype(np.uint8) if gray else rgb


if __name__ == '__main__':
    import numpy as np
    from rayplex.compat.ml_logger import logger, LOGGER_USER

    # Put in your ~/.bashrc
    # export ML_LOGGER_ROOT = "http://<your-logging-server>:8081"
    # export ML_LOGGER_USER = $USER
    logger.configure(prefix=f"{LOGGER_USER}/scratch/your-experiment-prefix!")

    logger.log_params(Args={k: v for k, v in vars(Args).items() if not k.startswith("_")})
    logger.upload_file(__file__)

    for epoch in range(10):
        logger.log(step=epoch, D_loss=0.2, G_loss=0.1, mutual_information=0.01)
        logger.log_key_value(epoch, 'some string key', 0.0012)
        # when the step index updates, logger flushes all of the key-value pairs to file system/logging server

    logger.flush()

    # Images
    face_rgb = face()
    face_bw = face(gray=True)
    logger.save_image(face_rgb, "figures/face_rgb.png")
    logger.save_image(face_bw, "figures/face_bw.png")
    image_bw = np.zeros((64, 64, 1))
    image_bw_2 = face(gray=True)[::4, ::4]

    logger.save_video([face_rgb] * 5, "videos/face.mp4")
