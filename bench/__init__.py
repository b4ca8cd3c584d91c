"""fastgen benchmark suite.

``python -m bench`` (or ``fastgen bench ...``) runs the size sweep, the parameter
clipping sweep and the end-to-end training steps, and writes
``bench/results/<device>.csv`` / ``.md`` / ``-<op>.png``. ``pytest bench/`` runs the
same case table under pytest-benchmark. ``python -m bench.cpu_speed`` is the CPU
acceptance script. See ``bench/README.md`` for what each number means.
"""
