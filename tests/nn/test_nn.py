"""The DFF network (paper Sec. III-B, Fig. 1) and the extraction API: shapes, unit norms, sizes,
weights files, input conversion and error handling.

Small nets (base 8, depth 2-3) keep the CPU cost low; the default configuration is built only to
count parameters, multiply-adds and the weights-file size, and run once at 224x224.
"""

import numpy as np
import pytest
import torch

from dffx.nn import (DFFExtractor, DFFNet, DFFNetConfig, count_parameters, default_weights_path, estimate_macs,
                     fuse_for_inference, images_to_tensor, load_weights, save_weights)

from conftest import REPO

torch.set_num_threads(1)

SMALL = DFFNetConfig(base_channels=8, depth=3)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    net = DFFNet(SMALL)
    # a few training-mode passes give the BatchNorm layers non-trivial running statistics
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 3, 32, 32))
    return net.eval()


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory, small_net):
    path = tmp_path_factory.mktemp("weights") / "small.pt"
    save_weights(path, small_net, {"steps": 0, "note": "random init"}, half=False)
    return path


@pytest.fixture
def bgr_images(rng):
    return rng.integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- network
def test_output_shape_and_unit_norm(small_net):
    x = torch.rand(2, 3, 48, 64)
    y = small_net(x)
    assert y.shape == (2, 32, 48, 64) and y.dtype == torch.float32
    norms = y.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
    # different pixels get different descriptors (the net is not constant)
    assert (y[:, :, :, :-1] - y[:, :, :, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["group", "none"])
def test_other_norm_layers(norm):
    net = DFFNet(base_channels=8, depth=2, norm=norm)
    y = net(torch.rand(1, 3, 16, 20))
    assert y.shape == (1, 32, 16, 20)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(1, 16, 20), atol=1e-5, rtol=0)


def test_zero_features_do_not_become_nan():
    net = DFFNet(base_channels=8, depth=2).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    y = net(torch.rand(1, 3, 8, 8))
    assert torch.isfinite(y).all() and (y == 0).all()


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 3, 32, 36), (1, 3, 0, 32), (0, 3, 32, 32)])
def test_rejects_sizes_that_are_not_multiples(small_net, shape):
    with pytest.raises(ValueError, match="multiples of 8"):
        small_net(torch.rand(shape))


@pytest.mark.parametrize("x", [torch.rand(3, 32, 32), torch.rand(1, 1, 32, 32), torch.rand(1, 4, 32, 32),
                               torch.zeros(1, 3, 32, 32, dtype=torch.uint8)], ids=["3d", "gray", "rgba", "uint8"])
def test_rejects_bad_tensors(small_net, x):
    with pytest.raises(ValueError):
        small_net(x)


def test_config_validation_and_presets():
    assert DFFNetConfig().channels == (16, 32, 64, 128, 256) and DFFNetConfig().multiple == 16
    assert DFFNetConfig.preset("large").base_channels == 32
    assert DFFNetConfig(base_channels=32, depth=5, max_channels=256).channels == (32, 64, 128, 256, 256, 256)
    with pytest.raises(ValueError):
        DFFNetConfig.preset("huge")
    with pytest.raises(ValueError):
        DFFNetConfig(norm="layer")
    with pytest.raises(ValueError):
        DFFNetConfig(depth=0)
    with pytest.raises(ValueError):
        DFFNetConfig(base_channels=12, norm="group")
    with pytest.raises(ValueError, match="unknown"):
        DFFNetConfig.from_dict({"base_channels": 8, "width": 3})
    assert DFFNet(SMALL, depth=2).config == DFFNetConfig(base_channels=8, depth=2)


def test_default_net_size_macs_and_weights_file(tmp_path):
    net = DFFNet()
    n = count_parameters(net)
    assert n == net.count_parameters() == 1_943_104                      # the figure in the docstrings
    assert 1_000_000 <= n <= 4_000_000
    macs = estimate_macs(net, 224, 224)
    assert macs == 2_346_631_168
    # hand count of the first level: 224^2 px x (3*16 + 16*16) x 9 taps
    assert macs > 224 * 224 * (3 * 16 + 16 * 16) * 9
    half, full = tmp_path / "half.pt", tmp_path / "full.pt"
    save_weights(half, net)
    save_weights(full, net, half=False)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    assert full.stat().st_size < 16e6 and half.stat().st_size < 5e6
    loaded, meta = load_weights(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert meta == {}


def test_estimate_macs_counts_transposed_convs():
    net = DFFNet(base_channels=8, depth=1, norm="none")
    # level 0: (3*8 + 8*8) * 9 at 16x16; bottleneck: (8*16 + 16*16) * 9 at 8x8;
    # up: 16 -> 8 channels, 2x2 kernel, from 8x8 inputs; decoder: (16*8 + 8*8) * 9 at 16x16; head 8*32
    expected = (256 * (3 * 8 + 8 * 8) * 9 + 64 * (8 * 16 + 16 * 16) * 9 + 64 * 16 * 8 * 4
                + 256 * (16 * 8 + 8 * 8) * 9 + 256 * 8 * 32)
    assert estimate_macs(net, 16, 16) == expected


def test_fused_net_matches(small_net):
    x = torch.rand(2, 3, 32, 40)
    fused = fuse_for_inference(small_net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), small_net(x), atol=2e-5, rtol=0)


def test_weights_round_trip(small_net, small_weights, tmp_path):
    net, meta = load_weights(small_weights)
    assert meta == {"steps": 0, "note": "random init"} and net.config == SMALL and not net.training
    for (k, a), (_, b) in zip(small_net.state_dict().items(), net.state_dict().items()):
        assert torch.equal(a, b), k
    # float16 storage: parameters rounded to 11 significant bits, BatchNorm statistics exact
    half_path = save_weights(tmp_path / "half.pt", small_net)
    half, _ = load_weights(half_path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(half(x), small_net(x), atol=3e-2, rtol=0)
    torch.testing.assert_close(half.encoder[0][1].running_var, small_net.encoder[0][1].running_var, atol=0, rtol=0)


def test_load_weights_errors(tmp_path, small_net):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.pt")
    torch.save({"hello": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a dffx DFF weights file"):
        load_weights(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        load_weights(tmp_path / "garbage.pt")
    path = save_weights(tmp_path / "w.pt", small_net)
    blob = torch.load(path, weights_only=True)
    blob["config"]["base_channels"] = 16
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_weights(tmp_path / "mismatch.pt")


def test_crafted_weights_files_get_named_errors(tmp_path, small_net, monkeypatch):
    """Issue 28 (5, 9): a 1.5 KB file declaring base_channels=4096 is refused before any layer is
    built; a file without config, or whose state_dict is a list or holds an int, is a ValueError."""
    import dffx.nn.unet as unet

    path = save_weights(tmp_path / "w.pt", small_net)
    good = torch.load(path, weights_only=True)

    def variant(name, **changes):
        blob = dict(good, **changes)
        torch.save(blob, tmp_path / name)
        return tmp_path / name

    huge = variant("huge.pt", config={**good["config"], "base_channels": 4096}, state_dict={})
    assert huge.stat().st_size < 4000

    def no_net(*args, **kwargs):
        raise AssertionError("the network was built from an unchecked config")

    with monkeypatch.context() as m:
        m.setattr(unet, "DFFNet", no_net)
        with pytest.raises(ValueError, match="too large"):
            load_weights(huge)
    blob = {k: v for k, v in good.items() if k != "config"}
    torch.save(blob, tmp_path / "no_config.pt")
    with pytest.raises(ValueError, match="'config'"):
        load_weights(tmp_path / "no_config.pt")
    with pytest.raises(ValueError, match="'state_dict'"):
        load_weights(variant("list.pt", state_dict=[1, 2]))
    with pytest.raises(ValueError, match="names to tensors"):
        load_weights(variant("int.pt", state_dict={**good["state_dict"], "extra": 3}))
    with pytest.raises(ValueError, match="bad network config"):
        load_weights(variant("depth.pt", config={**good["config"], "depth": "four"}))


# ----------------------------------------------------------------------------- extractor
def test_missing_default_weights(monkeypatch, tmp_path):
    import dffx.nn.extractor as ext

    monkeypatch.setattr(ext, "default_weights_path", lambda: tmp_path / "dff_default.pt")
    for arg in (None, "default"):
        with pytest.raises(FileNotFoundError, match="no default DFF weights.*dffx train dff"):
            DFFExtractor(arg, device="cpu")
    with pytest.raises(FileNotFoundError):
        DFFExtractor(tmp_path / "nope.pt", device="cpu")


def test_default_weights_location():
    path = default_weights_path()
    assert path.name == "dff_default.pt" and path.parent.name == "weights" and path.parent.parent.name == "dffx"
    if not path.exists():  # nothing shipped yet: the error must say so
        with pytest.raises(FileNotFoundError, match="no default DFF weights"):
            DFFExtractor(device="cpu")


def test_shipped_networks_load_by_name(monkeypatch, tmp_path):
    from dffx.nn.extractor import shipped_weights_path

    assert shipped_weights_path("default") == default_weights_path()
    base8 = DFFExtractor("base8", device="cpu")
    assert base8.weights_path == shipped_weights_path("base8") and base8.config.base_channels == 8
    assert DFFExtractor("default", device="cpu").config.base_channels == 16
    with pytest.raises(FileNotFoundError, match="no shipped DFF weights called 'huge'.*base8"):
        DFFExtractor("huge", device="cpu")
    # a bare word that is an existing file is read as a path, not a name
    (tmp_path / "base8").write_bytes(b"not weights")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        DFFExtractor("base8", device="cpu")


def test_extractor_metadata_and_device(small_weights):
    ext = DFFExtractor(small_weights, device="cpu")
    assert ext.device == torch.device("cpu") and ext.dim == 32 and ext.config == SMALL
    assert ext.metadata["note"] == "random init" and ext.weights_path == small_weights
    assert "DFFExtractor" in repr(ext)


def test_bgr_uint8_equals_rgb_float_tensor(small_weights, bgr_images):
    ext = DFFExtractor(small_weights, device="cpu")
    img = bgr_images[0]
    rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255
    a = ext.extract(img)
    b = ext.extract(rgb[None])
    c = ext(rgb)  # (3, H, W) and __call__
    assert a.shape == (1, 32, 48, 64) and a.dtype == torch.float32 and a.is_contiguous()
    assert torch.equal(a, b) and torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(1, 48, 64), atol=1e-5, rtol=0)


def test_extractor_matches_the_network(small_net, small_weights, bgr_images):
    x = images_to_tensor(bgr_images)
    with torch.no_grad():
        expected = small_net(x)
    for fuse in (True, False):
        for channels_last in (True, False):
            ext = DFFExtractor(small_weights, device="cpu", fuse=fuse, channels_last=channels_last)
            torch.testing.assert_close(ext.extract(bgr_images), expected, atol=2e-5, rtol=0)
    # an in-memory net is accepted too
    torch.testing.assert_close(DFFExtractor(small_net, device="cpu").extract(x), expected, atol=2e-5, rtol=0)


def test_extract_without_copy_returns_the_networks_own_output(small_weights, bgr_images):
    ext = DFFExtractor(small_weights, device="cpu")
    copied, own = ext.extract(bgr_images), ext.extract(bgr_images, copy=False)
    assert copied.is_contiguous() and torch.equal(copied, own)
    assert own.is_contiguous(memory_format=torch.channels_last) and not own.is_contiguous()
    assert own.is_inference()  # read-only outside inference mode: hence the default copy
    padded = ext.extract(bgr_images[:, :45, :61], copy=False)  # padded to 48 x 64, cropped back
    assert padded.shape == (3, 32, 45, 61)
    torch.testing.assert_close(padded, ext.extract(bgr_images[:, :45, :61]), atol=0, rtol=0)


def test_batch_kinds_agree(small_weights, bgr_images):
    ext = DFFExtractor(small_weights, device="cpu")
    batch = ext.extract(bgr_images)                        # uint8 (B, H, W, 3)
    as_list = ext.extract(list(bgr_images))                # list of (H, W, 3)
    chunked = ext.extract(bgr_images, batch_size=2)        # two network calls
    singles = torch.cat([ext.extract(img) for img in bgr_images])
    assert batch.shape == (3, 32, 48, 64)
    assert torch.equal(batch, as_list)
    torch.testing.assert_close(chunked, batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(singles, batch, atol=1e-5, rtol=0)


def test_any_size_is_padded_and_cropped(small_weights, small_net, rng):
    ext = DFFExtractor(small_weights, device="cpu")
    img = rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
    out = ext.extract(img)
    assert out.shape == (1, 32, 37, 50)
    padded = np.zeros((40, 56, 3), np.uint8)
    padded[:37, :50] = img
    with torch.no_grad():
        expected = small_net(images_to_tensor(padded))[:, :, :37, :50]
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)


def test_result_is_an_ordinary_tensor(small_weights, bgr_images):
    out = DFFExtractor(small_weights, device="cpu").extract(bgr_images[0])
    assert not out.is_inference() and not out.requires_grad
    out.mul_(2)  # in-place use outside inference mode must work


@pytest.mark.parametrize("bad, match", [
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((32, 32, 3), np.uint16), "uint8"),
    (np.zeros((32, 32), np.uint8), "grayscale"),
    (np.zeros((32, 32, 4), np.uint8), "3 colour channels"),
    (np.zeros((32, 32, 1), np.uint8), "3 colour channels"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((2, 1, 32, 32, 3), np.uint8), r"\(B, H, W, 3\)"),
    ([], "empty image list"),
    ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)], "same size"),
    ([np.zeros((32, 32, 3), np.float32)], "uint8"),
    (["image.png"], "NumPy arrays"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
    (torch.zeros(1, 32, 32, 3), "3 colour channels"),
    (torch.zeros(3, 0, 32), "empty"),
    (torch.zeros(2, 2, 3, 32, 32), r"\(B, 3, H, W\)"),
    (torch.full((1, 3, 32, 32), 255.0), r"\[0, 1\]"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    ("face.png", "unsupported"),
], ids=["float-numpy", "uint16", "gray", "bgra", "1-channel", "empty", "5d", "empty-list", "mixed-sizes",
        "float-list", "str-list", "uint8-tensor", "hwc-tensor", "empty-tensor", "5d-tensor", "0-255-tensor",
        "nan-tensor", "path"])
def test_extractor_rejects_bad_input(small_weights, bad, match):
    ext = DFFExtractor(small_weights, device="cpu")
    with pytest.raises(ValueError, match=match):
        ext.extract(bad)


def test_extractor_rejects_bad_arguments(small_weights):
    ext = DFFExtractor(small_weights, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        ext.extract(np.zeros((16, 16, 3), np.uint8), batch_size=0)
    with pytest.raises(ValueError, match="weights must be"):
        DFFExtractor(42, device="cpu")
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        DFFExtractor(small_weights, device="cpu", precision="float16")


def test_bfloat16_extractor_gives_float32_unit_features_close_to_float32():
    """precision="bfloat16" runs the shipped net in bfloat16: float32 unit vectors out, pointing
    where the float32 net's do (the cascade's accuracy with them: docs/experiments/2026-12-03-latency.md)."""
    import cv2

    face = cv2.resize(cv2.imread(str(REPO / "examples" / "face_generated.png")), (224, 224))
    exact = DFFExtractor(device="cpu")
    fast = DFFExtractor(device="cpu", precision="bfloat16")
    assert fast.precision == "bfloat16" and next(fast.net.parameters()).dtype == torch.bfloat16
    a, b = exact.extract(face), fast.extract(face)
    assert b.dtype == torch.float32 and b.shape == a.shape
    torch.testing.assert_close(b.norm(dim=1), torch.ones_like(b[:, 0]), atol=1e-5, rtol=0)
    cos = (a * b).sum(1)
    assert cos.mean() > 0.999 and cos.min() > 0.95
    assert not torch.equal(a, b)  # it really ran in another precision


def test_default_size_net_at_224(tmp_path, rng):
    """The shipped configuration end to end at the paper's resolution (one random-init forward)."""
    torch.manual_seed(1)
    path = save_weights(tmp_path / "default.pt", DFFNet(), {"steps": 0})
    ext = DFFExtractor(path, device="cpu")
    out = ext.extract(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8))
    assert out.shape == (1, 32, 224, 224)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, 224, 224), atol=1e-5, rtol=0)
