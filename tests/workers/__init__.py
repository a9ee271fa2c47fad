"""Tests of the worker package: run without Celery processes, against real databases and Redis."""
