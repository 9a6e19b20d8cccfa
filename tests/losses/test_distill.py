"""Distillation losses against the spec's golden values (distillation.md Part C, inputs rebuilt
from the stated seeds in the reference run's RNG order) and against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videolang.errors import ConfigError
from videolang.losses.distill import (
    HiddenRegression,
    contrastive_distillation_loss,
    hidden_regression_loss,
    kd_kl_loss,
    nst_loss,
    paired_hinge_loss,
    select_teacher_classes,
)

RTOL = 1e-5


def _hinge_inputs(batch: int = 4):
    torch.manual_seed(0)
    lang = F.normalize(torch.randn(4, 7, 16), dim=-1)
    visn = F.normalize(torch.randn(4, 16), dim=-1)
    mask = torch.ones(4, 7)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    return lang[:batch], visn[:batch], mask[:batch]


def _nst_inputs():
    torch.manual_seed(1)
    s = F.normalize(torch.randn(3, 9, 12), dim=-1)
    t = F.normalize(torch.randn(3, 9, 12), dim=-1)
    return s, t


def _kd_logits(seed: int, classes: int):
    torch.manual_seed(seed)
    student = torch.randn(4, classes) * 3
    teacher = torch.randn(4, classes) * 3
    return student, teacher


# ---------------------------------------------------------------- hinge (golden 1, 1b) --------


def test_paired_hinge_golden():
    lang, visn, mask = _hinge_inputs()
    assert paired_hinge_loss(lang, visn, mask, margin=1.0).item() == pytest.approx(0.88866961, rel=RTOL)


def test_paired_hinge_odd_batch_duplicates_last_row():
    lang, visn, mask = _hinge_inputs(batch=3)
    assert paired_hinge_loss(lang, visn, mask, margin=1.0).item() == pytest.approx(1.02704763, rel=RTOL)


def test_in_batch_hinge_matches_loops():
    lang, visn, mask = _hinge_inputs()
    m = 0.5
    b, length, _ = lang.shape
    text = video = 0.0
    for i in range(b):
        for j in range(b):
            if i == j:
                continue
            for t in range(length):
                if mask[i, t]:
                    text += max(0.0, m - float(lang[i, t] @ visn[i]) + float(lang[i, t] @ visn[j]))
                if mask[i, t] and mask[j, t]:
                    video += max(0.0, m - float(lang[j, t] @ visn[j]) + float(lang[i, t] @ visn[j]))
    expected = (text + video) / (float(mask.sum()) * b)
    got = paired_hinge_loss(lang, visn, mask, margin=m, negatives="in_batch")
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_hinge_is_zero_when_margin_is_met_and_rejects_bad_args():
    video = torch.eye(4, 8)
    tokens = video[:, None, :].expand(4, 3, 8).clone()  # each token equals its own video
    for negatives in ("paired_half", "in_batch"):
        assert paired_hinge_loss(tokens, video, None, margin=0.5, negatives=negatives).item() == 0.0
    with pytest.raises(ConfigError, match="margin"):
        paired_hinge_loss(tokens, video, None, margin=0.0)
    with pytest.raises(ConfigError, match="negatives"):
        paired_hinge_loss(tokens, video, None, negatives="all")


# ---------------------------------------------------------------- NST (golden 2) -------------


def test_nst_vidlankd_golden():
    s, t = _nst_inputs()
    got = nst_loss(s, t, include_teacher_term=False, reduction="vidlankd")
    assert got.item() == pytest.approx(-0.01567627, rel=RTOL)
    single = nst_loss(s, t, include_teacher_term=False, reduction="none")[0]
    assert single.item() == pytest.approx(-0.01695317, rel=RTOL)


def test_nst_true_mmd_golden_and_nonnegative():
    s, t = _nst_inputs()
    assert nst_loss(s, t, reduction="vidlankd").item() == pytest.approx(0.04815529, rel=RTOL)
    per_sample = nst_loss(s, t, reduction="none")
    assert (per_sample >= 0).all()
    assert nst_loss(s, t).item() == pytest.approx(per_sample.mean().item())
    assert nst_loss(t, t).abs().item() < 1e-6


def test_nst_mask_equals_dropping_padding_and_gaussian_by_hand():
    torch.manual_seed(5)
    s, t = torch.randn(2, 6, 5), torch.randn(2, 6, 7)  # different widths are allowed
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    full = nst_loss(s, t, mask, kernel="gaussian", sigma=0.7, reduction="none")
    short = nst_loss(s[1:, :4], t[1:, :4], kernel="gaussian", sigma=0.7, reduction="none")
    assert full[1].item() == pytest.approx(short[0].item(), rel=1e-5)

    def by_hand(a: torch.Tensor, b: torch.Tensor) -> float:
        sa, sb = F.normalize(a, dim=0), F.normalize(b, dim=0)  # (L, H): columns = units

        def k_mean(x, y):
            return sum(
                math.exp(-float((x[:, j] - y[:, k]).pow(2).sum()) / (2 * 0.7**2))
                for j in range(x.shape[1])
                for k in range(y.shape[1])
            ) / (x.shape[1] * y.shape[1])

        return k_mean(sa, sa) - 2 * k_mean(sa, sb) + k_mean(sb, sb)

    assert full[0].item() == pytest.approx(by_hand(s[0], t[0]), rel=1e-5)


# ---------------------------------------------------------------- NT-Xent (golden 3) ---------


def test_contrastive_vidlankd_golden():
    s, t = _nst_inputs()
    got = contrastive_distillation_loss(s, t, temperature=1.0, reduction="vidlankd")
    assert got.item() == pytest.approx(0.27384546, rel=RTOL)
    first = contrastive_distillation_loss(s[:, 0], t[:, 0], temperature=0.5, reduction="vidlankd")
    assert first.item() == pytest.approx(0.22186953, rel=RTOL)


def test_contrastive_mean_is_plain_cross_entropy_and_mask_drops_tokens():
    s, t = _nst_inputs()
    zs, zt = s[:, 2], t[:, 2]
    z = F.normalize(torch.cat([zs, zt]), dim=-1)
    sim = (z @ z.t() / 0.3).fill_diagonal_(float("-inf"))
    expected = F.cross_entropy(sim, torch.tensor([3, 4, 5, 0, 1, 2]))
    assert contrastive_distillation_loss(zs, zt, temperature=0.3).item() == pytest.approx(expected.item(), rel=1e-6)
    # padding sample 2 at position 2: that position uses samples 0 and 1 only
    mask = torch.ones(3, 9)
    mask[2, 2] = 0
    z2 = F.normalize(torch.cat([zs[:2], zt[:2]]), dim=-1)
    sim2 = (z2 @ z2.t() / 0.3).fill_diagonal_(float("-inf"))
    ce2 = F.cross_entropy(sim2, torch.tensor([2, 3, 0, 1]), reduction="sum")
    per_pos = [
        F.cross_entropy(
            (lambda zz: (zz @ zz.t() / 0.3).fill_diagonal_(float("-inf")))(F.normalize(torch.cat([s[:, p], t[:, p]]), dim=-1)),
            torch.tensor([3, 4, 5, 0, 1, 2]),
            reduction="sum",
        )
        for p in range(9)
        if p != 2
    ]
    expected_masked = (sum(per_pos) + ce2) / (6 * 8 + 4)
    got = contrastive_distillation_loss(s, t, temperature=0.3, mask=mask)
    assert got.item() == pytest.approx(expected_masked.item(), rel=1e-5)


# ---------------------------------------------------------------- KL (golden 4, 5) -----------


def test_kd_kl_golden_reductions():
    student, teacher = _kd_logits(2, 106)
    assert kd_kl_loss(student, teacher, 10.0, reduction="mean").item() == pytest.approx(0.07453097, rel=RTOL)
    assert kd_kl_loss(student, teacher, 10.0).item() == pytest.approx(7.90028286, rel=RTOL)
    assert kd_kl_loss(student, teacher, 10.0, reduction="sum").item() == pytest.approx(4 * 7.90028286, rel=RTOL)
    assert kd_kl_loss(student, teacher, 10.0, reduction="none").shape == (4, 106)
    missing = torch.full((4, 106), -1.0)  # the original's default for a missing uid
    assert kd_kl_loss(student, missing, 10.0, reduction="mean").item() == pytest.approx(0.04178823, rel=RTOL)


def test_kd_kl_topk_golden():
    student, teacher = _kd_logits(3, 2513)
    top = kd_kl_loss(student, teacher, 5.0, top_k=50, reduction="none")
    assert top.shape == (4, 50)
    assert top.mean().item() == pytest.approx(0.08881760, rel=RTOL)
    tmb = kd_kl_loss(student, teacher, 5.0, top_k=50, reduction="mean", selection="topmidbottom")
    assert tmb.item() == pytest.approx(0.10911369, rel=RTOL)
    assert kd_kl_loss(student, teacher, 5.0, reduction="mean").item() == pytest.approx(0.00366009, rel=RTOL)


@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
@pytest.mark.parametrize("selection", ["topk", "topk_other"])
def test_kd_kl_topk_all_classes_equals_full(reduction, selection):
    student, teacher = _kd_logits(7, 13)
    full = kd_kl_loss(student, teacher, 2.0, reduction=reduction)
    restricted = kd_kl_loss(student, teacher, 2.0, top_k=13, reduction=reduction, selection=selection)
    assert restricted.item() == pytest.approx(full.item(), rel=1e-6)


def test_kd_kl_by_hand_and_tail_bucket():
    student = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
    teacher = torch.tensor([[0.5, 2.0, 0.0, -1.0]])
    ps, pt = student.softmax(-1)[0], teacher.softmax(-1)[0]
    full = sum(float(pt[c] * (pt[c].log() - ps[c].log())) for c in range(4))
    assert kd_kl_loss(student, teacher).item() == pytest.approx(full, rel=1e-6)
    # top-2 of the teacher = classes 1, 0, plus an "other" bucket with classes 2 and 3
    qs = torch.stack([ps[1], ps[0], ps[2] + ps[3]])
    qt = torch.stack([pt[1], pt[0], pt[2] + pt[3]])
    other = float((qt * (qt.log() - qs.log())).sum())
    assert kd_kl_loss(student, teacher, top_k=2, selection="topk_other").item() == pytest.approx(other, rel=1e-6)
    rs, rt = qs[:2] / qs[:2].sum(), qt[:2] / qt[:2].sum()
    renorm = float((rt * (rt.log() - rs.log())).sum())
    assert kd_kl_loss(student, teacher, top_k=2).item() == pytest.approx(renorm, rel=1e-6)
    # temperature scales by T**2 at the softened distributions
    t = 3.0
    ps3, pt3 = (student / t).softmax(-1), (teacher / t).softmax(-1)
    soft = float((pt3 * (pt3.log() - ps3.log())).sum()) * t * t
    assert kd_kl_loss(student, teacher, t).item() == pytest.approx(soft, rel=1e-6)


def test_kd_kl_mask_drops_rows_and_teacher_gets_no_gradient():
    student, teacher = _kd_logits(4, 10)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    keep = torch.tensor([True, False, True, False])
    got = kd_kl_loss(student, teacher, 2.0, mask=keep)
    expected = kd_kl_loss(student[keep], teacher[keep], 2.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    got_mean = kd_kl_loss(student, teacher, 2.0, mask=keep, reduction="mean")
    assert got_mean.item() == pytest.approx(expected.item() / 10, rel=1e-6)
    got.backward()
    assert teacher.grad is None
    assert student.grad[~keep].abs().sum() == 0 and student.grad[keep].abs().sum() > 0
    none_kept = kd_kl_loss(student, teacher, mask=torch.zeros(4, dtype=torch.bool))
    assert none_kept.item() == 0.0 and none_kept.requires_grad


def test_kd_kl_rejects_bad_arguments():
    student, teacher = _kd_logits(4, 10)
    with pytest.raises(ConfigError, match="top_k"):
        kd_kl_loss(student, teacher, top_k=11)
    with pytest.raises(ConfigError, match="topmidbottom"):
        kd_kl_loss(student, teacher, top_k=4, selection="topmidbottom")
    with pytest.raises(ConfigError, match="temperature"):
        kd_kl_loss(student, teacher, temperature=0.0)
    with pytest.raises(ConfigError, match="reduction"):
        kd_kl_loss(student, teacher, reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        kd_kl_loss(student, teacher[:, :5])
    idx = select_teacher_classes(torch.arange(12.0)[None], 2, "topmidbottom")
    assert idx.tolist() == [[0, 1, 5, 6, 10, 11]]


# ---------------------------------------------------------------- regression (golden 6) ------


def test_hidden_regression_golden():
    torch.manual_seed(3)
    torch.randn(4, 2513), torch.randn(4, 2513)  # the golden run's draws before item 6
    x, y = torch.randn(4, 768), torch.randn(4, 768)
    cos = hidden_regression_loss(x, y, kind="cosine", reduction="none")
    expected = torch.tensor([0.99703890, 1.00439870, 0.95810354, 1.00532842])
    assert torch.allclose(cos, expected, rtol=RTOL)
    assert hidden_regression_loss(x, y, kind="normalized_mse").item() == pytest.approx(0.00258130, rel=1e-4)
    assert hidden_regression_loss(x, y).item() == pytest.approx(F.mse_loss(x, y).item(), rel=1e-6)


def test_hidden_regression_projection_mask_and_errors():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 6), torch.randn(2, 5, 10)
    with pytest.raises(ConfigError, match="projection"):
        hidden_regression_loss(student, teacher)
    head = HiddenRegression(6, 10, kind="cosine")
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss = head(student, teacher, mask)
    per = 1 - F.cosine_similarity(head.projection(student), teacher, dim=-1)
    assert loss.item() == pytest.approx(float(per[mask.bool()].mean().detach()), rel=1e-6)
    loss.backward()
    assert head.projection.weight.grad.abs().sum() > 0
    assert isinstance(HiddenRegression(8, 8).projection, torch.nn.Identity)
    with pytest.raises(ConfigError, match="widths"):
        HiddenRegression(6, 10, project=False)
