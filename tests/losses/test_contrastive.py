"""VideoCLIP's contrastive loss against the golden values and a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from videolang.losses import t2v_loss, v2t_loss, videoclip_loss


def test_golden_values():
    # videoclip_vlm.md §7: torch.manual_seed(0); v = randn(8, 16); t = randn(8, 16)
    torch.manual_seed(0)
    v, t = torch.randn(8, 16), torch.randn(8, 16)
    assert videoclip_loss(v, t).item() == pytest.approx(8.352252, abs=1e-5)
    assert t2v_loss(v, t).item() == pytest.approx(3.970556, abs=1e-5)
    assert v2t_loss(v, t).item() == pytest.approx(4.381696, abs=1e-5)


def test_hand_computation():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    s = v @ t.t()  # [[1, 0], [2, 2]]
    # video->text rows: -log softmax(s)[i, i]; text->video rows use s.T
    v2t = (-(1 - math.log(math.e + 1)) - (2 - math.log(2 * math.e ** 2))) / 2
    st = s.t()  # [[1, 2], [0, 2]]
    t2v = (-(1 - math.log(math.e + math.e ** 2)) - (2 - math.log(1 + math.e ** 2))) / 2
    assert videoclip_loss(v, t).item() == pytest.approx(v2t + t2v, abs=1e-6)
    assert st.shape == (2, 2)
    # normalisation and temperature options
    cos = torch.nn.functional.normalize
    expected = videoclip_loss(cos(v, dim=-1) / 0.5, cos(t, dim=-1))
    assert videoclip_loss(v, t, normalize=True, temperature=0.5).item() == pytest.approx(expected.item(), abs=1e-6)
    assert videoclip_loss(v, t, logit_scale=torch.tensor(2.0)).item() == pytest.approx(
        videoclip_loss(v * 2, t).item(), abs=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        videoclip_loss(torch.zeros(2, 3), torch.zeros(3, 3))
