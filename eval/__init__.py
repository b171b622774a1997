"""Evaluation scripts: rate-distortion curves, speed, portability, fuzzing, the learned baselines and
other measurements behind the docs. Run them from the repository root as `python -m eval.NAME ...`
(`python -m eval.rd --help`). Not part of the installed package: setup.cfg packages only pqcodec."""
