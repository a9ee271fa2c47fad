"""Celery workers that train runs with core.engine."""
