"""Migration scripts, one per schema change, named ``YYYY-MM-DD-HHMM_slug.py``."""
