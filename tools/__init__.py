"""A user's tools that run beside pqcodec, from the repository root as `python -m tools.NAME ...`
(`python -m tools.gpu_lease --help`). They may import pqcodec; pqcodec never imports them. Not part
of the installed package: setup.cfg packages only pqcodec."""
