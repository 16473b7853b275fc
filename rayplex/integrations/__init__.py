"""rayplex as the logger of Ray's libraries: :mod:`rayplex.integrations.tune` (Tune) and
:mod:`rayplex.integrations.train` (Train). They need ``pip install 'rayplex[tune]'``."""
