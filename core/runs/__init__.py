"""The domain layer of runs: their lifecycle (lifecycle.py), its timeline (timeline.py) and
the life of a sweep's trials (sweeps.py). The API, the worker and the reclaimer change a
run's status only through :mod:`core.runs.lifecycle`."""
