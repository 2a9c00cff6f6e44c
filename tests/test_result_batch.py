"""The columns a worker's results travel in (cluster.result_batch), alone."""

import pickle

import numpy as np
import pytest

from shmdask.cluster.protocol import Stored, serialize_value
from shmdask.cluster.result_batch import ResultBatch, ResultColumns, read_columns
from shmdask.scheduler.records import compute_record, compute_records


def test_rows_become_columns_and_only_stored_values_are_marked():
    batch = ResultBatch()
    assert not batch
    big = serialize_value(np.arange(10.0))
    batch.add(("a", None, "w-0/0", 1.0, 2.0, 16, "inline"), failed=False)
    batch.add(("c", b"exc", "traceback", "w-0/0", 6.0, 7.0), failed=True)
    batch.add(("b", big, "w-0/1", 3.0, 5.0, big.nbytes, big.where), failed=False)
    assert batch
    results = read_columns(pickle.loads(pickle.dumps(batch.columns(), protocol=5)))
    assert results.keys == ("a", "b") and results.values[0] is None
    assert results.lanes == ("w-0/0", "w-0/1") and results.starts == (1.0, 3.0)
    assert results.stops == (2.0, 5.0) and results.wheres == ("inline", "inline")
    assert results.stored_at == [1]
    (stored,) = results.stored()
    assert type(stored) is Stored and stored.nbytes == big.nbytes
    assert results.errors == [("c", b"exc", "traceback", "w-0/0", 6.0, 7.0)]


def test_a_batch_of_errors_only_has_empty_columns():
    batch = ResultBatch()
    batch.add(("x", b"exc", "", "w-0/0", 1.0, 1.0), failed=True)
    results = read_columns(batch.columns())
    assert results.keys == results.values == results.lanes == ()
    assert results.stored_at == [] and len(results.errors) == 1
    # a failure's stamps are shaped as a finished task's: no result, 0 bytes inline
    assert results.failures() == [("x", b"exc", "", ("w-0/0", 1.0, 1.0, 0, "inline"))]


def test_records_made_from_columns_are_the_compact_records():
    results = ResultColumns(("a", "b"), (1, 2), ("w/0", "w/1"), (1.0, 2.0), (1.5, 2.5),
                            (28, 28), ("inline", "inline"), [], [])
    assert results.stamps == results[2:7]
    assert compute_records(results.keys, "w", *results.stamps) == [
        compute_record("a", "w", "w/0", 1.0, 1.5, 28, "inline"),
        compute_record("b", "w", "w/1", 2.0, 2.5, 28, "inline"),
    ]


@pytest.mark.parametrize("body", [[("done", "k", 1, ())], ("k",) * 3, None])
def test_a_body_that_is_not_result_columns_is_named_as_such(body):
    with pytest.raises(ValueError, match="results message must hold 9 columns"):
        read_columns(body)
