"""A pure NumPy backpropagation engine: dense networks, losses, optimisers and training.

Imports NumPy and the standard library only (plus ``core.spec`` for validation); nothing from
the service. The entry point is ``Network`` (API.md §6).
"""

from .artifacts import model_document
from .errors import DivergenceError, EngineError
from .network import Network, load_model

__all__ = ["DivergenceError", "EngineError", "Network", "load_model", "model_document"]
