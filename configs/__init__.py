"""Experiment configs: `python -m dqnn.main --config=configs/<name>.py[:runlocal]`."""
