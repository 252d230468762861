"""`mode: batch` for API teachers: the teacher (teacher.py), the provider's Batch API (api.py), the
ledger of submitted batches (ledger.py) and the settings (settings.py)."""
