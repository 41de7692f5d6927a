"""Degraded training crops for the cascade (dffx.align.augmented_split, `dffx train cascade --augment`)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


def _split(n=6, size=96):
    """Smooth random BGR crops and a landmark cloud in the middle of each."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 6, 6, 3)).astype(np.float32)
    images = np.stack([np.kron(s, np.ones((size // 6, size // 6, 1))) for s in small]).astype(np.uint8)
    landmarks = rng.uniform(size * 0.3, size * 0.7, (n, 68, 2)).astype(np.float32)
    calls = []

    def crops(ids):
        calls.append(np.asarray(ids).tolist())
        return images[np.asarray(ids)]

    return {"crops": crops, "landmarks": landmarks, "cameras": np.zeros((n, 6))}, images, calls


def test_each_sample_keeps_one_degradation_whatever_the_batch():
    from dffx.align.augmented_split import augmented_split

    split, images, _ = _split()
    aug = augmented_split(split, "all", seed=3)
    whole = aug["crops"]([0, 1, 2, 3, 4, 5])
    assert whole.dtype == np.uint8 and whole.shape == images.shape
    # the same sample in another batch, in another order, comes out the same
    np.testing.assert_array_equal(aug["crops"]([4, 1])[0], whole[4])
    np.testing.assert_array_equal(aug["crops"]([4, 1])[1], whole[1])
    # the images change (every family on: at least colour moves every pixel value somewhere)
    assert all(np.abs(whole[i].astype(int) - images[i]).mean() > 1.0 for i in range(len(images)))
    # another seed, other degradations; labels and cameras are untouched
    other = augmented_split(split, "all", seed=4)["crops"]([0, 1, 2, 3, 4, 5])
    assert np.abs(other.astype(int) - whole).mean() > 1.0
    assert aug["landmarks"] is split["landmarks"] and aug["cameras"] is split["cameras"]


def test_no_families_is_the_split_itself_and_unknown_names_fail():
    from dffx.align.augmented_split import augmented_split

    split, _, _ = _split()
    assert augmented_split(split, "") is split
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmented_split(split, "colour,rain")


def test_occluders_are_centred_on_the_face_box():
    from dffx.align.augmented_split import augmented_split, face_mask_labels

    split, images, calls = _split(n=40)
    aug = augmented_split(split, "occlusion", seed=0)
    out = aug["crops"](np.arange(40))
    assert [0, 1] in [c[:2] for c in calls] and any(c[0] == 1 for c in calls)  # the occluder source: i + 1
    changed = np.abs(out.astype(int) - images).max(axis=-1) > 0
    assert 5 <= changed.reshape(40, -1).any(axis=1).sum() <= 30  # 40 % of samples get an occluder
    for i in np.flatnonzero(changed.reshape(40, -1).any(axis=1)):
        ys, xs = np.nonzero(face_mask_labels(split["landmarks"][i], images.shape[1]) >= 0)
        cy, cx = np.argwhere(changed[i]).mean(axis=0)  # an occluder's centre is drawn inside the box
        assert ys.min() - 1 <= cy <= ys.max() + 1 and xs.min() - 1 <= cx <= xs.max() + 1


def test_face_mask_is_the_landmark_box_clipped_to_the_crop():
    from dffx.align.augmented_split import face_mask_labels

    lm = np.array([[10.2, 20.0], [30.0, 40.7], [-5.0, 25.0]], np.float32)
    lab = face_mask_labels(lm, 32)
    ys, xs = np.nonzero(lab == 0)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (0, 30, 20, 31)
    assert set(np.unique(lab)) == {-1, 0}
