"""Shared core of Backprop Service: the NumPy engine, specs, datasets, settings, storage."""
