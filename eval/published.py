"""Published Kodak figures (RGB PSNR vs bpp) quoted in ../shared/DESIGN.md, from CompressAI's
results: drawn on the plots labelled "published", never mixed with what we measure."""

PUBLISHED_KODAK = [
    {"name": "bmshj2018-hyperprior (published)",
     "results": {"bpp": [0.131, 0.209, 0.320, 0.478, 0.669, 0.939],
                 "psnr-rgb": [27.58, 29.20, 30.97, 32.84, 34.53, 36.74]}},
    {"name": "mbt2018-mean (published)",
     "results": {"bpp": [0.124, 0.198, 0.307, 0.461, 0.662],
                 "psnr-rgb": [27.70, 29.36, 31.13, 32.95, 34.97]}},
    {"name": "BPG 4:4:4 (published)",
     "results": {"bpp": [0.161, 0.352, 0.685], "psnr-rgb": [28.68, 31.59, 34.86]}},
]
