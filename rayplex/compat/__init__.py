"""Drop-in modules for code written against rayplex's ancestors: :mod:`rayplex.compat.ml_logger`
(ML-Logger) and :mod:`rayplex.compat.tensorplex` (Tensorplex and Loggerplex)."""
