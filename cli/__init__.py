"""The ``backprop`` command line: run the service's pieces (API.md §8)."""
