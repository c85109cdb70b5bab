"""The book's models, one short file each, and a registry to build them by name.

>>> from ctr_src import models
>>> m = models.build("fm", field_dims=[3, 4], embed_dim=8)
>>> sorted(models.REGISTRY)[:3]
['afm', 'deepfm', 'din']

**Real values.** Every model reads ``batch["fields"]`` ``(B, F) long`` and,
optionally, ``batch["values"]`` ``(B, F) float``: the value ``x_i`` of field
``i`` (1 for a one-hot field, the default when ``values`` is absent). Where it
enters, per model (each model's docstring gives the paper's section):

============  ===========  ======================  ======================
model         linear part  scales the vector       MLP input
                           ``e_i = v_i x_i``
============  ===========  ======================  ======================
LR            ``w_i x_i``  (no vectors)            (no MLP)
FM            ``w_i x_i``  yes: pairs ``x_i x_j``  (no MLP)
FFM           ``w_i x_i``  yes: pairs ``x_i x_j``  (no MLP)
FwFM          ``w_i x_i``  yes: pairs ``x_i x_j``  (no MLP)
AFM           ``w_i x_i``  yes: pairs, attention   (no MLP)
PNN           (none)       yes: ``l_z``, products  ``l_z`` and products
Wide & Deep   ``w_i x_i``  yes                     ``e_i``; raw ``x_f``
                                                   appended for
                                                   ``dense_fields``
EmbeddingMLP  (none)       yes                     ``e_i``
DeepFM        ``w_i x_i``  yes: FM pairs, MLP      ``e_i`` (no raw value)
DIN, base     (none)       yes: fields, target     ``e_i`` (history
                                                   vectors unscaled)
MeanBaseline  ignored      ignored                 ignored
============  ===========  ======================  ======================

Only :class:`WideAndDeep` concatenates raw values to the MLP input (Cheng et
al., 2016, Sec. 4.3: "we concatenate all the embeddings together with the
dense features"), and only for the fields named in ``dense_fields`` (default
none). Without ``values`` (MovieLens) every model is exactly the one-hot model.
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
