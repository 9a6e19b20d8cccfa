"""Frame tokenizers: one interface; the VQ-VAE learns (reconstruction drops, codes in use);
the DALL-E dVAE encoder's geometry, parameter count and loading from a local file."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from videolang.errors import ConfigError
from videolang.models.frame_tokenizers import (
    VQVAE,
    DalleEncoder,
    VQVAEConfig,
    load_frame_tokenizer,
    save_frame_tokenizer,
    train_vqvae,
)


def _blobs(n: int, size: int = 32) -> torch.Tensor:
    """Frames with one coloured square at a random place on a grey background (uint8 NHWC)."""
    g = torch.Generator().manual_seed(0)
    frames = torch.full((n, size, size, 3), 48, dtype=torch.uint8)
    for i in range(n):
        y, x = torch.randint(0, size - 8, (2,), generator=g).tolist()
        frames[i, y:y + 8, x:x + 8] = torch.randint(64, 255, (3,), generator=g).to(torch.uint8)
    return frames


@pytest.mark.parametrize("quantizer", ["ema", "straight-through"])
def test_vqvae_trains_and_round_trips(quantizer, tmp_path):
    torch.set_num_threads(1)
    frames = _blobs(64)
    cfg = VQVAEConfig(codebook_size=32, code_dim=8, channels=16, num_downsamples=2, quantizer=quantizer)
    model, report = train_vqvae(frames, cfg, steps=60, batch_size=16)
    assert report["recon_mse"] < 0.5 * report["recon_mse_untrained"]
    assert report["codes_used"] >= 3
    codes = model.encode(frames[:5])
    assert codes.shape == (5, 8, 8) and codes.dtype == torch.int64 and codes.max() < 32
    assert (model.vocab_size, model.downsample) == (32, 4)
    float_frames = frames[:5].permute(0, 3, 1, 2).float() / 255
    assert torch.equal(model.encode(float_frames), codes)
    again = load_frame_tokenizer(save_frame_tokenizer(model, tmp_path / "tok", report=report))
    assert isinstance(again, VQVAE) and torch.equal(again.encode(frames[:5]), codes)
    assert again.fingerprint() == model.fingerprint()
    with pytest.raises(ValueError, match="not a multiple of 4"):
        model.encode(torch.rand(1, 3, 30, 32))


def test_dalle_geometry_and_parameter_count():
    with torch.device("meta"):
        full = DalleEncoder()
    assert sum(p.numel() for p in full.parameters()) == pytest.approx(53.8e6, abs=0.05e6)
    assert (full.vocab_size, full.downsample) == (8192, 8)
    small = DalleEncoder(vocab_size=16, n_hid=8)
    codes = small.encode(torch.rand(2, 3, 32, 48))
    assert codes.shape == (2, 4, 6) and codes.max() < 16
    x = torch.rand(1, 3, 8, 8)
    assert small.map_pixels(torch.zeros(1)).item() == pytest.approx(0.1)
    assert small.map_pixels(torch.ones(1)).item() == pytest.approx(0.9)
    assert small.logits(x).shape == (1, 16, 1, 1)


CALLS: list[str] = []


def _record(what: str) -> str:
    CALLS.append(what)
    return what


def _fake_dall_e(monkeypatch) -> type:
    """A stand-in ``dall_e.encoder.Encoder`` module class, importable while pickling. Its
    ``__setstate__`` records a call: loading must restore the weights without running it."""
    fake = types.ModuleType("dall_e.encoder")

    class Encoder(torch.nn.Module):
        def __setstate__(self, state):
            _record("setstate")
            super().__setstate__(state)

    Encoder.__module__, Encoder.__qualname__ = "dall_e.encoder", "Encoder"
    fake.Encoder = Encoder
    monkeypatch.setitem(sys.modules, "dall_e", types.ModuleType("dall_e"))
    monkeypatch.setitem(sys.modules, "dall_e.encoder", fake)
    return Encoder


def test_dalle_loads_state_dict_and_pickled_module(tmp_path, monkeypatch):
    ref = DalleEncoder(vocab_size=16, n_hid=8).eval()
    torch.save(ref.state_dict(), tmp_path / "encoder.pt")
    frames = torch.rand(2, 3, 16, 16)
    assert torch.equal(load_frame_tokenizer(f"dalle:{tmp_path / 'encoder.pt'}").encode(frames), ref.encode(frames))
    # OpenAI's encoder.pkl is a pickled module of the dall_e package: pickle one of a stand-in
    # `dall_e.encoder.Encoder` class (with a torch.device, as the release's attrs fields)
    Encoder = _fake_dall_e(monkeypatch)
    obj = Encoder()
    obj.blocks, obj.device, obj.n_hid = ref.blocks, torch.device("cpu"), 8
    torch.save(obj, tmp_path / "encoder.pkl")
    CALLS.clear()
    loaded = DalleEncoder.from_file(tmp_path / "encoder.pkl")  # dall_e importable: still no code runs
    assert torch.equal(loaded.encode(frames), ref.encode(frames)) and CALLS == []
    monkeypatch.delitem(sys.modules, "dall_e.encoder")
    monkeypatch.delitem(sys.modules, "dall_e")
    assert torch.equal(DalleEncoder.from_file(tmp_path / "encoder.pkl").encode(frames), ref.encode(frames))
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        DalleEncoder.from_file(tmp_path / "missing.pkl")


def test_dalle_file_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return _record, ("payload ran",)

    torch.save({"blocks.input.w": torch.zeros(8, 3, 7, 7), "extra": Payload()}, tmp_path / "evil.pkl")
    CALLS.clear()
    with pytest.raises(ConfigError, match="refused to load"):
        DalleEncoder.from_file(tmp_path / "evil.pkl")
    assert CALLS == []


def test_dalle_tokenizer_folder_keeps_its_geometry(tmp_path):
    ref = DalleEncoder(vocab_size=16, n_hid=8).eval()
    again = load_frame_tokenizer(save_frame_tokenizer(ref, tmp_path / "tok"))
    assert isinstance(again, DalleEncoder) and again.fingerprint() == ref.fingerprint()
    frames = torch.rand(2, 3, 16, 16)
    assert torch.equal(again.encode(frames), ref.encode(frames))
