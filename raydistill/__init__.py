"""raydistill: find the best way to distill a HuBERT speech model.

Data flow, one sub-package per stage:
corpus -> teacher -> targets -> models -> losses -> train -> evaluate -> search -> tracking -> export
(docs/architecture.md#data-flow)
"""

__version__ = "0.1.0"
