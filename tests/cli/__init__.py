"""Tests of the ``backprop`` command line (client commands) against the real service."""
