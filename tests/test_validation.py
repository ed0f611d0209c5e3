"""The bag models' on-device validation (recjax.train.validation) against the evaluation
package's NumPy ranking metrics: one definition of precision and recall at k."""

import numpy as np
import scipy.sparse as sp

from recjax.data import synthetic_ratings
from recjax.data.splits import holdout_split
from recjax.evaluation.metrics import ranking_metrics
from recjax.models.softmax import SoftmaxConfig, build_softmax, softmax_inputs
from recjax.retrieval import dense_topk
from recjax.train.step import Model
from recjax.train.validation import bag_validator


def test_bag_validator_equals_the_numpy_ranking_metrics():
    data, _ = synthetic_ratings(120, 60, 3000, seed=3)
    first = holdout_split(data, 0.2, seed=0)
    second = holdout_split(first.train, 0.1, seed=1)
    splits = {"train": second.train, "val": second.test, "test": first.test}
    cfg = SoftmaxConfig(embedding_dim=8, hidden_dims="8", max_bag=200)
    inputs = softmax_inputs(cfg, splits)
    model = Model.split(build_softmax(cfg, splits["train"], seed=0))
    k = 5
    got = bag_validator(model, inputs, k=k, chunk=32)(model.params, "test", "test_")

    bag, targets = inputs["test"]["bag"], inputs["test"]["targets"]
    logits = np.asarray(model.bind(model.params)({"bag": bag}), np.float64)
    rows, cols = np.nonzero(bag >= 0)
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, bag[rows, cols])), shape=logits.shape)
    top = dense_topk(logits, k, exclude=exclude)
    t_rows, t_cols = np.nonzero(targets >= 0)
    relevant = sp.csr_matrix((np.ones(len(t_rows)), (t_rows, targets[t_rows, t_cols])), shape=logits.shape)
    users = np.unique(t_rows)
    want = ranking_metrics(top.ids[users], relevant[users], k)
    assert len(users) > 50
    np.testing.assert_allclose(got[f"test_precision@{k}"], want[f"precision@{k}"], rtol=1e-6)
    np.testing.assert_allclose(got[f"test_recall@{k}"], want[f"recall@{k}"], rtol=1e-6)
