"""ReadyQueue (pure): the order of one heap, whatever mix of pushes and bulk adds."""

import heapq
import random

import pytest

from shmdask.scheduler.ready import BULK, ReadyQueue


@pytest.mark.parametrize("seed", range(40))
def test_pops_come_in_the_order_one_heap_gives(seed):
    rng = random.Random(seed)
    queue, heap = ReadyQueue(), []
    seq = 0
    popped, expected = [], []

    def entry():
        nonlocal seq
        seq += 1
        return ((rng.randrange(3), rng.randrange(50)), seq, f"task-{seq}")

    for _ in range(60):
        action = rng.random()
        if action < 0.3:
            e = entry()
            queue.push(e)
            heapq.heappush(heap, e)
        elif action < 0.5:
            # bulk adds, small and big, nearly sorted or shuffled
            batch = [entry() for _ in range(rng.choice([3, BULK, 5 * BULK]))]
            if rng.random() < 0.5:
                rng.shuffle(batch)
            queue.extend(list(batch))
            for e in batch:
                heapq.heappush(heap, e)
        else:
            for _ in range(rng.randrange(1, 40)):
                assert bool(queue) == bool(heap) and len(queue) == len(heap)
                if not heap:
                    break
                assert queue.first() == heap[0]
                popped.append(queue.pop())
                expected.append(heapq.heappop(heap))
    while heap:
        popped.append(queue.pop())
        expected.append(heapq.heappop(heap))
    assert popped == expected and not queue


def test_a_big_batch_becomes_a_sorted_run_and_a_small_one_goes_to_the_heap():
    queue = ReadyQueue()
    queue.extend([((0, i), i, i) for i in range(BULK)])
    assert len(queue.run) == BULK and not queue.heap
    queue.extend([((0, -1), -1, -1)])
    assert queue.heap == [((0, -1), -1, -1)]
    assert queue.pop()[2] == -1 and queue.pop()[2] == 0


def test_a_batch_smaller_than_the_run_goes_to_the_heap():
    """Merging costs the whole run: only a batch at least as big may merge."""
    queue = ReadyQueue()
    queue.extend([((0, i), i, i) for i in range(0, 4 * BULK, 2)])  # 2 * BULK entries
    queue.extend([((0, i), i, i) for i in range(1, 2 * BULK, 2)])  # BULK entries
    assert len(queue.run) == 2 * BULK and len(queue.heap) == BULK
    queue.extend([((0, i), i, i) for i in range(4 * BULK, 8 * BULK)])
    assert len(queue.run) == 6 * BULK
    assert [queue.pop()[2] for _ in range(len(queue))] == sorted(
        [*range(0, 4 * BULK, 2), *range(1, 2 * BULK, 2), *range(4 * BULK, 8 * BULK)])
