"""Annotation web app: people compare model responses; the labels export as comparisons for reward training.

store.py (database), candidates.py (input validation), campaigns.py (queue), agreement.py (statistics),
stats.py (dashboard numbers), export.py (comparisons JSONL), app.py/api.py/pages.py (web), commands.py (CLI).
"""
