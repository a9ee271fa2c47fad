"""Tests of the API package that need no running services."""
