"""The book's models, one short file each, and a registry to build them by name.

>>> from ctr_src import models
>>> m = models.build("fm", field_dims=[3, 4], embed_dim=8)
>>> sorted(models.REGISTRY)[:3]
['afm', 'deepfm', 'din']
"""

from __future__ import annotations

from functools import partial

from .afm import AFM
from .base import CTRModel
from .baseline import MeanBaseline
from .deepfm import DeepFM, EmbeddingMLP
from .din import DIN, DINBase
from .fm import FFM, FM, FwFM
from .lr import LR
from .pnn import PNN
from .widedeep import WideAndDeep

REGISTRY = {
    "lr": LR,
    "fm": FM,
    "ffm": FFM,
    "fwfm": FwFM,
    "afm": AFM,
    "ipnn": partial(PNN, product="inner"),
    "opnn": partial(PNN, product="outer"),
    "pnn": partial(PNN, product="both"),
    "wide_deep": WideAndDeep,
    "embedding_mlp": EmbeddingMLP,
    "deepfm": DeepFM,
    "din_base": DINBase,
    "din": DIN,
}


def build(name: str, **kwargs) -> CTRModel:
    """Build a registered model by name, e.g. ``build("deepfm", field_dims=dims, embed_dim=16)``.

    Raises ``ValueError`` listing the known names for an unknown one.
    """
    key = name.lower().replace("-", "_").replace("&", "_") if isinstance(name, str) else name
    if key not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key](**kwargs)


__all__ = ["REGISTRY", "build", "CTRModel", "LR", "FM", "FFM", "FwFM", "AFM", "PNN", "WideAndDeep",
           "EmbeddingMLP", "DeepFM", "DIN", "DINBase", "MeanBaseline"]
