"""Local fake Replicate server (fake_replicate.py) and its test harness (harness.py)."""
