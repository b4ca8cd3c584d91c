"""fastgen benchmark suite.

``python -m bench`` (or ``fastgen bench ...``) runs the size sweep of every op of fastgen's
registry, the parameter clipping sweep and the end-to-end training steps, and writes
``bench/results/<device>.csv`` / ``.md`` / ``-<op>.png``. ``pytest bench/`` runs the
same case table under pytest-benchmark. ``python -m bench.small_sizes`` is the acceptance
table at the sizes users train at (one CPU thread), ``python -m bench.cpu_speed`` the
4096x1024 CPU acceptance script. See ``bench/README.md`` for what each number means.
"""
