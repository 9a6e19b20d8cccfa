"""VLM's data: masking, multiple-choice readers, COIN segments and sliding windows, splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from videolang.data.stores import FeatureStoreWriter
from videolang.data.videoclip import TextLayout
from videolang.data.vlm import (
    CaptionVideos,
    McItem,
    MultipleChoiceItems,
    SegmentationWindows,
    VideoSegments,
    VLMCaptionDataConfig,
    VLMCaptionSplits,
    VLMQADataConfig,
    VLMQASplits,
    VLMSegmentationDataConfig,
    VLMSegmentationSplits,
    caption_layout,
    coin_label_names,
    read_coin,
    read_mc_items,
    row_labels,
    whole_modality_masks,
)
from videolang.errors import ConfigError


def test_msrvtt_mc_csv_and_jsonl(tmp_path):
    csv = tmp_path / "MSR_MC_test.csv"
    csv.write_text("key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer\n"
                   "k0\tmsr7010\tone\ttwo\tthree\tfour\tfive\t2\n"
                   "k1\tvid00001\ta\tb\tc\td\te\t0\n")
    items = read_mc_items(csv, "msrvtt")
    assert [i.video_id for i in items] == ["video7010", "vid00001"]  # MMPT's msr -> video rewrite
    assert items[0].options[2] == "three" and items[0].answer == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("key\tvid_key\ta1\tanswer\nk\tv\tx\t0\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:1: missing column 'a2'"):
        read_mc_items(bad, "msrvtt")
    bad.write_text("key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer\nk\tv\ta\tb\tc\td\te\t5\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:2: field 'answer': Input should be less than 5"):
        read_mc_items(bad, "msrvtt")
    jl = tmp_path / "mc.jsonl"
    good = {"video_id": "v", "options": ["x", "y"], "answer": 1, "split": "val"}
    jl.write_text(json.dumps(good) + "\n" + json.dumps({**good, "split": "test"}) + "\n")
    assert len(read_mc_items(jl, "jsonl", "val")) == 1
    for broken, problem in [({"answer": 5}, "answer 5 is not an index of the 2 options"),
                            ({"answer": "1"}, "field 'answer': Input should be a valid integer"),
                            ({"answer": 1.0}, "field 'answer': Input should be a valid integer"),
                            ({"options": "xy"}, "field 'options': Input should be a valid list")]:
        jl.write_text(json.dumps(good) + "\n" + json.dumps({**good, **broken}) + "\n")
        with pytest.raises(ConfigError, match=rf"mc\.jsonl:2: .*{problem}"):
            read_mc_items(jl, "jsonl", "val")  # checked even outside the split read


def test_multiple_choice_items_stack_every_option():
    features = {"v": np.ones((6, 3), dtype=np.float32)}
    ds = MultipleChoiceItems([McItem("v", ("a b", "c"), 1)], features,
                             lambda texts: [[10 + len(t)] * len(t.split()) for t in texts],
                             TextLayout(2, 3, 0, 6, sep_after_cls=True), max_video_len=4)
    item = ds[0]
    assert item["caps"].shape == (2, 8) and item["vfeats"].shape == (4, 3) and item["vmask"].all()
    assert item["caps"][0, :6].tolist() == [2, 3, 13, 13, 3, 0] and item["answer"] == 1


def test_caption_layout_has_bos():
    ids, mask = caption_layout(TextLayout(2, 3, 0, 6, sep_after_cls=True), [7, 8])
    assert ids.tolist() == [2, 3, 2, 7, 8, 3, 0, 0] and mask.sum() == 6
    with pytest.raises(ConfigError, match="MMPT text layout"):
        caption_layout(TextLayout(2, 3, 0, 6), [7])


def test_caption_videos_group_references():
    pairs = [("v", 0.0, None, "a"), ("v", 0.0, None, "b"), ("w", 0.0, None, "c")]
    ds = CaptionVideos(pairs, {"v": np.zeros((3, 2)), "w": np.zeros((3, 2))}, max_video_len=4)
    assert ds.references == [["a", "b"], ["c"]] and len(ds) == 2


@pytest.fixture()
def coin_json(tmp_path):
    coin = {"database": {
        "a": {"subset": "training", "annotation": [{"id": "4", "segment": [1.0, 2.0], "label": "x"}]},
        "b": {"subset": "testing", "annotation": [{"id": "9", "segment": [0.0, 0.5], "label": "y"}]},
    }}
    path = tmp_path / "COIN.json"
    path.write_text(json.dumps(coin))
    return path


def test_coin_reader_and_row_labels(coin_json):
    path = coin_json
    videos, num_classes = read_coin(path, "training")
    assert [v.video_id for v in videos] == ["a"] and num_classes == 10  # 1 + max id over the file
    # 2 rows per second: centres 0.25, 0.75, 1.25, 1.75, 2.25 -> rows 2 and 3 are in [1, 2)
    assert row_labels(videos[0].segments, 5, 2.0).tolist() == [0, 0, 4, 4, 0]
    with pytest.raises(ConfigError, match="no videos in subset 'validation'"):
        read_coin(path, "validation")


def test_segmentation_windows_cover_every_row():
    feats = {"a": np.arange(10, dtype=np.float32)[:, None].repeat(2, 1)}
    ds = SegmentationWindows([VideoSegments("a", ((0.0, 5.0, 1),))], feats, rate=1.0, window=4, stride=3)
    assert [ds[i]["offset"] for i in range(len(ds))] == [0, 3, 6]  # the last window ends at row 10
    covered = torch.zeros(10, dtype=torch.bool)
    for i in range(len(ds)):
        item = ds[i]
        covered[item["offset"] : item["offset"] + 4] |= item["labels"] != -100
        assert torch.equal(item["vfeats"][:, 0], torch.arange(item["offset"], item["offset"] + 4).float())
    assert covered.all()
    short = SegmentationWindows([VideoSegments("a", ())], {"a": np.zeros((2, 2))}, window=4, stride=3)
    assert len(short) == 1 and short[0]["labels"].tolist() == [0, 0, -100, -100]


def test_whole_modality_masking_shares():
    torch.manual_seed(0)
    b, length, frames = 4000, 12, 6
    caps = torch.randint(10, 100, (b, length))
    caps[:, 0], caps[:, 1], caps[:, -1] = 2, 3, 3  # [CLS] [SEP] words [SEP]
    cmask, vmask = torch.ones(b, length, dtype=torch.bool), torch.ones(b, frames, dtype=torch.bool)
    vmask[:, -2:] = False
    masked, labels, video = whole_modality_masks(
        caps, cmask, vmask, special_ids=[0, 2, 3, 4], mask_token_id=4, vocab_size=100, mm_prob=0.5,
        mlm_probability=0.15, mfm_probability=0.15, generator=torch.Generator().manual_seed(1))
    words = labels != -100
    all_text = words[:, 2:-1].all(1)
    all_video = video[:, :4].all(1)
    assert not (video & ~vmask).any()  # padding frames are never masked
    assert not words[:, [0, 1, -1]].any()  # special tokens never chosen
    assert all_text.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (all_video & ~words.any(1)).float().mean().item() == pytest.approx(0.25, abs=0.03)
    standard = ~all_text & ~(all_video & ~words.any(1))
    assert words[standard][:, 2:-1].float().mean().item() == pytest.approx(0.15, abs=0.02)
    assert (masked[words] == 4).float().mean().item() == pytest.approx(0.8, abs=0.03)  # 80 % [MASK]


def write_store(root, features) -> str:
    with FeatureStoreWriter(root, dtype="float32") as w:
        for vid, feats in features.items():
            w.add(vid, feats)
    return str(root)


def test_multiple_choice_batches_count_texts(tmp_path):
    store = write_store(tmp_path / "feats", {v: np.zeros((4, 2), dtype=np.float32) for v in "vw"})
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"video_id": v, "options": ["a", "b", "c"], "answer": 0, "split": s}) + "\n"
                          for v, s in [("v", "train"), ("w", "train"), ("v", "test")]))
    splits = VLMQASplits(VLMQADataConfig(features=store, train_mc=str(mc), test_mc=str(mc), test_mc_format="jsonl",
                                         batch_size=7, eval_batch_size=2))
    assert splits.items_per_batch("train") == 2 and splits.items_per_batch("test") == 1  # 3 options each
    sampler = splits.train_batch_sampler(splits.dataset("train"))
    assert sampler.batch_size == 2 and sampler.drop_last
    assert splits.protocol("test") == "jsonl-test-mc" and not splits.has_split("val")


def test_caption_baseline_is_the_most_frequent_training_caption(tmp_path):
    pairs = tmp_path / "captions.jsonl"
    pairs.write_text("".join(json.dumps({"video_id": v, "caption": c, "split": "train"}) + "\n"
                             for v, c in [("v", "A dog"), ("w", "a cat"), ("v", "a dog ")]))
    data = VLMCaptionDataConfig(features=str(tmp_path), train_pairs=str(pairs))
    assert VLMCaptionSplits(data).most_frequent_caption() == "a dog"


def test_segmentation_splits_stride_by_split(coin_json, tmp_path):
    path = coin_json
    store = write_store(tmp_path / "feats", {v: np.zeros((8, 2), dtype=np.float32) for v in "ab"})
    splits = VLMSegmentationSplits(VLMSegmentationDataConfig(features=store, annotations=str(path), feature_rate=1.0,
                                                             window=4, train_stride=2, eval_stride=4))
    assert [o for _, o in splits.dataset("train").windows] == [0, 2, 4]
    assert [o for _, o in splits.dataset("test").windows] == [0, 4]
    assert splits.majority_label() == 0 and splits.protocol("test") == "coin-testing" and not splits.has_split("val")
    assert coin_label_names(str(path), 5) == ["background", "1", "2", "3", "x"]
    with pytest.raises(ConfigError, match=r"data\.annotations"):
        VLMSegmentationSplits(VLMSegmentationDataConfig(features=store))
