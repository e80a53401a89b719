"""Benchmarks of timm-shakedrop: training-step cost of ShakeDrop and start-up cost of the registration hook.

Run them as modules from the repository root, `python -m benchmarks.train_step` and
`python -m benchmarks.startup`; docs/benchmarks.md records the figures and the commands behind them.
"""
