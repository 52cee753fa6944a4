import numpy as np

from shared.input_pipeline import in_memory_dataset


def epochs(dataset, n):
    return [np.concatenate([target.numpy() for _, target in dataset]) for _ in range(n)]


def test_every_row_once_per_epoch_in_a_new_order():
    x = {
        "a": np.arange(10, dtype="float32").reshape(-1, 1),
        "s": np.array([[str(i)] for i in range(10)], dtype=object),
    }
    dataset = in_memory_dataset(x, np.arange(10), batch_size=4, shuffle=True, seed=0)
    orders = epochs(dataset, 3)
    for order in orders:
        assert sorted(order.tolist()) == list(range(10))
    assert len({tuple(o) for o in orders}) == 3
    batch, target = next(iter(dataset))
    np.testing.assert_array_equal(
        batch["a"].numpy().ravel(), target.numpy()
    )  # features stay with targets
    assert [b.decode() for b in batch["s"].numpy().ravel()] == [str(t) for t in target.numpy()]


def test_same_seed_same_orders_and_short_last_batch():
    first = epochs(in_memory_dataset(np.zeros((10, 1)), np.arange(10), 4, True, seed=5), 2)
    second = epochs(in_memory_dataset(np.zeros((10, 1)), np.arange(10), 4, True, seed=5), 2)
    np.testing.assert_array_equal(first, second)
    sizes = [len(t) for _, t in in_memory_dataset(np.zeros((10, 1)), np.arange(10), 4, False)]
    assert sizes == [4, 4, 2]
    assert epochs(in_memory_dataset(np.zeros((10, 1)), np.arange(10), 4, False), 1)[
        0
    ].tolist() == list(range(10))
