"""A model's configuration: the shapes of its networks, its levels, its prior's window and schedule
seed, saved as JSON in the weights file's metadata beside the tensors (model.py). Reading it needs no
torch (the CLI reads a model's levels from it).
"""
import dataclasses
import json
from dataclasses import dataclass

STRIDE = 8                            # pixels per token: the transforms of every model (nets/autoencoder.py)
PADDINGS = ("zeros", "replicate")   # ModelConfig.padding


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
        return STRIDE

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
