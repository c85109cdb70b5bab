"""Verified CTR models for the book *CTR Models from First Principles*.

Modules, one idea each:

* :mod:`ctr_src.data` -- MovieLens-100K fetched and verified, framed as CTR data;
* :mod:`ctr_src.layers` -- the building blocks (embeddings, FM, products, attention, MLP);
* :mod:`ctr_src.models` -- one short file per model, built by name with :func:`ctr_src.models.build`;
* :mod:`ctr_src.train` -- one trainer for every model (early stopping, best-weights restore);
* :mod:`ctr_src.metrics` -- AUC, logloss and GAUC;
* :mod:`ctr_src.utils` -- seeding, device choice, parameter counts;
* :mod:`ctr_src.plots` -- the few plot helpers the chapters share.
"""

__version__ = "0.1.0"
