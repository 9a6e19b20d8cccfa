"""S3D-G: parameter layout of the MIL-NCE release, strict loading, forward, preprocessing.

The expected layout below is written out independently of ``videolang.models.backbones.s3dg``
from the release's model definition (``antoine77340/S3D_HowTo100M: s3dg.py``, class ``S3D``
with ``space_to_depth=True``, ``num_classes=512``; the same file is vendored in fairseq as
``examples/MMPT/mmpt/processors/models/s3dg.py``):

* ``conv1``: ``STConv3D(24, 64, [2, 4, 4])`` (dense, after 2x2x2 space-to-depth of RGB);
* ``conv_2b``: ``STConv3D(64, 64, [1, 1, 1])``; ``conv_2c``: separable ``STConv3D(64, 192, [3, 3, 3])``;
* ``gating``: ``SelfGating(192)``;
* Inception blocks ``InceptionBlock(in, b0, b1a, b1b, b2a, b2b, b3)`` as in ``_BLOCKS``;
* ``fc``: ``Linear(1024, 512)``; plus the word2vec ``text_module`` (ignored by videolang).

An ``STConv3D`` has ``conv1`` (no bias) + ``bn1`` and, when separable, ``conv2`` (temporal) + ``bn2``;
a ``SelfGating(c)`` is ``fc = Linear(c, c)``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from videolang.data.sampling import resample_frame_indices
from videolang.errors import ConfigError
from videolang.models.backbones import create_backbone
from videolang.models.backbones.s3dg import S3DG

# Parameters of the release's video part (everything but text_module.*), from the shapes below.
MILNCE_VIDEO_PARAMS = 9_670_800

_BLOCKS = [  # name, in, b0, b1a, b1b, b2a, b2b, b3
    ("mixed_3b", 192, 64, 96, 128, 16, 32, 32),
    ("mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 480, 192, 96, 208, 16, 48, 64),
    ("mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 512, 128, 128, 256, 24, 64, 64),
    ("mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 528, 256, 160, 320, 32, 128, 128),
    ("mixed_5b", 832, 256, 160, 320, 32, 128, 128),
    ("mixed_5c", 832, 384, 192, 384, 48, 128, 128),
]



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}  # fmt: skip


def _stconv(prefix: str, cin: int, cout: int, k: tuple[int, int, int], separable: bool = False):
    if separable:
        return {f"{prefix}.conv1.weight": (cout, cin, 1, k[1], k[2]), **_bn(f"{prefix}.bn1", cout),
                f"{prefix}.conv2.weight": (cout, cout, k[0], 1, 1), **_bn(f"{prefix}.bn2", cout)}  # fmt: skip
    return {f"{prefix}.conv1.weight": (cout, cin, *k), **_bn(f"{prefix}.bn1", cout)}


def _gating(prefix: str, c: int):
    return {f"{prefix}.fc.weight": (c, c), f"{prefix}.fc.bias": (c,)}


def milnce_video_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the video part of ``s3d_howto100m.pth``, in the release's naming."""
    out = {}
    out.update(_stconv("conv1", 24, 64, (2, 4, 4)))
    out.update(_stconv("conv_2b", 64, 64, (1, 1, 1)))
    out.update(_stconv("conv_2c", 64, 192, (3, 3, 3), separable=True))
    out.update(_gating("gating", 192))
    for name, cin, b0, b1a, b1b, b2a, b2b, b3 in _BLOCKS:
        out.update(_stconv(f"{name}.conv_b0", cin, b0, (1, 1, 1)))
        out.update(_stconv(f"{name}.conv_b1_a", cin, b1a, (1, 1, 1)))
        out.update(_stconv(f"{name}.conv_b1_b", b1a, b1b, (3, 3, 3), separable=True))
        out.update(_stconv(f"{name}.conv_b2_a", cin, b2a, (1, 1, 1)))
        out.update(_stconv(f"{name}.conv_b2_b", b2a, b2b, (3, 3, 3), separable=True))
        out.update(_stconv(f"{name}.conv_b3_b", cin, b3, (1, 1, 1)))
        for i, c in enumerate((b0, b1b, b2b, b3)):
            out.update(_gating(f"{name}.gating_b{i}", c))
    out["fc.weight"] = (512, 1024)
    out["fc.bias"] = (512,)
    return out


# The word2vec text tower of the release (real shapes: 66250x300 embedding, 300->2048->512);
# shrunk here to keep the test file small, since these keys are dropped by name.
TEXT_MODULE = {"text_module.word_embd.weight": (50, 300), "text_module.fc1.weight": (2048, 300),
               "text_module.fc1.bias": (2048,), "text_module.fc2.weight": (512, 2048),
               "text_module.fc2.bias": (512,)}  # fmt: skip


def _is_param(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.fixture(scope="module")
def model() -> S3DG:
    m = create_backbone("s3dg", seed=0)
    assert isinstance(m, S3DG)
    return m


def test_parameter_count_matches_the_milnce_release(model):
    layout = milnce_video_layout()
    expected = sum(int(np.prod(s)) for k, s in layout.items() if _is_param(k))
    assert expected == MILNCE_VIDEO_PARAMS
    assert sum(p.numel() for p in model.parameters()) == MILNCE_VIDEO_PARAMS


def test_state_dict_uses_the_release_names_and_shapes(model):
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == milnce_video_layout()


def _release_like_file(tmp_path, *, drop=None, extra=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in {**milnce_video_layout(), **TEXT_MODULE}.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    for k in drop or ():
        del state[k]
    state.update(extra or {})
    path = tmp_path / "s3d_howto100m.pth"
    torch.save(state, path)
    return path, state


def test_release_layout_loads_strictly_and_ignores_text_module(tmp_path, caplog):
    path, state = _release_like_file(tmp_path)
    with caplog.at_level(logging.WARNING):
        m = create_backbone("s3dg", weights=path)
    assert "random weights" not in caplog.text
    assert m.weights_path == str(path)
    loaded = m.state_dict()
    for k, v in state.items():
        if not k.startswith("text_module."):
            assert torch.equal(loaded[k], v), k
    assert not m.training
    # an export without BatchNorm's num_batches_tracked buffers loads too
    nbt = [k for k in state if k.endswith("num_batches_tracked")]
    path2, _ = _release_like_file(tmp_path, drop=nbt)
    create_backbone("s3dg", weights=path2)


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path):
    path, _ = _release_like_file(tmp_path, drop=["mixed_4c.conv_b1_b.conv2.weight"])
    with pytest.raises(ConfigError, match=r"missing keys: mixed_4c\.conv_b1_b\.conv2\.weight"):
        create_backbone("s3dg", weights=path)
    path, _ = _release_like_file(tmp_path, extra={"head.weight": torch.zeros(3)})
    with pytest.raises(ConfigError, match=r"unexpected keys: head\.weight"):
        create_backbone("s3dg", weights=path)
    path, _ = _release_like_file(tmp_path, extra={"fc.bias": torch.zeros(400)})
    with pytest.raises(ConfigError, match=r"fc\.bias \(file \(400,\), model \(512,\)\)"):
        create_backbone("s3dg", weights=path)
    with pytest.raises(ConfigError, match="does not exist"):
        create_backbone("s3dg", weights=tmp_path / "nope.pth")


def test_forward_small_clip_and_seeded_init(model, caplog):
    x = torch.rand(1, 3, 30, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 512) and torch.isfinite(y).all()
    with caplog.at_level(logging.WARNING):
        again = create_backbone("s3dg", seed=0)
    assert "S3D-G has random weights (no --weights given): features are NOT meaningful" in caplog.text
    small = x[:, :, :8, :32, :32]  # fully convolutional: any even T, H, W
    with torch.inference_mode():
        y_small = model(small)
        assert torch.equal(again(small), y_small)  # same seed, same features
        assert not torch.allclose(create_backbone("s3dg", seed=1)(small), y_small)
    with pytest.raises(ValueError, match="even"):
        model(torch.rand(1, 3, 7, 32, 32))


def test_space_to_depth_channel_order():
    x = torch.arange(2 * 3 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 3, 2, 4, 4)
    y = S3DG.space_to_depth(x)
    assert y.shape == (2, 24, 1, 2, 2)
    for dt in range(2):
        for dh in range(2):
            for dw in range(2):
                for c in range(3):
                    ch = ((dt * 2 + dh) * 2 + dw) * 3 + c
                    assert torch.equal(y[:, ch, 0], x[:, c, dt, dh::2, dw::2])


def test_resampling_to_30_fps():
    # 10 fps: every frame three times; 60 fps: every other frame; 30 fps: identity
    assert resample_frame_indices(4, 10, 30).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert resample_frame_indices(8, 60, 30).tolist() == [0, 2, 4, 6]
    assert resample_frame_indices(5, 30, 30).tolist() == [0, 1, 2, 3, 4]
    # ffmpeg fps filter (round=near): 25 -> 30 fps repeats every fifth frame
    assert resample_frame_indices(10, 25, 30).tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]
    assert resample_frame_indices(0, 25, 30).size == 0


def test_preprocess_shapes_and_values(model):
    # 45 frames at 10 fps = 4.5 s -> 135 frames at 30 fps -> 5 clips, the last half zero
    frames = torch.full((45, 24, 40, 3), 255, dtype=torch.uint8)
    clips = model.preprocess(frames, 10.0)
    assert clips.shape == (5, 3, 30, 224, 224) and clips.dtype == torch.float32
    assert torch.all(clips[:4] == 1.0)  # /255, no mean/std; constant stays constant
    assert torch.all(clips[4, :, :15] == 1.0) and torch.all(clips[4, :, 15:] == 0.0)
    assert model.num_rows(45, 10.0) == 5
    # 60 fps: every other frame, each marked by its index in the red channel
    frames = torch.zeros((60, 224, 300, 3), dtype=torch.uint8)
    frames[..., 0] = torch.arange(60, dtype=torch.uint8)[:, None, None]
    clips = model.preprocess(frames, 60.0)
    assert clips.shape == (1, 3, 30, 224, 224)
    red = (clips[0, 0, :, 100, 100] * 255).round().long()
    assert red.tolist() == list(range(0, 60, 2))
