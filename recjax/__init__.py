"""recjax: recommender systems for researchers.

A JAX/Flax numerical core (models, optax optimisers, jit-compiled epochs) and a
C-accelerated exact top-k retrieval kernel, over MovieLens-style rating data.
"""

__version__ = "0.1.0"
