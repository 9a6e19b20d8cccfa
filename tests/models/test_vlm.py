"""VLM's joint encoder and MTM loss against the original's golden outputs; the isolated mask."""

from __future__ import annotations

import itertools

import pytest
import torch
from tests.golden import load_golden

from videolang.errors import ConfigError
from videolang.losses import mtm_loss
from videolang.models.bert import BertConfig
from videolang.models.convert.vlm import convert_mmpt_vlm_state_dict
from videolang.models.vlm import (
    VLM,
    VLMConfig,
    isolated_mask,
    textgen_mask,
)


@pytest.fixture(scope="module")
def golden():
    return load_golden("vlm_tiny_mtm")


def tiny() -> VLM:
    bert = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128)
    return VLM(VLMConfig(max_video_len=8, bert=bert)).eval()


def test_mtm_golden(golden):
    model = tiny()
    convert_mmpt_vlm_state_dict({"model": {f"mmmodel.mm_encoder.{k}": v for k, v in golden["state_dict"].items()}},
                                model)
    i = golden["inputs"]
    original_feats = i["vfeats"].clone()
    with torch.no_grad():
        video, text, targets = model.mtm_logits(i["caps"], i["cmasks"], i["vfeats"], i["vmasks"],
                                                i["video_label"], i["text_label"])
    assert video.shape == (2, 212) and text.shape == (2, 211)  # 1 + 11 non-masked + 200 / 200 + 11
    torch.testing.assert_close(video, golden["video_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text, golden["text_logits"], atol=1e-5, rtol=0)
    assert mtm_loss(video, text, targets).item() == pytest.approx(5.152780, abs=1e-5)
    assert torch.equal(i["vfeats"], original_feats)  # the original zeroed masked frames in place


def test_mtm_loss_hand_computed():
    video = torch.tensor([[2.0, 0.0, 1.0]])
    text = torch.tensor([[0.0, 3.0]])  # + the appended zero column -> [0, 3, 0], target 1
    expected = (-(2 - torch.log(torch.exp(torch.tensor([2.0, 0.0, 1.0])).sum()))
                - (3 - torch.log(torch.exp(torch.tensor([0.0, 3.0, 0.0])).sum()))) / 2
    assert mtm_loss(video, text, torch.tensor([1])).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="columns"):
        mtm_loss(video, text, torch.tensor([1]), zero_logit=False)


def test_isolated_mask_equals_separate_passes(golden):
    model = tiny()
    convert_mmpt_vlm_state_dict(golden["state_dict"], model)
    i = golden["inputs"]
    caps, cmasks, vfeats, vmasks = i["caps"], i["cmasks"], i["vfeats"], i["vmasks"]
    tv = vfeats.shape[1]
    with torch.no_grad():
        joint = model(caps, cmasks, vfeats, vmasks, attention_mask=isolated_mask(cmasks, vmasks))
        x, keys = model.embed(caps, cmasks, vfeats, vmasks)  # shared embeddings, then split
        video = model.bert.encode(x[:, 1 : tv + 2], keys[:, 1 : tv + 2])
        text = model.bert.encode(x[:, tv + 2 :], keys[:, tv + 2 :])
        cls = model.bert.encode(x[:, :1], keys[:, :1])
    valid_video = keys[:, 1 : tv + 2]
    torch.testing.assert_close(joint[:, 1 : tv + 2][valid_video], video[valid_video], atol=1e-5, rtol=0)
    valid_text = keys[:, tv + 2 :]
    torch.testing.assert_close(joint[:, tv + 2 :][valid_text], text[valid_text], atol=1e-5, rtol=0)
    torch.testing.assert_close(joint[:, :1], cls, atol=1e-5, rtol=0)
    # and the full mask differs (the test would catch an isolated mask that isolates nothing)
    full = model(caps, cmasks, vfeats, vmasks)
    assert (full[:, 1 : tv + 2][valid_video] - video[valid_video]).abs().max() > 1e-3


def test_vlm_converter_is_strict(golden):
    state = dict(golden["state_dict"])
    del state["cls.predictions.decoder.weight"]
    with pytest.raises(ConfigError, match=r"missing keys: cls\.predictions\.decoder\.weight"):
        convert_mmpt_vlm_state_dict(state, tiny())


def test_pooled_halves_equal_the_isolated_joint_pass(golden):
    model = tiny()
    convert_mmpt_vlm_state_dict(golden["state_dict"], model)
    i = golden["inputs"]
    caps, cmasks, vfeats, vmasks = i["caps"], i["cmasks"], i["vfeats"], i["vmasks"]
    tv = vfeats.shape[1]
    with torch.no_grad():
        joint = model(caps, cmasks, vfeats, vmasks, attention_mask=isolated_mask(cmasks, vmasks))
        video, text = model.encode_video(vfeats, vmasks), model.encode_text(caps, cmasks)
    keys = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1).float()
    vk, tk = keys[:, 1 : tv + 2, None], keys[:, tv + 2 :, None]
    expect_video = (joint[:, 1 : tv + 2] * vk).sum(1) / vk.sum(1)
    expect_text = (joint[:, tv + 2 :] * tk).sum(1) / tk.sum(1)
    torch.testing.assert_close(video, expect_video, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, expect_text, atol=1e-5, rtol=0)


def test_textgen_mask_by_hand():
    # vmask [1,1,1,0], cmask [1,1,1,1,1,0]: L = 10 = [CLS] v v v v(pad) [SEP] t t t pad
    mask = textgen_mask(torch.tensor([[1, 1, 1, 1, 1, 0]]).bool(), torch.tensor([[1, 1, 1, 0]]).bool())[0]
    prefix = [1, 1, 1, 1, 0, 1, 0, 0, 0, 0]
    expected = [prefix] * 6  # [CLS], video (padded frame too) and [SEP] rows
    expected += [[1, 1, 1, 1, 0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 1, 1, 1, 0, 0],
                 [1, 1, 1, 1, 0, 1, 1, 1, 1, 0], prefix]  # causal text; the padding row copies [CLS]
    assert mask.int().tolist() == expected


def test_caption_logits_are_causal():
    torch.manual_seed(0)
    model = tiny()
    caps = torch.tensor([[101, 102, 101, 5, 6, 7, 102]])
    feats, vmasks = torch.randn(1, 3, 512), torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        a = model.caption_logits(caps, torch.ones_like(caps).bool(), feats, vmasks)
        changed = caps.clone()
        changed[0, 5] = 9
        b = model.caption_logits(changed, torch.ones_like(caps).bool(), feats, vmasks)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)  # positions before the change
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-4


def _small_vocab_model() -> VLM:
    bert = BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(3)
    return VLM(VLMConfig(feature_dim=8, max_video_len=4, bert=bert, cls_token_id=1, sep_token_id=2,
                         mask_token_id=3, pad_token_id=0)).eval()


def test_beam_search_finds_the_best_caption_and_greedy_is_argmax():
    model = _small_vocab_model()
    feats, vmasks = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)

    def logp(video: int, words: list[int]) -> float:  # log P(words + [SEP] | video), brute force
        seq, total = [1, 2, 1], 0.0
        for w in [*words, 2]:
            ids = torch.tensor([seq])
            with torch.no_grad():
                out = model.caption_logits(ids, torch.ones_like(ids).bool(), feats[video : video + 1],
                                           vmasks[video : video + 1])[0, -1].log_softmax(-1)
            total += float(out[w])
            seq.append(w)
        return total

    import itertools

    for v in range(2):
        candidates = [list(c) for n in range(0, 4) for c in itertools.product([4, 5], repeat=n)]
        best = max(candidates, key=lambda c: logp(v, c) / (len(c) + 1))
        got = model.generate(feats[v : v + 1], vmasks[v : v + 1], max_length=4, num_beams=16)[0]
        assert got == best
    greedy = model.generate(feats, vmasks, max_length=4, num_beams=1)
    for v in range(2):  # follow the argmax step by step
        seq = [1, 2, 1]
        for _ in range(4):
            ids = torch.tensor([seq])
            with torch.no_grad():
                out = model.caption_logits(ids, torch.ones_like(ids).bool(), feats[v : v + 1], vmasks[v : v + 1])[0, -1]
            out[[0, 1, 3]] = float("-inf")
            seq.append(int(out.argmax()))
            if seq[-1] == 2:
                break
        words = seq[3:]
        assert greedy[v] == (words[: words.index(2)] if 2 in words else words)


def test_outputs_do_not_depend_on_how_far_the_batch_pads_the_video(golden):
    # MMPT pads every video to max_video_len and puts its [SEP] after the padding; a batch padded
    # only to its longest video (5 rows here) must give the same outputs.
    model = tiny()
    convert_mmpt_vlm_state_dict(golden["state_dict"], model)
    i = golden["inputs"]
    caps, cmasks, vfeats, vmasks = i["caps"][1:], i["cmasks"][1:], i["vfeats"][1:], i["vmasks"][1:]
    assert int(vmasks.sum()) == 5
    short, short_mask = vfeats[:, :5], vmasks[:, :5]
    junk = vfeats.clone()
    junk[:, 5:] = 7.0  # whatever sits in padded slots is ignored
    with torch.no_grad():
        for f, m in ((short, short_mask), (junk, vmasks)):
            torch.testing.assert_close(model.encode_video(f, m), model.encode_video(vfeats, vmasks), atol=1e-5, rtol=0)
            valid = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1)  # padded slots' own states may differ
            torch.testing.assert_close(model(caps, cmasks, f, m)[valid], model(caps, cmasks, vfeats, vmasks)[valid],
                                       atol=1e-5, rtol=0)
            torch.testing.assert_close(model.caption_logits(caps, cmasks, f, m),
                                       model.caption_logits(caps, cmasks, vfeats, vmasks), atol=1e-5, rtol=0)
        # the text half alone sits where the joint pass puts the text
        iso = model(caps, cmasks, short, short_mask, attention_mask=isolated_mask(cmasks, vmasks))
        text = model.encode_text(caps, cmasks)
    tk = cmasks[:, 2:, None].float()
    torch.testing.assert_close(text, (iso[:, 8 + 2 :] * tk).sum(1) / tk.sum(1), atol=1e-5, rtol=0)


def test_beam_search_does_not_depend_on_the_batch():
    model = _small_vocab_model()
    torch.manual_seed(4)
    feats = torch.randn(5, 4, 8)
    masks = torch.arange(4)[None] < torch.tensor([4, 1, 3, 2, 4])[:, None]
    for beams in (1, 3):
        alone = [model.generate(feats[j : j + 1, : int(m.sum())], masks[j : j + 1, : int(m.sum())], max_length=6,
                                num_beams=beams, length_penalty=0.5)[0] for j, m in enumerate(masks)]
        assert model.generate(feats, masks, max_length=6, num_beams=beams, length_penalty=0.5) == alone
        assert model.generate(feats.flip(0), masks.flip(0), max_length=6, num_beams=beams,
                              length_penalty=0.5) == alone[::-1]


def test_segmentation_head():
    model = VLM(VLMConfig(feature_dim=8, max_video_len=4, num_classes=5,
                          bert=BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32)))
    logits = model.segment_logits(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool))
    assert logits.shape == (2, 4, 5)
    with pytest.raises(ConfigError, match="no classifier"):
        tiny().segment_logits(torch.randn(1, 2, 512), torch.ones(1, 2, dtype=torch.bool))


def test_match_scores_read_the_cls_or_mean_text_state_of_the_full_attention_pass():
    model = VLM(VLMConfig(feature_dim=8, max_video_len=4, num_classes=1,
                          bert=BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))).eval()
    caps = torch.randint(5, 200, (3, 6))
    cmasks, vfeats, vmasks = torch.ones(3, 6, dtype=torch.bool), torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
    scores = model.match_scores(caps, cmasks, vfeats, vmasks)
    assert scores.shape == (3,)
    expected = model.classifier(model(caps, cmasks, vfeats, vmasks)[:, 0]).squeeze(-1)
    torch.testing.assert_close(scores, expected)
    # full attention: the [CLS] score depends on the text as well as the video
    other = model.match_scores(caps.roll(1, 0), cmasks, vfeats, vmasks)
    assert not torch.allclose(scores, other)
    # pooling="text": the mean of the words and final [SEP] of the same pass, padding ignored
    cmasks[0, 4:] = False
    hidden = model(caps, cmasks, vfeats, vmasks)[:, 4 + 2 :]
    keys = cmasks[:, 2:].unsqueeze(-1).float()
    expected = model.classifier((hidden * keys).sum(1) / keys.sum(1)).squeeze(-1)
    torch.testing.assert_close(model.match_scores(caps, cmasks, vfeats, vmasks, pooling="text"), expected)
    with pytest.raises(ConfigError, match="one-output classifier"):
        tiny().match_scores(caps, cmasks, torch.randn(3, 4, 512), vmasks)


def test_convert_cli_round_trip_and_strictness(golden, tmp_path):
    from videolang.cli.main import main
    from videolang.models import load_pretrained

    ckpt = tmp_path / "checkpoint_best.pt"
    torch.save({"model": {f"mmmodel.mm_encoder.{k}": v.half() for k, v in golden["state_dict"].items()}}, ckpt)
    args = ["convert", "vlm", str(ckpt), str(tmp_path / "out"), "--model", "vlm-tiny",
            "--set", "bert.vocab_size=200", "max_video_len=8"]
    assert main(args) == 0
    model = load_pretrained(tmp_path / "out")
    i = golden["inputs"]
    with torch.no_grad():
        video, _, _ = model.mtm_logits(i["caps"], i["cmasks"], i["vfeats"], i["vmasks"], i["video_label"],
                                       i["text_label"])
    torch.testing.assert_close(video, golden["video_logits"], atol=5e-2, rtol=0)  # the file was fp16
    state = torch.load(ckpt, weights_only=False)
    del state["model"]["mmmodel.mm_encoder.videomlp.linear1.weight"]
    torch.save(state, ckpt)
    assert main([*args[:2], str(ckpt), str(tmp_path / "out2"), *args[4:]]) == 2
    assert not (tmp_path / "out2").exists()


def test_order_aware_embeddings_average_whole_and_run_cosines(golden):
    model = tiny()
    convert_mmpt_vlm_state_dict(golden["state_dict"], model)
    i = golden["inputs"]
    caps, cmasks, vfeats, vmasks = i["caps"], i["cmasks"], i["vfeats"], i["vmasks"]
    s = 2
    with torch.no_grad():
        video, text = model.encode_video(vfeats, vmasks, segments=s), model.encode_text(caps, cmasks, segments=s)
        vh, vk = model.video_hidden(vfeats, vmasks)
        th, tk = model.text_hidden(caps, cmasks)
    h = vh.shape[-1]
    assert video.shape == (vfeats.shape[0], (1 + s) * h) and text.shape == (caps.shape[0], (1 + s) * h)
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(len(video)))

    def runs(hidden, keys):  # by hand: the valid tokens in order, cut into s near-equal runs
        out = []
        for row, k in zip(hidden, keys, strict=True):
            valid = row[k]
            bounds = [-(-len(valid) * j // s) for j in range(s + 1)]  # ceil: earlier runs take the extra token
            out.append([valid.mean(0)] + [valid[a:b].mean(0) for a, b in itertools.pairwise(bounds)])
        return out

    cos = torch.nn.functional.cosine_similarity
    for b, (v_parts, t_parts) in enumerate(zip(runs(vh, vk), runs(th, tk), strict=True)):
        expect = sum(cos(v, t, dim=0) for v, t in zip(v_parts, t_parts, strict=True)) / (1 + s)
        torch.testing.assert_close(video[b] @ text[b], expect, atol=1e-5, rtol=0)
    # the first part is the whole-sequence embedding, normalized
    whole = torch.nn.functional.normalize(model.encode_video(vfeats, vmasks), dim=-1) / (1 + s) ** 0.5
    torch.testing.assert_close(video[:, :h], whole, atol=1e-6, rtol=0)


def test_order_aware_embeddings_tell_swapped_halves_apart():
    model = tiny()
    a, b = torch.randn(1, 3, 512), torch.randn(1, 3, 512)
    first, swapped = torch.cat([a, b], 1), torch.cat([b, a], 1)
    with torch.no_grad():
        x, y = model.encode_video(first, segments=2), model.encode_video(swapped, segments=2)
    # swapping the two halves of a video moves its first run far more than its whole-video
    # mean, which only the position embeddings can change
    h = model.config.bert.hidden_size
    assert (x[:, h:2 * h] - y[:, h:2 * h]).abs().max() > 10 * (x[:, :h] - y[:, :h]).abs().max()


def test_feature_standardization_is_applied_everywhere(golden):
    plain = tiny()
    convert_mmpt_vlm_state_dict(golden["state_dict"], plain)
    cfg = VLMConfig(max_video_len=8, bert=plain.config.bert, standardize_features=True)
    std_model = VLM(cfg).eval()
    std_model.load_state_dict({**plain.state_dict(), "feature_mean": torch.zeros(512), "feature_std": torch.ones(512)})
    mean, std = torch.randn(512), torch.rand(512) + 0.5
    std_model.set_feature_statistics(mean, std)
    i = golden["inputs"]
    raw = i["vfeats"] * std + mean  # what the standardizing model must map back to vfeats
    with torch.no_grad():
        torch.testing.assert_close(std_model.encode_video(raw, i["vmasks"]), plain.encode_video(i["vfeats"], i["vmasks"]),
                                   atol=1e-4, rtol=0)
        a = std_model.mtm_logits(i["caps"], i["cmasks"], raw, i["vmasks"], i["video_label"], i["text_label"])
        b = plain.mtm_logits(i["caps"], i["cmasks"], i["vfeats"], i["vmasks"], i["video_label"], i["text_label"])
    torch.testing.assert_close(a[0], b[0], atol=1e-3, rtol=0)
    with pytest.raises(ConfigError, match="does not standardize"):
        plain.set_feature_statistics(mean, std)
