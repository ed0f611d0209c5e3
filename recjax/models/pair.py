"""Pair embeddings (``--model pair``): SageMaker Object2Vec in JAX / Flax NNX.

Two encoders turn token sequences ``in0`` and ``in1`` into vectors ``e0``,
``e1`` of size ``enc_dim``; a comparator joins them (``comparator_list``, by
default ``[e0 * e1, e0, e1, |e0 - e1|]``) and an MLP predicts the pair's
relationship: a rating (``output_layer="mean_squared_error"``) or class logits
(``"softmax"``). On MovieLens, ``in0`` is the user and ``in1`` the movie, each a
one-token sequence (plus side-feature tokens with ``side_features``); from
Object2Vec JSON Lines files (``jsonl_train`` ...) the tokens are whatever the
files hold.

Encoders (``enc0_network``, ``enc1_network``):

* ``pooled_embedding``: masked mean of the token embeddings (order-free);
* ``hcnn``: ``enc0_layers`` convolutions of width ``enc0_cnn_filter_width``
  (ReLU, padding re-zeroed after each), max-pooled over the real tokens;
* ``bilstm``: ``enc0_layers`` bidirectional LSTM layers; the last forward and
  backward states;
* ``enc1_network="enc0"``: in1 goes through the very same encoder (one
  vocabulary; on MovieLens the movie tokens follow the user tokens).

Each ends in a linear projection to ``enc_dim``. ``tied_token_embedding_weight``
shares only the token table. Padding (:data:`recjax.data.jsonlines.PAD`, -1) is
masked everywhere and moved behind the real tokens first, so padding never
changes an output.

Side features (``side_features``, MovieLens only): in0 gets the user's age group
(ml-1m's bins), sex and occupation tokens, in1 the movie's genre tokens and a
release-year token, all mean-pooled with the id token. ``dropout`` acts on the
comparator output and after each hidden MLP layer; ``negative_sampling_rate``
``k`` adds ``k`` pairs with a random in1 as label 0 per example (binary task).
``token_bias`` (not in Object2Vec) adds a learned bias per token and output,
summed over each side's real tokens, to the output layer: user, movie and
side-feature biases, as in biased matrix factorisation.
Defaults differ from Object2Vec's where validation on ml-100k chose otherwise
(``enc1_network`` is ``pooled_embedding``, not ``enc0``; dims 128; dropout 0.7).

Object2Vec's hyper-parameters keep their names here; the training ones live in
:class:`recjax.config.RunConfig`:

===============================  =====================================
Object2Vec                       recjax
===============================  =====================================
``optimizer``                    ``--optimizer`` (adam, adagrad, sgd, adamw)
``learning_rate``                ``--learning-rate``
``mini_batch_size``              ``--batch-size``
``epochs``                       ``--epochs``
``weight_decay``                 ``--weight-decay`` (with ``--optimizer adamw``)
``early_stopping_patience``      ``--patience``
``early_stopping_tolerance``     ``--tolerance``
``output_layer``                 ``--output-layer`` and ``--task``: ``mean_squared_error``
                                 is ``--task regression``; ``softmax`` with
                                 ``num_classes=2`` is ``--task binary`` (the model
                                 emits ``l1 - l0``, whose sigmoid is the softmax's
                                 class-1 probability)
``enc0_layers="auto"``           ``--enc0-layers 0``
``enc0_vocab_size`` (required)   ``0`` = from the training data
``enc0_max_seq_len`` (required)  ``0`` = no limit
===============================  =====================================

Not carried over: pre-trained token embeddings, ``bucket_width``,
``token_embedding_storage_type``, ``num_classes > 2`` (needs a multi-class task).

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.pair import PairConfig, PairModel
>>> model = PairModel(PairConfig(enc_dim=8, enc0_token_embedding_dim=4, enc1_token_embedding_dim=4,
...                              mlp_dim=8), vocab_sizes=(10, 20), rngs=nnx.Rngs(0))
>>> batch = {"in0": jnp.array([[1, 2, -1], [3, -1, -1]]), "in1": jnp.array([[5], [19]])}
>>> model(batch).shape
(2,)
>>> model.encode(0, batch["in0"]).shape
(2, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PAD, PairData
from recjax.data.tokens import check_class_labels, movielens_tokens, pair_vocab, read_pair_parts
from recjax.models.base import TABLE, Constant, rating_inputs
from recjax.models.capabilities import Capabilities

__all__ = ["PairConfig", "PairModel"]

ENCODERS = ("pooled_embedding", "hcnn", "bilstm")
COMPARATORS = ("hadamard", "concat", "abs_diff")
ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "linear": lambda x: x}
OUTPUT_LAYERS = ("auto", "mean_squared_error", "softmax")
_AUTO_LAYERS = {"pooled_embedding": 1, "hcnn": 2, "bilstm": 1}


@dataclass(frozen=True)
class PairConfig:
    """Object2Vec hyper-parameters (defaults: the recommended ml-100k setting)."""

    enc0_network: str = field(
        default="pooled_embedding",
        metadata={"help": "in0 encoder: pooled_embedding, hcnn or bilstm", "choices": ENCODERS})
    enc0_max_seq_len: int = field(
        default=0, metadata={"help": "in0 tokens kept, longer sequences are cut; 0 = no limit"})
    enc0_vocab_size: int = field(
        default=0, metadata={"help": "in0 token table rows; 0 = from the training data"})
    enc0_token_embedding_dim: int = field(
        default=128, metadata={"help": "in0 token embedding size"})
    enc0_layers: int = field(
        default=0,
        metadata={"help": "in0 encoder depth; 0 = auto (pooled_embedding 1, hcnn 2, bilstm 1)"})
    enc0_cnn_filter_width: int = field(default=3, metadata={"help": "hcnn convolution width (in0)"})
    enc1_network: str = field(
        default="pooled_embedding",
        metadata={"help": "in1 encoder: as enc0_network, or \"enc0\" to share enc0",
                  "choices": ENCODERS + ("enc0",)})
    enc1_max_seq_len: int = field(default=0, metadata={"help": "in1 tokens kept; 0 = no limit"})
    enc1_vocab_size: int = field(
        default=0, metadata={"help": "in1 token table rows; 0 = from the training data"})
    enc1_token_embedding_dim: int = field(
        default=128, metadata={"help": "in1 token embedding size"})
    enc1_layers: int = field(default=0, metadata={"help": "in1 encoder depth; 0 = auto"})
    enc1_cnn_filter_width: int = field(default=3, metadata={"help": "hcnn convolution width (in1)"})
    tied_token_embedding_weight: bool = field(
        default=False, metadata={"help": "one token table for in0 and in1"})
    enc_dim: int = field(default=128, metadata={"help": "size of both encodings"})
    comparator_list: str = field(
        default="hadamard,concat,abs_diff",
        metadata={"help": "comma-separated: hadamard, concat, abs_diff"})
    mlp_layers: int = field(
        default=1, metadata={"help": "hidden layers of the MLP on the comparator output"})
    mlp_dim: int = field(default=256, metadata={"help": "width of each hidden MLP layer"})
    mlp_activation: str = field(
        default="relu", metadata={"help": "tanh, relu or linear", "choices": tuple(ACTIVATIONS)})
    dropout: float = field(
        default=0.7,
        metadata={"help": "dropout rate on the comparator output and each hidden MLP layer"})
    output_layer: str = field(
        default="auto",
        metadata={"help": "mean_squared_error, softmax, or auto (follows --task)",
                  "choices": OUTPUT_LAYERS})
    num_classes: int = field(default=2, metadata={"help": "classes of the softmax output layer"})
    negative_sampling_rate: int = field(
        default=0, metadata={"help": "binary task: random in1 per pair added as label 0"})
    l2: float = field(
        default=0.0,
        metadata={"help": "L2 on the token embeddings looked up in a batch (mean over the "
                          "batch)"})
    token_bias: bool = field(
        default=False,
        metadata={"help": "add a learned per-token bias (summed over each side's tokens) to "
                          "the output"})
    side_features: bool = field(
        default=True,
        metadata={"help": "MovieLens: add age/sex/occupation tokens to in0, genres/year to "
                          "in1 (JSON Lines: ignored)"})
    jsonl_train: str = field(
        default="",
        metadata={"help": "train on this Object2Vec JSON Lines file instead of --dataset"})
    jsonl_validation: str = field(
        default="",
        metadata={"help": "validation JSON Lines file; default: carved from jsonl_train"})
    jsonl_test: str = field(
        default="", metadata={"help": "test JSON Lines file; default: the validation part"})

    def __post_init__(self) -> None:
        for side in ("enc0", "enc1"):
            network = getattr(self, f"{side}_network")
            allowed = ENCODERS + (("enc0",) if side == "enc1" else ())
            if network not in allowed:
                raise ValueError(f"unknown {side}_network {network!r}; choose one of {', '.join(allowed)}")
            for name in ("max_seq_len", "vocab_size", "layers"):
                if getattr(self, f"{side}_{name}") < 0:
                    raise ValueError(f"{side}_{name} must be >= 0, got {getattr(self, f'{side}_{name}')}")
            for name in ("token_embedding_dim", "cnn_filter_width"):
                if getattr(self, f"{side}_{name}") < 1:
                    raise ValueError(f"{side}_{name} must be >= 1, got {getattr(self, f'{side}_{name}')}")
        if self.enc_dim < 1:
            raise ValueError(f"enc_dim must be >= 1, got {self.enc_dim}")
        comparators = self.comparators
        unknown = [c for c in comparators if c not in COMPARATORS]
        if unknown or not comparators:
            raise ValueError(f"invalid comparator_list {self.comparator_list!r}; use a comma-separated "
                             f"list of {', '.join(COMPARATORS)}")
        if self.mlp_activation not in ACTIVATIONS:
            raise ValueError(f"unknown mlp_activation {self.mlp_activation!r}; choose one of "
                             f"{', '.join(ACTIVATIONS)}")
        if self.output_layer not in OUTPUT_LAYERS:
            raise ValueError(f"unknown output_layer {self.output_layer!r}; choose one of {', '.join(OUTPUT_LAYERS)}")
        if self.output_layer == "softmax" and self.num_classes < 2:
            raise ValueError(f"output_layer='softmax' needs num_classes >= 2, got {self.num_classes}")
        for name in ("mlp_layers", "negative_sampling_rate", "l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mlp_dim < 1:
            raise ValueError(f"mlp_dim must be >= 1, got {self.mlp_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if (self.jsonl_validation or self.jsonl_test) and not self.jsonl_train:
            raise ValueError("jsonl_validation / jsonl_test need jsonl_train")

    @property
    def comparators(self) -> tuple[str, ...]:
        """``comparator_list`` as a tuple of names (order kept)."""
        return tuple(c.strip() for c in self.comparator_list.split(",") if c.strip())


def resolve_output_layer(cfg: PairConfig, task: str) -> str:
    """The output layer for ``task``: ``mean_squared_error`` (regression) or ``softmax`` (binary).

    Raises
    ------
    ValueError
        ``output_layer`` contradicts the task, or ``num_classes`` is not 2 for the binary task.
    """
    wanted = {"regression": "mean_squared_error", "binary": "softmax"}[task]
    if cfg.output_layer not in ("auto", wanted):
        raise ValueError(f"output_layer={cfg.output_layer!r} does not fit --task {task} "
                         f"(use {wanted!r}, or 'auto')")
    if wanted == "softmax" and cfg.num_classes != 2:
        raise ValueError(f"num_classes={cfg.num_classes}: recjax trains the softmax output layer as the "
                         f"binary task, which has 2 classes")
    return wanted


# ----------------------------------------------------------------------------- encoders
def _compact(tokens: jax.Array) -> jax.Array:
    """Move the real tokens of each row to the front, keeping their order; [B, L] -> [B, L]."""
    order = jnp.argsort((tokens < 0).astype(jnp.int32), axis=-1, stable=True)
    return jnp.take_along_axis(tokens, order, axis=-1)


class TokenEncoder(nnx.Module):
    """Token sequences [B, L] (``PAD`` = -1) -> encodings [B, enc_dim].

    Parameters
    ----------
    network : {"pooled_embedding", "hcnn", "bilstm"}
    vocab_size, token_dim, layers, filter_width, enc_dim : int
        ``layers`` = 0 means the network's automatic depth.
    max_seq_len : int
        Tokens beyond this are cut (0 = keep all).
    table : nnx.Embed, optional
        A token table to share (``tied_token_embedding_weight``).
    rngs : nnx.Rngs
    """

    def __init__(self, network: str, vocab_size: int, token_dim: int, layers: int, filter_width: int,
                 enc_dim: int, *, max_seq_len: int = 0, table: nnx.Embed | None = None,
                 rngs: nnx.Rngs) -> None:
        self.network, self.max_seq_len = network, max_seq_len
        self.vocab_size = vocab_size
        self.table = table if table is not None else nnx.Embed(vocab_size, token_dim, rngs=rngs,
                                                                   embedding_metadata=TABLE)
        depth = layers or _AUTO_LAYERS[network]
        if network == "pooled_embedding":
            self.hidden = nnx.List([nnx.Linear(token_dim, token_dim, rngs=rngs) for _ in range(depth - 1)])
            out_in = token_dim
        elif network == "hcnn":
            widths = [token_dim] + [enc_dim] * depth
            self.hidden = nnx.List([nnx.Conv(a, b, (filter_width,), padding="SAME", rngs=rngs)
                                    for a, b in zip(widths[:-1], widths[1:])])
            out_in = enc_dim
        else:  # bilstm
            self.hidden = nnx.List([
                nnx.Bidirectional(
                    nnx.RNN(nnx.LSTMCell(token_dim if i == 0 else 2 * token_dim, token_dim, rngs=rngs),
                            rngs=False),
                    nnx.RNN(nnx.LSTMCell(token_dim if i == 0 else 2 * token_dim, token_dim, rngs=rngs),
                            rngs=False),
                    rngs=False)
                for i in range(depth)])
            self.lstm_dim = token_dim
            out_in = 2 * token_dim
        self.project = nnx.Linear(out_in, enc_dim, rngs=rngs)

    def lookup(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(token embeddings [B, L, D] with padding zeroed, mask [B, L] float)."""
        if self.max_seq_len:
            tokens = tokens[:, : self.max_seq_len]
        mask = (tokens >= 0).astype(jnp.float32)
        vectors = self.table(jnp.clip(tokens, 0, self.vocab_size - 1)) * mask[..., None]
        return vectors, mask

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if self.network != "pooled_embedding":
            tokens = _compact(tokens)
        x, mask = self.lookup(tokens)
        count = jnp.sum(mask, axis=-1, keepdims=True)
        if self.network == "pooled_embedding":
            h = jnp.sum(x, axis=1) / jnp.maximum(count, 1.0)
            for layer in self.hidden:
                h = jax.nn.relu(layer(h))
        elif self.network == "hcnn":
            h = x
            for layer in self.hidden:
                h = jax.nn.relu(layer(h)) * mask[..., None]
            h = jnp.max(jnp.where(mask[..., None] > 0, h, -jnp.inf), axis=1)
            h = jnp.where(count > 0, h, 0.0)
        else:
            lengths = jnp.maximum(count[:, 0], 1).astype(jnp.int32)
            zeros = jnp.zeros((x.shape[0], self.lstm_dim), x.dtype)
            h_seq = x
            for layer in self.hidden:
                (fwd, bwd), h_seq = layer(h_seq, seq_lengths=lengths, return_carry=True,
                                          initial_carry=((zeros, zeros), (zeros, zeros)))
                h_seq = h_seq * mask[..., None]
            h = jnp.concatenate([fwd[1], bwd[1]], axis=-1) * (count > 0)
        return self.project(h)


def _compare(e0: jax.Array, e1: jax.Array, comparators: tuple[str, ...]) -> jax.Array:
    """The comparator layer: [B, d] x [B, d] -> [B, k d], parts in ``comparators`` order.

    ``hadamard`` gives ``e0 * e1``, ``concat`` gives ``e0, e1``, ``abs_diff`` gives ``|e0 - e1|``.
    """
    parts = {"hadamard": lambda: [e0 * e1], "concat": lambda: [e0, e1], "abs_diff": lambda: [jnp.abs(e0 - e1)]}
    return jnp.concatenate([p for name in comparators for p in parts[name]()], axis=-1)


# ----------------------------------------------------------------------------- the model
class PairModel(nnx.Module):
    """Object2Vec: two encoders, a comparator and an MLP.

    A batch holds either token sequences ``in0`` [B, L0] and ``in1`` [B, L1]
    (``PAD``-padded), or, for models built with ``tokens`` tables (MovieLens),
    ``user`` [B] and ``item`` [B] indices whose rows of those tables are the
    sequences.

    Parameters
    ----------
    cfg : PairConfig
    vocab_sizes : (int, int)
        Rows of the in0 and in1 token tables (ignored for a shared table/encoder,
        which has ``sum`` rows when ``tokens`` are given and ``max`` rows otherwise).
    tokens : (int array [n_users, L0], int array [n_items, L1]), optional
        Constant token sequences of every user and item (MovieLens mode).
    task : {"regression", "binary"}
    global_mean : float
        Initial output bias of the regression head (the training mean).
    rngs : nnx.Rngs

    It scores pairs, embeds and ranks the catalogue (MovieLens models): by ranking
    vectors where its comparator and MLP are linear in ``e0 * e1``
    (:meth:`ranking_vectors`), else by its dense scores. It cannot fold in a new user:
    its users are tokens learned in training (see :mod:`recjax.models.base`).
    """

    capabilities = Capabilities(pairs=True, ranks=True, embeds=True)

    def __init__(self, cfg: PairConfig, vocab_sizes: tuple[int, int], *,
                 tokens: tuple[np.ndarray, np.ndarray] | None = None, task: str = "regression",
                 global_mean: float = 0.0, rngs: nnx.Rngs) -> None:
        output_layer = resolve_output_layer(cfg, task)
        if cfg.negative_sampling_rate and task != "binary":
            raise ValueError("negative_sampling_rate applies to the binary task (output_layer='softmax') only")
        self.cfg, self.task = cfg, task
        v0, v1 = (int(v) for v in vocab_sizes)
        shared = cfg.enc1_network == "enc0"
        if cfg.tied_token_embedding_weight and not shared and \
                cfg.enc0_token_embedding_dim != cfg.enc1_token_embedding_dim:
            raise ValueError("tied_token_embedding_weight needs enc0_token_embedding_dim == "
                             "enc1_token_embedding_dim")
        joint = shared or cfg.tied_token_embedding_weight
        # MovieLens: users and items are different things, so a joint table stacks them
        self.in1_offset = v0 if (joint and tokens is not None) else 0
        if joint:
            v0 = v1 = v0 + v1 if tokens is not None else max(v0, v1)
        self.vocab_sizes = (v0, v1)
        if tokens is not None:
            self.in0_tokens = Constant(jnp.asarray(tokens[0], jnp.int32))
            in1 = np.asarray(tokens[1], np.int32)
            self.in1_tokens = Constant(jnp.asarray(np.where(in1 >= 0, in1 + self.in1_offset, PAD), jnp.int32))
        else:
            self.in0_tokens = self.in1_tokens = None
        self.encoder0 = TokenEncoder(
            cfg.enc0_network, v0, cfg.enc0_token_embedding_dim, cfg.enc0_layers, cfg.enc0_cnn_filter_width,
            cfg.enc_dim, max_seq_len=cfg.enc0_max_seq_len, rngs=rngs)
        if shared:
            self.encoder1 = self.encoder0
        else:
            table = self.encoder0.table if cfg.tied_token_embedding_weight else None
            self.encoder1 = TokenEncoder(
                cfg.enc1_network, v1, cfg.enc1_token_embedding_dim, cfg.enc1_layers, cfg.enc1_cnn_filter_width,
                cfg.enc_dim, max_seq_len=cfg.enc1_max_seq_len, table=table, rngs=rngs)
        width = cfg.enc_dim * sum(2 if c == "concat" else 1 for c in cfg.comparators)
        self.mlp = nnx.List()
        for _ in range(cfg.mlp_layers):
            self.mlp.append(nnx.Linear(width, cfg.mlp_dim, rngs=rngs))
            width = cfg.mlp_dim
        self.dropout = nnx.Dropout(cfg.dropout) if cfg.dropout else None
        n_out = 1 if output_layer == "mean_squared_error" else cfg.num_classes
        bias = float(global_mean) if output_layer == "mean_squared_error" else 0.0
        self.head = nnx.Linear(width, n_out, bias_init=jax.nn.initializers.constant(bias), rngs=rngs)
        self.output_layer = output_layer
        if cfg.token_bias:  # one bias per token and output, zero at the start
            self.biases = nnx.List([nnx.Embed(v, n_out, embedding_init=jax.nn.initializers.zeros, rngs=rngs,
                                              embedding_metadata=TABLE) for v in self.vocab_sizes])
        else:
            self.biases = None

    # -------------------------------------------------------------- inputs
    def tokens(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """(in0 [B, L0], in1 [B, L1]) token sequences of a batch."""
        if "in0" in batch:
            return batch["in0"], batch["in1"]
        if self.in0_tokens is None:
            raise ValueError("this pair model was built without token tables: batches need 'in0' and 'in1'")
        return self.in0_tokens[...][batch["user"]], self.in1_tokens[...][batch["item"]]

    def encode(self, side: int, tokens: jax.Array) -> jax.Array:
        """Encodings [B, enc_dim] of one side's token sequences [B, L] (0 = in0, 1 = in1).

        On MovieLens models ``tokens`` are rows of the model's token tables
        (in1 rows already offset for a joint table).
        """
        return (self.encoder0 if side == 0 else self.encoder1)(tokens)

    # -------------------------------------------------------------- forward
    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Ratings (regression) or binary logits ``l1 - l0`` [B]; see :meth:`logits` for all classes."""
        logits = self.logits(batch, train=train, rngs=rngs)
        if self.output_layer == "mean_squared_error":
            return logits[:, 0]
        return logits[:, 1] - logits[:, 0]

    def logits(self, batch: dict[str, jax.Array], *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
        """The output layer [B, 1] (regression) or [B, num_classes] (softmax)."""
        in0, in1 = self.tokens(batch)
        h = _compare(self.encoder0(in0), self.encoder1(in1), self.cfg.comparators)
        h = self._drop(h, train, rngs)
        act = ACTIVATIONS[self.cfg.mlp_activation]
        for layer in self.mlp:
            h = self._drop(act(layer(h)), train, rngs)
        out = self.head(h)
        if self.biases is not None:
            for table, tokens in zip(self.biases, (in0, in1)):
                mask = (tokens >= 0)[..., None]
                out = out + jnp.sum(table(jnp.clip(tokens, 0, table.num_embeddings - 1)) * mask, axis=1)
        return out

    def _drop(self, h: jax.Array, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
        if self.dropout is None or not train:
            return h
        return self.dropout(h, deterministic=False, rngs=rngs)

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """``l2`` times the mean (over the batch) squared norm of the looked-up token embeddings."""
        if not self.cfg.l2:
            return jnp.zeros(())
        in0, in1 = self.tokens(batch)
        total = 0.0
        for encoder, tokens in ((self.encoder0, in0), (self.encoder1, in1)):
            vectors, _ = encoder.lookup(tokens)
            total = total + jnp.sum(vectors ** 2, axis=(1, 2))
        weight = batch.get("weight", jnp.ones_like(total))
        return self.cfg.l2 * jnp.sum(total * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    def augment(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """``negative_sampling_rate`` k: append k pairs per example with a random in1, label 0.

        MovieLens models draw the item uniformly from the catalogue; token batches
        take the in1 of a random example of the same batch (the data's in1 distribution).
        """
        k = self.cfg.negative_sampling_rate
        if not k:
            return batch
        size = batch["label"].shape[0]
        out = {"label": jnp.concatenate([batch["label"], jnp.zeros((k * size,), batch["label"].dtype)]),
               "weight": jnp.concatenate([batch["weight"], jnp.tile(batch["weight"], k)])}
        if "in0" in batch:
            pick = jax.random.randint(key, (k * size,), 0, size)
            out["in0"] = jnp.concatenate([batch["in0"], jnp.tile(batch["in0"], (k, 1))])
            out["in1"] = jnp.concatenate([batch["in1"], batch["in1"][pick]])
        else:
            n_items = self.in1_tokens.shape[0]
            out["user"] = jnp.concatenate([batch["user"], jnp.tile(batch["user"], k)])
            out["item"] = jnp.concatenate([batch["item"], jax.random.randint(key, (k * size,), 0, n_items)])
        return out

    def row_lookups(self) -> dict[tuple, tuple[str, ...]]:
        """The token tables by the token fields indexing them (``in0``, ``in1``; on MovieLens
        models :meth:`lookup_fields` adds them): see :mod:`recjax.models.base`."""
        shared = self.encoder1.table is self.encoder0.table
        lookups = {("encoder0", "table", "embedding"): ("in0", "in1") if shared else ("in0",)}
        if not shared:
            lookups[("encoder1", "table", "embedding")] = ("in1",)
        if self.biases is not None:
            lookups.update({("biases", 0, "embedding"): ("in0",), ("biases", 1, "embedding"): ("in1",)})
        return lookups

    def lookup_fields(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The batch with its token sequences ``in0``, ``in1`` (MovieLens models: the rows
        of the token tables of its users and items), the fields :meth:`row_lookups` names."""
        in0, in1 = self.tokens(batch)
        return {**batch, "in0": in0, "in1": in1}

    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(user encodings [n_users, enc_dim], item encodings [n_items, enc_dim]) — MovieLens models."""
        if self.in0_tokens is None:
            raise ValueError("embeddings() needs a model built on MovieLens data; use encode() on tokens")
        return _chunked(self.encoder0, self.in0_tokens[...]), _chunked(self.encoder1, self.in1_tokens[...])

    @property
    def n_items(self) -> int | None:
        """Items of a MovieLens model (rows of its in1 token table); None for token models."""
        return None if self.in1_tokens is None else int(self.in1_tokens.shape[0])

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(users [U, d + 1], items [N, d + 1]) float32 ranking like this MovieLens model,
        when its comparator and MLP allow; None otherwise.

        With comparators among ``hadamard`` and ``concat`` and a linear MLP (no hidden
        layer, or ``mlp_activation="linear"``), the score is affine in
        ``[e0 * e1, e0, e1]``: ``w_h . (e0 * e1) + w_0 . e0 + w_1 . e1 + c``, so for one
        user the order is that of ``[e0, 1] . [w_h * e1, w_1 . e1]``. ``abs_diff``, a
        non-linear MLP or a model of JSON Lines tokens (no users) give None: such a
        model is ranked by its dense scores. With ``token_bias``, the in1 tokens' biases
        join the items' constant (the in0 ones are constant for a user).
        """
        comparators = self.cfg.comparators
        if self.in0_tokens is None or "abs_diff" in comparators:
            return None
        if len(self.mlp) and self.cfg.mlp_activation != "linear":
            return None
        e0, e1 = (np.asarray(t, np.float64) for t in self.embeddings())
        d = e0.shape[1]
        a = np.eye(d * sum(2 if c == "concat" else 1 for c in comparators))
        for layer in list(self.mlp) + [self.head]:
            a = a @ np.asarray(layer.kernel[...], np.float64)
        w = a[:, 0] if a.shape[1] == 1 else a[:, 1] - a[:, 0]  # regression, or binary l1 - l0
        item_vec, item_const, pos = np.zeros_like(e1), np.zeros(e1.shape[0]), 0
        for c in comparators:
            if c == "hadamard":
                item_vec += e1 * w[pos:pos + d]
                pos += d
            else:  # concat: the e0 half is constant for a user
                item_const += e1 @ w[pos + d:pos + 2 * d]
                pos += 2 * d
        if self.biases is not None:  # sum of the item's token biases, per output
            tokens = np.asarray(self.in1_tokens[...])
            rows = np.asarray(self.biases[1].embedding[...], np.float64)
            bias = np.sum(rows[np.clip(tokens, 0, len(rows) - 1)] * (tokens >= 0)[..., None], axis=1)
            item_const += bias[:, 0] if bias.shape[1] == 1 else bias[:, 1] - bias[:, 0]
        users = np.hstack([e0, np.ones((e0.shape[0], 1))]).astype(np.float32)
        return users, np.hstack([item_vec, item_const[:, None]]).astype(np.float32)


def _chunked(encoder: TokenEncoder, tokens: jax.Array, chunk: int = 4096) -> jax.Array:
    return jnp.concatenate([encoder(tokens[i: i + chunk]) for i in range(0, tokens.shape[0], chunk)])


# ----------------------------------------------------------------------------- data
def load_pair_parts(cfg: PairConfig, task: str, val_fraction: float, seed: int) -> dict[str, PairData]:
    """``{"train", "val", "test"}`` pairs from ``cfg``'s JSON Lines files
    (:func:`recjax.data.tokens.read_pair_parts` with the configured vocabulary sizes)."""
    return read_pair_parts(cfg.jsonl_train, cfg.jsonl_validation, cfg.jsonl_test, task=task,
                           val_fraction=val_fraction, seed=seed,
                           vocab_sizes=(cfg.enc0_vocab_size, cfg.enc1_vocab_size))


def build_pair(cfg: PairConfig, train: Ratings | PairData, task: str = "regression", seed: int = 0) -> PairModel:
    """The pair model for a training part: MovieLens ratings or JSON Lines pairs."""
    if isinstance(train, PairData):
        if task == "binary":
            check_class_labels(train.label, cfg.jsonl_train or "training pairs")
        mean = float(np.mean(train.label)) if task == "regression" else 0.0
        vocab = pair_vocab(train, (cfg.enc0_vocab_size, cfg.enc1_vocab_size))
        return PairModel(cfg, vocab, task=task, global_mean=mean, rngs=nnx.Rngs(seed))
    in0, in1, vocab0, vocab1 = movielens_tokens(train, cfg.side_features)
    sizes = []
    for side, need in ((0, vocab0), (1, vocab1)):
        given = getattr(cfg, f"enc{side}_vocab_size")
        if given and given < need:
            raise ValueError(f"enc{side}_vocab_size={given} is smaller than the largest in{side} token id "
                             f"seen ({need - 1}); it must be at least {need} (or 0 = from the data)")
        sizes.append(given or need)
    mean = float(np.mean(train.rating)) if task == "regression" else 0.0
    return PairModel(cfg, (sizes[0], sizes[1]), tokens=(in0, in1), task=task, global_mean=mean,
                     rngs=nnx.Rngs(seed))


def pair_inputs(part: Ratings | PairData, *, task: str = "regression",
                binary_threshold: float = 3.0) -> dict[str, np.ndarray]:
    """One example per rating (``user``, ``item``, ``label``) or per JSON Lines pair (``in0``, ``in1``, ``label``)."""
    if isinstance(part, PairData):
        return {"in0": part.in0, "in1": part.in1, "label": part.label.astype(np.float32)}
    return rating_inputs(part, task=task, binary_threshold=binary_threshold)


def load_jsonl_splits(cfg: PairConfig, *, task: str, val_fraction: float,
                      seed: int) -> dict[str, PairData] | None:
    """The JSON Lines parts when ``cfg.jsonl_train`` is set, else ``None`` (use ``--dataset``)."""
    if not cfg.jsonl_train:
        return None
    for name in ("jsonl_train", "jsonl_validation", "jsonl_test"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{name}: no such file {path}")
    return load_pair_parts(cfg, task, val_fraction, seed)
