"""The largest image pqcodec codes: what a file's header can hold (bitstream.py) and what the
readers refuse beyond (image.py, files.py)."""
MAX_SIDE = 32768
MAX_PIXELS = 1 << 25  # 33.5 MP: the transforms are tiled, but the image, token grid and time still scale
