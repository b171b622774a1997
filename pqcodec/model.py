"""The codec's networks in one object, with its configuration, and safetensors load/save.

A weights file holds every tensor of `PQCodecModel` plus, in the safetensors metadata, the JSON of
its `ModelConfig`; nothing is unpickled.
"""
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import load_file, save_file, safe_open

from .files import sha256_of
from .coding.integer_conditional import IntConditionalHead
from .coding.integer_prior import IntegerPrior
from .nets import ConditionalHead, Decoder, Encoder, MIMPrior, ProductQuantizer
from .nets.autoencoder import PADDINGS
from .numerics import float32_default


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 128          # width of the conv transforms
    num_subvectors: int = 4      # M: sub-quantizers
    codebook_size: int = 256     # K
    subvector_dim: int = 16      # d; latent D = M * d
    prior_dim: int = 256
    prior_layers: int = 4
    prior_heads: int = 4
    window: int = 16             # prior window, in tokens (16 tokens = 128 px at stride 8)
    schedule_seed: int = 0       # seeds the order in which positions of a window are revealed
    # Sub-quantizers in use at each quality level, increasing (nested dropout trains exactly these);
    # empty means every count 1..M is a level.
    levels: tuple[int, ...] = ()
    # How the conv transforms see beyond an image's border: "zeros" (every model up to v4) or
    # "replicate" (nets/autoencoder.py; docs/quality.md: zeros darken flat images' edges)
    padding: str = "zeros"
    # The conditional head (nets/conditional.py): each sub-quantizer's distribution given the lower
    # ones' indices at the same position; 0: none (every model up to v4). Its files are format 6.
    cond_embed: int = 0
    cond_hidden: int = 0

    def __post_init__(self):
        lv = self.active_levels
        if any(b <= a for a, b in zip(lv, lv[1:])) or lv[0] < 1 or lv[-1] > self.num_subvectors:
            raise ValueError(f"levels {lv} must increase within 1..{self.num_subvectors}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if (self.cond_embed > 0) != (self.cond_hidden > 0) or min(self.cond_embed, self.cond_hidden) < 0:
            raise ValueError(f"cond_embed and cond_hidden must both be 0 or both positive, "
                             f"got {self.cond_embed} and {self.cond_hidden}")

    @property
    def conditional(self) -> bool:
        """Whether the model has a conditional head (and codes format 6)."""
        return self.cond_hidden > 0

    @property
    def active_levels(self) -> tuple[int, ...]:
        return tuple(self.levels) or tuple(range(1, self.num_subvectors + 1))

    @property
    def stride(self) -> int:
        return Encoder.stride

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """The config a JSON object describes; fields it leaves out keep their defaults (weights of
        releases before the field existed). A field this version does not know (weights of a newer
        pqcodec, or a typo) or of the wrong type is a ValueError, never dropped or taken on trust."""
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"model config must be a JSON object, got {type(fields).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(f"model config has fields this pqcodec does not know: {', '.join(unknown)} "
                             "(weights made by a newer pqcodec?)")
        for key, value in fields.items():
            default = known[key].default
            if isinstance(default, tuple):
                ok, kind = isinstance(value, list) and all(map(_is_int, value)), "a list of integers"
            elif isinstance(default, str):
                ok, kind = isinstance(value, str), "a string"
            else:
                ok, kind = _is_int(value), "an integer"
            if not ok:
                raise ValueError(f"model config field {key} must be {kind}, got {value!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def to_json(self) -> str:
        """The config as JSON; `padding` only when not "zeros" and the conditional head's fields only
        when there is one, so that weights without them stay readable by releases before the fields."""
        fields = dataclasses.asdict(self)
        if fields["padding"] == "zeros":
            del fields["padding"]
        if not self.conditional:
            del fields["cond_embed"], fields["cond_hidden"]
        return json.dumps(fields, sort_keys=True)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PQCodecModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        with float32_default():  # float32 weights whatever the caller's default dtype
            self._build(config)

    def _build(self, config: ModelConfig):
        self.config = c = config
        D = c.num_subvectors * c.subvector_dim
        self.encoder = Encoder(c.channels, D, c.padding)
        self.quantizer = ProductQuantizer(c.num_subvectors, c.codebook_size, c.subvector_dim)
        self.decoder = Decoder(c.channels, D, c.padding)
        self.prior = MIMPrior(c.num_subvectors, c.codebook_size, c.window, c.prior_dim,
                              c.prior_layers, c.prior_heads)
        # the prior the coder runs: integer-exact, made from `prior` by calibration (train/quantize.py)
        self.int_prior = IntegerPrior(c.num_subvectors, c.codebook_size, c.window, c.prior_dim,
                                      c.prior_layers, c.prior_heads)
        # a head file's base weights (`load`), the file holding its autoencoder: path and SHA-256
        self.base_path: Path | None = None
        self.base_sha256: str | None = None
        if c.conditional:  # float (trains) and integer (codes, calibrated from it: train/conditional.py)
            self.cond = ConditionalHead(c.num_subvectors, c.codebook_size, c.prior_dim, c.cond_embed, c.cond_hidden)
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
        float16 (loaded as float32)."""
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
    def load(cls, path: str | Path, without_prior: bool = False, search: tuple = ()) -> "PQCodecModel":
        """without_prior: take only the autoencoder and quantizer from the file (the priors keep
        their fresh initialisation), to train a new prior on a trained autoencoder. A file without
        an integer prior (a training checkpoint, or weights of pqcodec 0.3.0 and before) loads with
        an uncalibrated one: it trains, but does not code until `pqcodec-train quantize`. A head file
        (`save`'s base) loads with its base, found beside it or in one of the folders `search`."""
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{path}: not a pqcodec weights file (no config in its metadata)")
        model = cls(ModelConfig.from_json(meta["config"]))
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
        model.load_state_dict(state)
        return model.eval()
