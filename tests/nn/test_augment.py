"""Training-time augmentation of the DFF network (dffx.nn.augment)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _batch(b=4, size=64):
    """Smooth random images and a disc of face labels in the middle."""
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.interpolate(torch.rand(b, 3, 8, 8, generator=g), size=(size, size),
                                             mode="bilinear", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2
    tri = torch.where(disc, (yy * size + xx) % 1000, torch.full_like(yy, -1)).expand(b, -1, -1).clone()
    return images, tri


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_parse_families():
    from dffx.nn.config import AUGMENT_FAMILIES, parse_augment

    assert parse_augment("all") == AUGMENT_FAMILIES
    assert parse_augment("") == () and parse_augment(None) == ()
    assert parse_augment("jpeg, colour,jpeg") == ("jpeg", "colour")
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_augment("colour,rain")


def test_same_generator_same_result_and_nothing_without_families():
    from dffx.nn.augment import augment_batch

    images, tri = _batch()
    a = augment_batch(images, tri, "all", _gen(3))
    b = augment_batch(images, tri, "all", _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == images.shape and a[1].shape == tri.shape
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 1
    same = augment_batch(images, tri, (), _gen(3))
    assert same[0] is images and same[1] is tri


def test_each_family_changes_images_and_keeps_labels_except_occlusion():
    from dffx.nn.augment import augment_batch
    from dffx.nn.config import AUGMENT_FAMILIES

    images, tri = _batch(b=16)
    for name in AUGMENT_FAMILIES:
        out, out_tri = augment_batch(images, tri, name, _gen(1))
        changed = (out - images).abs().amax(dim=(1, 2, 3)) > 1e-3
        assert changed.any(), name  # 16 images: every family fires on some of them
        if name != "occlusion":
            assert torch.equal(out_tri, tri), name


def test_occluded_pixels_lose_their_labels():
    """Under an occluder the label is -1; everywhere else labels and pixels are untouched."""
    from dffx.nn.augment import augment_batch

    images, tri = _batch(b=16)
    out, out_tri = augment_batch(images, tri, "occlusion", _gen(2))
    lost = (tri >= 0) & (out_tri < 0)
    assert lost.any()
    assert torch.equal(out_tri[~lost], tri[~lost])
    untouched = ~lost & (tri >= 0)
    assert torch.equal(out.permute(0, 2, 3, 1)[untouched], images.permute(0, 2, 3, 1)[untouched])
    share = lost.sum(dim=(1, 2)).float() / (tri >= 0).sum(dim=(1, 2)).float()
    assert float(share.max()) <= 0.45  # at most ~30 % of the face box, so under half the face


def test_colour_greyscale_and_jpeg_are_real():
    """Some colour draws are greyscale (equal channels); JPEG leaves 8x8 block artefacts."""
    from dffx.nn.augment import augment_batch

    images, tri = _batch(b=32)
    out, _ = augment_batch(images, tri, "colour", _gen(4))
    grey = ((out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) < 1e-6) & ((out[:, 1] - out[:, 2]).abs().amax(dim=(1, 2)) < 1e-6)
    assert 0 < int(grey.sum()) < 32
    noisy = images + 0.1 * torch.rand(images.shape, generator=_gen(9))
    out, _ = augment_batch(noisy.clamp(0, 1), tri, "jpeg", _gen(5))
    hit = (out - noisy.clamp(0, 1)).abs().amax(dim=(1, 2, 3)) > 0.02
    assert 0 < int(hit.sum()) < 32


def test_bad_shapes():
    from dffx.nn.augment import augment_batch

    images, tri = _batch()
    with pytest.raises(ValueError, match="images must be"):
        augment_batch(images[:, :2], tri, "colour", _gen(0))
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(images, tri, ["blurry"], _gen(0))
