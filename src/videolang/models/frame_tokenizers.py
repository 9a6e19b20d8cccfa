"""Frame tokenizers: images -> grids of discrete codes, one interface (VIMPAC's input).

Every tokenizer has ``tokenizer_id``, ``vocab_size``, ``downsample``, ``fingerprint()`` and
``encode(frames) -> codes`` (``(N, 3, H, W)`` in [0, 1] or uint8 ``(N, H, W, 3)`` -> int64
``(N, H/d, W/d)``). :class:`VQVAE` (:func:`train_vqvae`) trains on CPU in minutes;
:class:`DalleEncoder` is the original VIMPAC's DALL-E dVAE encoder, read from a local file
without running code from it. :func:`save_frame_tokenizer` / :func:`load_frame_tokenizer`
keep a tokenizer as a folder. Details: docs/vimpac.md ("Frame tokenizers").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videolang.errors import ConfigError
from videolang.models.weights import load_strict, read_checkpoint
from videolang.utils.io import atomic_output

__all__ = [
    "VQVAE",
    "DalleEncoder",
    "FrameTokenizer",
    "VQVAEConfig",
    "load_frame_tokenizer",
    "save_frame_tokenizer",
    "train_vqvae",
]


class FrameTokenizer(nn.Module):
    """Base of every frame tokenizer (see the module docstring for the contract)."""

    tokenizer_id: str = "base"
    vocab_size: int = 0
    downsample: int = 1

    @staticmethod
    def as_float_frames(frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1]; float input passes through."""
        if frames.dim() != 4:
            raise ValueError(f"frames must be (N, 3, H, W) float or (N, H, W, 3) uint8, got {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            return frames.permute(0, 3, 1, 2).float() / 255.0
        if frames.shape[1] != 3:
            raise ValueError(f"float frames must be (N, 3, H, W), got {tuple(frames.shape)}")
        return frames.float()

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"{self.tokenizer_id}: frame size {h}x{w} is not a multiple of {self.downsample}")

    def encode(self, frames: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the weights, in state_dict order."""
        h = hashlib.sha256(self.tokenizer_id.encode())
        for key, value in self.state_dict().items():
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# VQ-VAE


@dataclass
class VQVAEConfig:
    codebook_size: int = 256
    code_dim: int = 32
    channels: int = 64
    num_downsamples: int = 3  # downsample = 2 ** num_downsamples
    quantizer: str = "ema"  # "ema" or "straight-through"
    ema_decay: float = 0.95
    commitment: float = 0.25
    dead_code_threshold: float = 0.05  # EMA usage count below which a code is re-seeded

    def __post_init__(self) -> None:
        if self.quantizer not in ("ema", "straight-through"):
            raise ConfigError(f"VQ-VAE quantizer must be 'ema' or 'straight-through', got {self.quantizer!r}")
        if self.num_downsamples < 1 or self.codebook_size < 2:
            raise ConfigError("VQ-VAE needs num_downsamples >= 1 and codebook_size >= 2")


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class VQVAE(FrameTokenizer):
    """A small VQ-VAE: ``encode`` gives codes, ``forward`` the reconstruction and the losses."""

    tokenizer_id = "vqvae"

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.config = cfg
        self.vocab_size = cfg.codebook_size
        self.downsample = 2 ** cfg.num_downsamples
        c = cfg.channels
        down: list[nn.Module] = []
        for i in range(cfg.num_downsamples):
            down += [nn.Conv2d(3 if i == 0 else c, c, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*down, _ResBlock(c), nn.ReLU(), nn.Conv2d(c, cfg.code_dim, 1))
        up: list[nn.Module] = [nn.Conv2d(cfg.code_dim, c, 3, padding=1), _ResBlock(c), nn.ReLU()]
        for i in range(cfg.num_downsamples):
            last = i == cfg.num_downsamples - 1
            up += [nn.ConvTranspose2d(c, 3 if last else c, 4, stride=2, padding=1)]
            if not last:
                up.append(nn.ReLU())
        self.decoder = nn.Sequential(*up)
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.code_dim) * 0.1,
                                     requires_grad=cfg.quantizer != "ema")
        self.register_buffer("ema_count", torch.ones(cfg.codebook_size))
        self.register_buffer("ema_sum", self.codebook.detach().clone())

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        # Unit-norm latents and codes (cosine-similarity lookup) keep a small codebook in use.
        return F.normalize(self.encoder(x * 2 - 1).permute(0, 2, 3, 1), dim=-1)  # (N, h, w, code_dim)

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                + self.codebook.pow(2).sum(1)[None])
        return dist.argmin(1).view(z.shape[:-1])

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self._nearest(self._latents(self.as_float_frames(frames)))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, h, w)`` -> frames ``(N, 3, H, W)`` in [0, 1]."""
        z = self.codebook[codes].permute(0, 3, 1, 2)
        return ((self.decoder(z) + 1) / 2).clamp(0, 1)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.as_float_frames(frames)
        z = self._latents(x)
        codes = self._nearest(z.detach())
        q = self.codebook[codes]
        commit = F.mse_loss(z, q.detach())
        loss_codebook = F.mse_loss(q, z.detach()) if self.config.quantizer != "ema" else z.new_zeros(())
        if self.training and self.config.quantizer == "ema":
            self._ema_update(z.detach(), codes)
        q = z + (q - z).detach()  # straight-through gradient to the encoder
        recon = self.decoder(q.permute(0, 3, 1, 2))
        loss_recon = F.mse_loss(recon, x * 2 - 1)
        loss = loss_recon + loss_codebook + self.config.commitment * commit
        return {"loss": loss, "recon_mse": F.mse_loss((recon + 1) / 2, x).detach(), "codes": codes}

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat, idx = z.reshape(-1, z.shape[-1]), codes.reshape(-1)
        onehot = F.one_hot(idx, self.vocab_size).to(flat.dtype)
        decay = self.config.ema_decay
        self.ema_count.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(onehot.t() @ flat, alpha=1 - decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.vocab_size * 1e-5) * n  # Laplace smoothing
        self.codebook.data.copy_(F.normalize(self.ema_sum / count[:, None], dim=-1))
        # Re-seed rarely used codes from the batch latents farthest from their code (dead codes
        # otherwise stay dead, and a small codebook collapses onto the plain background).
        dead = self.ema_count < self.config.dead_code_threshold
        if dead.any():
            error = (flat - self.codebook[idx]).pow(2).sum(1)
            k = int(min(int(dead.sum()), flat.shape[0]))
            pick = torch.multinomial(error + 1e-12, k, replacement=False)
            rows = dead.nonzero()[:k, 0]
            self.codebook.data[rows] = flat[pick]
            self.ema_sum[rows] = flat[pick]
            self.ema_count[rows] = 1.0


def train_vqvae(frames: torch.Tensor, cfg: VQVAEConfig | None = None, *, steps: int = 300, batch_size: int = 64,
                lr: float = 2e-3, seed: int = 0, log_every: int = 0) -> tuple[VQVAE, dict[str, Any]]:
    """Train a :class:`VQVAE` on ``frames`` (uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)``).

    Returns the model (eval mode) and a report: reconstruction MSE (pixels in [0, 1]) of the
    untrained and trained model on the training frames, codes in use and their perplexity."""
    torch.manual_seed(seed)
    x = FrameTokenizer.as_float_frames(frames)
    model = VQVAE(cfg or VQVAEConfig())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        before = float(model.eval()(x[:512])["recon_mse"])
    model.train()
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
        out = model(x[idx])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  vq-vae step {step + 1}/{steps}: recon mse {float(out['recon_mse']):.4f}")
    model.eval()
    with torch.no_grad():
        sample = x[:1024]
        out = model(sample)
        counts = torch.bincount(out["codes"].reshape(-1), minlength=model.vocab_size).float()
        p = counts / counts.sum()
        perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    report = {"recon_mse_untrained": before, "recon_mse": float(out["recon_mse"]), "codes_used": int((counts > 0).sum()),
              "perplexity": perplexity, "steps": steps, "seconds": time.perf_counter() - start}
    return model, report


# ---------------------------------------------------------------------------------------------
# DALL-E dVAE encoder


class _DalleConv(nn.Module):
    """DALL-E's Conv2d: parameters ``w`` (out, in, k, k) and ``b`` (out,), 'same' padding."""

    def __init__(self, n_in: int, n_out: int, kw: int):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in, kw, kw))
        self.b = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.w, std=1 / math.sqrt(n_in * kw * kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w, self.b, padding=(self.w.shape[-1] - 1) // 2)


class _DalleBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, n_layers: int):
        super().__init__()
        hid = n_out // 4
        self.post_gain = 1 / n_layers ** 2
        self.id_path = _DalleConv(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", _DalleConv(n_in, hid, 3)),
            ("relu_2", nn.ReLU()), ("conv_2", _DalleConv(hid, hid, 3)),
            ("relu_3", nn.ReLU()), ("conv_3", _DalleConv(hid, hid, 3)),
            ("relu_4", nn.ReLU()), ("conv_4", _DalleConv(hid, n_out, 1)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


class DalleEncoder(FrameTokenizer):
    """The DALL-E dVAE encoder (4 groups x 2 blocks, width 256, 8192 codes; parameter names
    as in OpenAI's ``dall_e`` package, so its weights load by name)."""

    tokenizer_id = "dalle-dvae"
    logit_laplace_eps = 0.1

    def __init__(self, vocab_size: int = 8192, n_hid: int = 256, n_blk_per_group: int = 2, group_count: int = 4):
        super().__init__()
        self.vocab_size = vocab_size
        self.n_hid, self.n_blk_per_group, self.group_count = n_hid, n_blk_per_group, group_count
        self.downsample = 2 ** (group_count - 1)
        n_layers = group_count * n_blk_per_group
        groups: list[tuple[str, nn.Module]] = [("input", _DalleConv(3, n_hid, 7))]
        width = n_hid
        for g in range(group_count):
            out = n_hid * 2 ** g
            blocks = [(f"block_{i + 1}", _DalleBlock(width if i == 0 else out, out, n_layers))
                      for i in range(n_blk_per_group)]
            if g < group_count - 1:
                blocks.append(("pool", nn.MaxPool2d(2)))
            groups.append((f"group_{g + 1}", nn.Sequential(OrderedDict(blocks))))
            width = out
        groups.append(("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()),
                                                             ("conv", _DalleConv(width, vocab_size, 1))]))))
        self.blocks = nn.Sequential(OrderedDict(groups))

    def map_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [eps, 1 - eps] (DALL-E's ``map_pixels``)."""
        return (1 - 2 * self.logit_laplace_eps) * x + self.logit_laplace_eps

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.as_float_frames(frames)
        self._check_size(x)
        return self.blocks(self.map_pixels(x))

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.logits(frames).argmax(1)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> DalleEncoder:
        """Weights from a local file: OpenAI's pickled ``encoder.pkl``, or a state_dict with
        DALL-E's key names (``torch.save`` or ``.safetensors``). Read without running code from
        the file (:func:`~videolang.models.weights.read_checkpoint`)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"DALL-E encoder weights not found: {path} (nothing is downloaded; "
                              "get encoder.pkl from OpenAI's DALL-E release)")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = _pickled_state(read_checkpoint(path), source=str(path))
        # The released encoder is the default geometry; smaller ones (tests) are read off the weights.
        model = cls(**_dalle_geometry(state))
        load_strict(model, state, source=str(path))
        return model.eval()

    def geometry(self) -> dict[str, int]:
        """The constructor arguments of this encoder (what :func:`save_frame_tokenizer` records)."""
        return {"vocab_size": self.vocab_size, "n_hid": self.n_hid, "n_blk_per_group": self.n_blk_per_group,
                "group_count": self.group_count}


def _dalle_geometry(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Vocabulary and width of a DALL-E encoder state dict (the block and group counts are the
    release's: other values give keys the strict load reports)."""
    vocab, first = state.get("blocks.output.conv.w"), state.get("blocks.input.w")
    return {"vocab_size": int(vocab.shape[0]) if vocab is not None else 8192,
            "n_hid": int(first.shape[0]) if first is not None else 256}


def _pickled_state(obj: Any, *, source: str) -> dict[str, torch.Tensor]:
    """A state dict from what :func:`read_checkpoint` gave: a state dict as is, or a pickled
    ``nn.Module`` (OpenAI's ``encoder.pkl``), whose classes came back as inert stand-ins holding
    their ``__dict__``: parameters and persistent buffers are collected from it by name."""
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    out: dict[str, torch.Tensor] = {}

    def walk(node: Any, prefix: str) -> None:
        state = getattr(node, "state", None)
        if not isinstance(state, dict) or not isinstance(state.get("_modules"), dict):
            raise ConfigError(f"{source}: neither a state dict nor a pickled torch module")
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if isinstance(value, torch.Tensor) and name not in skip:
                    out[prefix + name] = value.detach()
        for name, child in state["_modules"].items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(obj, "")
    return out


# ---------------------------------------------------------------------------------------------
# saving / loading


def save_frame_tokenizer(tokenizer: FrameTokenizer, out_dir: str | os.PathLike, *, overwrite: bool = False,
                         report: dict | None = None) -> Path:
    """Write ``tokenizer.json`` (kind, config, fingerprint, training report) + ``model.safetensors``."""
    from safetensors.torch import save_file

    if isinstance(tokenizer, VQVAE):
        meta: dict[str, Any] = {"kind": "vqvae", "config": asdict(tokenizer.config)}
    elif isinstance(tokenizer, DalleEncoder):
        meta = {"kind": "dalle-dvae", "config": tokenizer.geometry()}
    else:
        raise ConfigError(f"cannot save tokenizer of type {type(tokenizer).__name__}")
    meta.update(fingerprint=tokenizer.fingerprint(), report=report or {})
    with atomic_output(out_dir, overwrite=overwrite, is_dir=True) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in tokenizer.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "tokenizer.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return Path(out_dir)


def load_frame_tokenizer(spec: str | os.PathLike) -> FrameTokenizer:
    """A tokenizer folder written by :func:`save_frame_tokenizer`, or ``dalle:PATH`` (DALL-E
    dVAE encoder weights, see :meth:`DalleEncoder.from_file`)."""
    text = str(spec)
    if text.startswith("dalle:"):
        return DalleEncoder.from_file(text[len("dalle:"):])
    path = Path(text)
    meta_file = path / "tokenizer.json"
    if not meta_file.is_file():
        raise ConfigError(f"{path}: not a tokenizer folder (no tokenizer.json); use dalle:PATH for DALL-E weights")
    from safetensors.torch import load_file

    meta = json.loads(meta_file.read_text())
    kind = meta.get("kind")
    if kind == "vqvae":
        model: FrameTokenizer = VQVAE(VQVAEConfig(**meta["config"]))
    elif kind == "dalle-dvae":
        model = DalleEncoder(**{k: int(v) for k, v in meta["config"].items()})
    else:
        raise ConfigError(f"{meta_file}: unknown tokenizer kind {kind!r}")
    load_strict(model, load_file(str(path / "model.safetensors")), source=str(path / "model.safetensors"))
    return model.eval()
