"""Users as bags of items: bags from ratings and from a sparse pattern, the binary pattern."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recjax.data import Ratings, Vocabulary
from recjax.data.bags import bags_from_csr, user_bags, user_item_pattern
from recjax.data.jsonlines import PAD


def _parts():
    users, items = Vocabulary.from_ids(np.arange(3), "user"), Vocabulary.from_ids(np.arange(4), "item")
    first = Ratings.from_raw([0, 0, 2, 2], [3, 1, 1, 1], [5.0, 4.0, 3.0, 2.0], [4, 3, 2, 1],
                             users=users, items=items)
    second = Ratings.from_raw([0], [3], [1.0], [9], users=users, items=items)
    return first, second


def test_the_pattern_counts_a_pair_once_across_parts():
    first, second = _parts()
    m = user_item_pattern([first, second])
    assert m.dtype == np.float32 and m.has_sorted_indices and m.shape == (3, 4)
    assert m.toarray().tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert np.array_equal(user_item_pattern(first).toarray(), (first.csr(values=None).toarray() > 0))


def test_bags_of_a_pattern_are_its_rows():
    first, second = _parts()
    bags = bags_from_csr(user_item_pattern([first, second]))
    assert bags.dtype == np.int32 and bags.tolist() == [[1, 3], [PAD, PAD], [1, PAD]]
    assert bags_from_csr(sp.csr_matrix((2, 5))).tolist() == [[PAD], [PAD]]
    # the latest-first bags of the ratings hold the same items
    latest = user_bags([first], 3, max_bag=0)
    assert [sorted(r[r >= 0].tolist()) for r in latest] == [[1, 3], [], [1, 1]]  # a bag keeps repeats
