"""uslkit: unsupervised selective labeling, from embeddings to a labels file to semi-supervised training.

Data flows one way: dataset -> embeddings -> kNN graph -> clusters -> selection -> labels file ->
training -> evaluation -> figures, one module per stage (see the README).
"""

__version__ = "0.1.0"
