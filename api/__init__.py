"""The REST API of Backprop Service (FastAPI)."""
