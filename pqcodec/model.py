"""The codec's networks in one object, with its configuration, and safetensors load/save.

A weights file holds every tensor of `PQCodecModel` plus, in the safetensors metadata, the JSON of
its `ModelConfig`; nothing is unpickled.
"""
import dataclasses
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import load_file, save_file, safe_open

from .config import ModelConfig
from .files import sha256_of
from .coding.integer_conditional import IntConditionalHead
from .coding.integer_prior import IntegerPrior
from .nets import ConditionalHead, Decoder, Encoder, MIMPrior, ProductQuantizer
from .numerics import float32_default


class PQCodecModel(nn.Module):
    def __init__(self, config: ModelConfig, coding_only: bool = False):
        """coding_only: without the float prior and conditional head (`prior` and `cond` are None),
        which train and calibrate but never code (the coder runs their integer counterparts): what
        a Codec loads, 28 MB less for the shipped model."""
        super().__init__()
        self.coding_only = coding_only
        with float32_default():  # float32 weights whatever the caller's default dtype
            self._build(config)

    def _build(self, config: ModelConfig):
        self.config = c = config
        D = c.num_subvectors * c.subvector_dim
        self.encoder = Encoder(c.channels, D, c.padding)
        self.quantizer = ProductQuantizer(c.num_subvectors, c.codebook_size, c.subvector_dim)
        self.decoder = Decoder(c.channels, D, c.padding)
        self.prior = None if self.coding_only else MIMPrior(c.num_subvectors, c.codebook_size, c.window, c.prior_dim,
                                                            c.prior_layers, c.prior_heads)
        # the prior the coder runs: integer-exact, made from `prior` by calibration (train/quantize.py)
        self.int_prior = IntegerPrior(c.num_subvectors, c.codebook_size, c.window, c.prior_dim,
                                      c.prior_layers, c.prior_heads)
        # a head file's base weights (`load`), the file holding its autoencoder: path and SHA-256
        self.base_path: Path | None = None
        self.base_sha256: str | None = None
        if c.conditional:  # float (trains) and integer (codes, calibrated from it: train/conditional.py)
            self.cond = None if self.coding_only else ConditionalHead(c.num_subvectors, c.codebook_size, c.prior_dim,
                                                                      c.cond_embed, c.cond_hidden)
            self.int_cond = IntConditionalHead(c.num_subvectors, c.codebook_size, c.prior_dim, c.cond_embed,
                                               c.cond_hidden)

    @torch.no_grad()
    def image_to_tokens(self, x: torch.Tensor, active: int | None = None) -> torch.Tensor:
        """x (B, 3, H, W) in [0, 1], H and W multiples of the stride -> indices (B, active, H/s, W/s)
        of the first `active` sub-quantizers (default: all M)."""
        return self.quantizer.encode(self.encoder(x), active)

    @torch.no_grad()
    def tokens_to_image(self, tokens: torch.Tensor, active: "int | torch.Tensor", decoder: nn.Module | None = None) -> torch.Tensor:
        """indices (B, >=active, h, w) -> image (B, 3, sh, sw) in [0, 1], by `decoder` (default: the
        model's own, MSE-trained one; another is e.g. a perceptual decoder, decoders.py)."""
        return (decoder or self.decoder)(self.quantizer.decode(tokens, active)).clamp(0, 1)

    def save(self, path: str | Path, extra_metadata: dict | None = None, without_prior: bool = False,
             base: str | Path | None = None, float16: tuple[str, ...] = ()):
        """without_prior: the autoencoder and quantizer alone (40 % of the bytes), e.g. to carry to a
        training machine; such a file trains (`pqcodec-train ae --init`) but does not code.
        base: a weights file this model grew from (e.g. by a conditional head): write only the
        tensors it lacks, and its name and SHA-256, which `load` finds it by; ValueError if a tensor
        they share differs. float16: prefixes of the tensor names whose float tensors are stored in
        float16 (loaded as float32). A coding-only model is not saved: it lacks the float prior."""
        if self.coding_only:
            raise ValueError("a coding-only model (no float prior) cannot be saved; load the weights file in full")
        meta = {"config": self.config.to_json(), **(extra_metadata or {})}
        state = {k: v.contiguous() for k, v in self.state_dict().items()
                 if not (without_prior and k.startswith(("prior.", "int_prior.")))}
        if base is not None:
            shared = load_file(str(base))
            differ = [k for k, v in shared.items() if k not in state or not torch.equal(state[k], v)]
            if differ:
                raise ValueError(f"{base}: not this model's base ({len(differ)} tensors differ, e.g. {differ[0]})")
            state = {k: v for k, v in state.items() if k not in shared}
            meta.update(base_file=Path(base).name, base_sha256=sha256_of(Path(base)))
        if float16:
            state = {k: v.half() if k.startswith(float16) and v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(path), metadata=meta)

    @staticmethod
    def file_has_prior(path: str | Path) -> bool:
        with safe_open(str(path), "pt") as f:  # a head file's base holds its prior
            return any(k.startswith("prior.") for k in f.keys()) or "base_sha256" in (f.metadata() or {})

    def can_code(self) -> bool:
        """Whether the integer prior the coder runs has been calibrated."""
        return bool(self.int_prior.calibrated)

    @torch.no_grad()
    def grown(self, num_subvectors: int, levels: tuple[int, ...]) -> "PQCodecModel":
        """A copy with more sub-quantizers that still codes the old levels exactly as before: the
        encoder's new latent channels start random, the decoder's weights on them and the prior's
        embeddings and logits for them start at zero, and the new codebooks are all "dead", so the
        first dead-code restart seeds them from encoder outputs. Training then only has to learn
        the refinement (docs/training.md, "The rate ladder")."""
        new = PQCodecModel(dataclasses.replace(self.config, num_subvectors=num_subvectors, levels=levels))
        old_state = self.state_dict()
        for name, t in new.state_dict().items():
            if name.startswith("int_prior."):  # recalibrated once the grown prior is trained
                continue
            o = old_state[name]
            if o.shape == t.shape:
                t.copy_(o)
                continue
            if not name.startswith("encoder."):  # encoder: keep the fresh init (zero would never train)
                t.zero_()
            t[tuple(slice(0, n) for n in o.shape)] = o
        new.quantizer.ema_count[self.config.num_subvectors:] = 0
        return new

    @torch.no_grad()
    def with_padding(self, padding: str) -> "PQCodecModel":
        """A copy whose conv transforms pad with `padding` (ModelConfig.padding); every weight
        carries over (same names and shapes), so training only has to adapt the borders."""
        new = PQCodecModel(dataclasses.replace(self.config, padding=padding))
        new.load_state_dict(self.state_dict())
        return new

    @classmethod
    def load(cls, path: str | Path, without_prior: bool = False, search: tuple = (),
             coding_only: bool = False) -> "PQCodecModel":
        """without_prior: take only the autoencoder and quantizer from the file (the priors keep
        their fresh initialisation), to train a new prior on a trained autoencoder. A file without
        an integer prior (a training checkpoint, or weights of pqcodec 0.3.0 and before) loads with
        an uncalibrated one: it trains, but does not code until `pqcodec-train quantize`. A head file
        (`save`'s base) loads with its base, found beside it or in one of the folders `search`.
        coding_only: as the constructor's (the file's float prior and head are not kept)."""
        if coding_only and without_prior:
            raise ValueError("without_prior keeps the float prior fresh to train; a coding-only model has none")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{path}: not a pqcodec weights file (no config in its metadata)")
        model = cls(ModelConfig.from_json(meta["config"]), coding_only)
        state = load_file(str(path))
        if "base_sha256" in meta:  # a file that holds only what its base lacks (`save`'s base)
            name = Path(meta.get("base_file", "?")).name
            found = [p for p in (Path(path).parent / name, *(Path(d) / name for d in search))
                     if p.is_file() and sha256_of(p) == meta["base_sha256"]]
            if not found:
                where = " or ".join(str(d) for d in (Path(path).parent, *search))
                raise ValueError(f"{path}: needs its base weights {name!r} (SHA-256 {meta['base_sha256'][:16]}...) "
                                 f"in {where}")
            state = {**load_file(str(found[0])), **state}
            model.base_path, model.base_sha256 = found[0], meta["base_sha256"]
        fresh = ("prior.", "int_prior.") if without_prior else ("int_prior.",)
        if without_prior or not any(k.startswith("int_prior.") for k in state):
            state = {k: v for k, v in state.items() if not k.startswith(fresh)}
            state.update({k: v for k, v in model.state_dict().items() if k.startswith(fresh)})
        if coding_only:
            state = {k: v for k, v in state.items() if not k.startswith(("prior.", "cond."))}
        model.load_state_dict(state)
        return model.eval()
