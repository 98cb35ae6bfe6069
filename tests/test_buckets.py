"""Buckets: parsing, the bucket a source lands in, and the seeded bucketed batch stream."""

from __future__ import annotations

from collections import Counter

import pytest

from univid.data import BadSample
from univid.data.buckets import BucketSampler, choose_bucket, parse_buckets
from univid.errors import InputError

BUCKETS = [(8, 32, 32), (8, 32, 48), (16, 32, 48), (1, 32, 32)]


def test_parse_buckets():
    assert parse_buckets("8x32x48, 1X32x32,8x32x48") == [(1, 32, 32), (8, 32, 48)]
    for bad in ("8x32", "8x32xa", "0x32x32", ""):
        with pytest.raises(InputError, match="FRAMESxHEIGHTxWIDTH"):
            parse_buckets(bad)


def test_choose_bucket_by_aspect_then_length():
    # 3:2 sources go to the 32x48 buckets; the longest that the clip can fill wins.
    assert choose_bucket("video", 96, 64, 20, BUCKETS) == (16, 32, 48)
    assert choose_bucket("video", 96, 64, 10, BUCKETS) == (8, 32, 48)
    assert choose_bucket("video", 64, 64, 10, BUCKETS) == (8, 32, 32)
    # images go to the 1-frame bucket, or to a 1-frame version of the nearest video bucket
    assert choose_bucket("image", 96, 64, 1, BUCKETS) == (1, 32, 32)
    assert choose_bucket("image", 96, 64, 1, [(8, 32, 32), (8, 32, 48)]) == (1, 32, 48)
    with pytest.raises(BadSample, match="too short: has 5 frames at the clip rate"):
        choose_bucket("video", 96, 64, 5, BUCKETS)


def test_bucket_sampler_epochs_are_complete_single_shape_and_seeded():
    buckets = {(8, 32, 32): list(range(0, 10)), (16, 32, 48): list(range(10, 13))}
    sizes = {(8, 32, 32): 4, (16, 32, 48): 2}
    sampler = BucketSampler(buckets, sizes, seed=3)
    assert sampler.per_epoch == 3 + 2
    for epoch in range(3):
        batches = [sampler.batch(epoch * 5 + k) for k in range(5)]
        seen = Counter(i for b in batches for i in b)
        assert set(seen) == set(range(13))  # every clip in every epoch
        for batch in batches:  # one bucket per batch, that bucket's size
            bucket = next(b for b, ix in buckets.items() if batch[0] in ix)
            assert all(i in buckets[bucket] for i in batch)
            assert len(batch) == sizes[bucket]
        # the wrap-around repeats only what the last partial batch of a bucket lacked
        assert sum(seen.values()) == 4 * 3 + 2 * 2
    again = BucketSampler(buckets, sizes, seed=3)
    assert [again.batch(k) for k in (7, 0, 12)] == [sampler.batch(k) for k in (7, 0, 12)]
    other = BucketSampler(buckets, sizes, seed=4)
    assert [other.batch(k) for k in range(10)] != [sampler.batch(k) for k in range(10)]
    assert [sampler.batch(k) for k in range(5)] != [sampler.batch(k) for k in range(5, 10)]
