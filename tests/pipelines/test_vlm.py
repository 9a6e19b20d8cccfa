"""VLM inference: the golden MMPT weights through a model folder, batch independence, and each
task's export answering exactly as its run's evaluation did, from raw videos, folder copied away."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tests.golden import load_golden

import videolang
from videolang.data.text import build_wordpiece_tokenizer, load_tokenizer
from videolang.data.videoclip import read_eval_pairs
from videolang.data.vlm import read_coin, read_mc_items, row_labels
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.metrics import caption_metrics, retrieval_metrics
from videolang.models.bert import BertConfig
from videolang.models.convert.vlm import convert_mmpt_vlm_state_dict
from videolang.models.vlm import VLM, VLMConfig, isolated_mask
from videolang.pipelines import Features
from videolang.pipelines.convert import convert_checkpoint
from videolang.pipelines.features import run_extraction
from videolang.pipelines.folder import (
    SimilaritySpec,
    TextSpec,
    VideoFeaturesSpec,
    write_model_folder,
)
from videolang.pipelines.vlm import VLMSpec
from videolang.synth import synthesize_world

# ------------------------------------------------------------------ MMPT parity, features in --


def golden_model(golden) -> VLM:
    bert = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128)
    model = VLM(VLMConfig(max_video_len=8, bert=bert)).eval()
    convert_mmpt_vlm_state_dict(golden["state_dict"], model)
    return model


@pytest.fixture(scope="module")
def golden_folder(tmp_path_factory):
    """The golden MMPT VLM in a features-only retrieval folder with a 200-word vocabulary whose
    word i is spelled ``w<i>`` (BERT's special ids kept), so golden captions can be typed."""
    golden = load_golden("vlm_tiny_mtm")
    tmp = tmp_path_factory.mktemp("vlm_golden")
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    (tmp / "vocab.txt").write_text("".join(f"{special.get(i, f'w{i}')}\n" for i in range(200)))
    spec = VLMSpec(text=TextSpec(max_len=10, layout="mmpt"), video=VideoFeaturesSpec(max_len=8))
    folder = write_model_folder(tmp / "vlm", golden_model(golden), spec, tokenizer=load_tokenizer(tmp / "vocab.txt"))
    return folder, golden


def golden_sentences(golden) -> list[str]:
    """The golden captions' words (``[CLS] [SEP] words [SEP]``) as text."""
    names = {101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    return [" ".join(names.get(w, f"w{w}") for w in ids[mask][2:-1].tolist())
            for ids, mask in zip(golden["inputs"]["caps"], golden["inputs"]["cmasks"], strict=True)]


def isolated_pooled(model: VLM, golden) -> tuple[torch.Tensor, torch.Tensor]:
    """MMPT's retrieval outputs: the joint pass under the isolated mask over the padded golden
    inputs, mean of video tokens + video [SEP], and of words + final [SEP]."""
    i = golden["inputs"]
    caps, cmasks, vfeats, vmasks = i["caps"], i["cmasks"], i["vfeats"], i["vmasks"]
    tv = vfeats.shape[1]
    with torch.no_grad():
        joint = model(caps, cmasks, vfeats, vmasks, attention_mask=isolated_mask(cmasks, vmasks))
    keys = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1).float()
    vk, tk = keys[:, 1 : tv + 2, None], keys[:, tv + 2 :, None]
    return (joint[:, 1 : tv + 2] * vk).sum(1) / vk.sum(1), (joint[:, tv + 2 :] * tk).sum(1) / tk.sum(1)


def test_pipeline_gives_mmpts_isolated_embeddings_alone_batched_any_order(golden_folder):
    folder, golden = golden_folder
    pipe = videolang.load(folder)
    want_video, want_text = isolated_pooled(golden_model(golden), golden)
    lengths = golden["inputs"]["vmasks"].sum(1).tolist()  # 8 and 5 valid rows, padded to 8 in MMPT
    videos = [Features(golden["inputs"]["vfeats"][i, :n]) for i, n in enumerate(lengths)]
    alone = torch.cat([pipe.encode_video(v) for v in videos])
    torch.testing.assert_close(alone, want_video, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(videos[::-1]), want_video.flip(0), atol=1e-5, rtol=0)
    short = Features(golden["inputs"]["vfeats"][1, :2])  # a batch without a full-length video
    torch.testing.assert_close(pipe.encode_video([videos[1], short])[0], want_video[1], atol=1e-5, rtol=0)
    sentences = golden_sentences(golden)
    torch.testing.assert_close(pipe.encode_text(sentences), want_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([pipe.encode_text(s) for s in sentences[::-1]]), want_text.flip(0),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.score(videos, sentences), want_video @ want_text.t(), atol=1e-4, rtol=0)


def test_answer_scores_options_like_the_isolated_halves(golden_folder):
    folder, golden = golden_folder
    pipe = videolang.load(folder)  # a retrieval folder answers with its similarity
    want_video, want_text = isolated_pooled(golden_model(golden), golden)
    videos = [Features(golden["inputs"]["vfeats"][0]), Features(golden["inputs"]["vfeats"][1, :5])]
    options = golden_sentences(golden)
    got = pipe.answer(videos, [options, options[::-1]])
    torch.testing.assert_close(got[0].scores, want_video[0] @ want_text.t(), atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1].scores, (want_video[1] @ want_text.t()).flip(0), atol=1e-4, rtol=0)
    assert got[0].answer == options[got[0].index]
    with pytest.raises(ConfigError, match="task 'retrieval'"):
        pipe.caption(videos)
    with pytest.raises(ValueError, match="2 videos but 1"):
        pipe.answer(videos, [options])


def test_answer_windows_long_videos(golden_folder):
    folder, golden = golden_folder
    pipe = videolang.load(folder)
    feats = golden["inputs"]["vfeats"]
    rows = torch.cat([feats[0], feats[1, :5]])  # 13 rows: windows [0, 8) and [5, 13)
    options = golden_sentences(golden)
    first = pipe.answer(Features(rows[:8]), [options])[0].scores
    last = pipe.answer(Features(rows[5:]), [options])[0].scores
    torch.testing.assert_close(pipe.answer(Features(rows), [options])[0].scores, first, atol=1e-6, rtol=0)
    torch.testing.assert_close(pipe.answer(Features(rows), [options], pooling="mean")[0].scores, (first + last) / 2,
                               atol=1e-6, rtol=0)


def test_joint_scoring_folder_answers_with_the_match_head(golden_folder, tmp_path):
    folder, golden = golden_folder
    base_model = golden_model(golden)
    model = VLM(VLMConfig(max_video_len=8, bert=base_model.config.bert, num_classes=1)).eval()
    torch.manual_seed(0)
    state = {**model.state_dict(), **base_model.state_dict()}  # the golden encoder, a random head
    model.load_state_dict(state)
    spec = VLMSpec(task="mcqa", text=TextSpec(max_len=10, layout="mmpt"), video=VideoFeaturesSpec(max_len=8),
                   multiple_choice={"scoring": "joint"})
    joint = write_model_folder(tmp_path / "joint", model, spec, tokenizer=videolang.load(folder).tokenizer)
    pipe = videolang.load(joint)
    i = golden["inputs"]
    options = golden_sentences(golden)
    got = pipe.answer(Features(i["vfeats"][1, :5]), [options])[0]
    with torch.no_grad():
        want = model.match_scores(i["caps"], i["cmasks"], i["vfeats"][1:].expand(2, -1, -1),
                                  i["vmasks"][1:].expand(2, -1))
    torch.testing.assert_close(got.scores, want, atol=1e-5, rtol=0)
    assert not pipe.supports("encode_video")
    with pytest.raises(ConfigError, match="joint scoring"):
        pipe.score(Features(i["vfeats"][1, :5]), options)


def test_convert_writes_a_folder_videolang_load_opens(tmp_path):
    golden = load_golden("vlm_tiny_mtm")
    ckpt = tmp_path / "checkpoint_best.pt"
    torch.save({"model": {f"mmmodel.mm_encoder.{k}": v for k, v in golden["state_dict"].items()}}, ckpt)
    out = convert_checkpoint("vlm", ckpt, tmp_path / "out", model_name="vlm-tiny",
                             overrides=["bert.vocab_size=200", "max_video_len=8"])
    pipe = videolang.load(out)
    spec = json.loads((out / "pipeline.json").read_text())
    assert spec["family"] == "vlm" and spec["task"] == "retrieval"
    assert spec["text"] == {"layout": "mmpt", "max_len": 62, "tokenizer": "tokenizer"}  # 61 words, 64 tokens
    assert spec["video"]["max_len"] == 8 and spec["similarity"]["metric"] == "dot"
    assert (out / "tokenizer").is_dir() and spec["provenance"]["converted_from"]["file"] == ckpt.name
    i = golden["inputs"]
    with torch.no_grad():
        video, text, _ = pipe.model.mtm_logits(i["caps"], i["cmasks"], i["vfeats"], i["vmasks"],
                                               i["video_label"], i["text_label"])
    torch.testing.assert_close(video, golden["video_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text, golden["text_logits"], atol=1e-5, rtol=0)
    want_video, _ = isolated_pooled(golden_model(golden), golden)
    torch.testing.assert_close(pipe.encode_video(Features(i["vfeats"][1, :5])), want_video[1:], atol=1e-5, rtol=0)


def test_spec_requires_its_tasks_section():
    video = VideoFeaturesSpec(max_len=4)
    with pytest.raises(ValueError, match="multiple_choice"):
        VLMSpec(task="mcqa", text=TextSpec(max_len=8, layout="mmpt"), video=video)
    with pytest.raises(ValueError, match="mmpt"):
        VLMSpec(text=TextSpec(max_len=8), video=video)
    with pytest.raises(ValueError, match="text"):
        VLMSpec(video=video, similarity=SimilaritySpec())


# ------------------------------------------------------------- tiny runs, their exports, their tests --


class EvalOutputs(Callback):
    """What the test loop saw and computed, batch by batch: the recipe's eval store, the
    multiple-choice scores of every item and the valid feature rows of every item."""

    def __init__(self):
        self.store, self.mc, self.rows = None, {}, {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.store = pl_module._eval.get("test", self.store)
        if "index" in batch:
            for i, feats, mask in zip(batch["index"].tolist(), batch["vfeats"], batch["vmask"], strict=True):
                self.rows[i] = feats[mask].cpu()
        if hasattr(pl_module, "item_scores"):
            with torch.no_grad():
                scores = pl_module.item_scores(batch)[0].float().cpu()
            self.mc.update(zip(batch["index"].tolist(), scores, strict=True))


def base(root, recipe: str, **data) -> dict:
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0,
        "model": {"name": "vlm-tiny"},
        "data": {"features": str(root / "features"), "tokenizer": str(root / "tok"), "max_video_len": 4,
                 "max_text_len": 32, **data},
        "optim": {"lr": 1e-3, "warmup_ratio": 0.1},
        "trainer": {"max_epochs": 2, "enable_progress_bar": False, "num_sanity_val_steps": 0, "monitor": None},
        "run": {"root": str(root / "runs")},
    }


def fit_and_test(cfg: dict, out) -> tuple:
    """Fit, test the export as a fresh run would (model.init), and copy the export to ``out``."""
    export = fit(cfg).run_dir / "export"
    outputs = EvalOutputs()
    logged = test(cfg, [f"model.init={export}"], callbacks=[outputs]).metrics["test"]
    return shutil.copytree(export, out), logged, outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Retrieval, multiple-choice (hybrid, order-aware), captioning and segmentation runs on a
    tiny world (3 s videos at 2 feature rows per second, windows of 4 rows: every video is longer
    than a window). The exports are copied away; the features, tokenizer and runs are deleted."""
    root = tmp_path_factory.mktemp("vlmrun")
    w = root / "world"
    synthesize_world(w, 40, seed=5, size=32, duration=3.0, progress=False)
    run_extraction(str(w / "videos"), "pooled-pixels", str(root / "features"), dtype="float16", progress=False,
                   backbone_options={"grid": 2, "rows_per_second": 2})
    captions = [json.loads(line)["caption"] for line in (w / "annotations/captions.jsonl").read_text().splitlines()]
    build_wordpiece_tokenizer(captions, root / "tok", vocab_size=300)
    pairs = {"train_pairs": str(w / "annotations/captions.jsonl"), "train_format": "jsonl", "batch_size": 8}
    msrvtt = w / "formats/msrvtt"
    out = {}

    cfg = base(root, "vlm.retrieval", test_pairs=str(msrvtt / "MSRVTT_JSFUSION_test.csv"), **pairs)
    cfg["model"].update(normalize=True, temperature=0.1, standardize_features=True)
    out["retrieval"] = fit_and_test(cfg, root / "exports/retrieval")

    cfg = base(root, "vlm.mcqa", train_mc=str(w / "annotations/mc.jsonl"), batch_size=20,
               test_mc=str(msrvtt / "MSR_MC_test.csv"), test_mc_format="msrvtt")
    cfg["model"].update(scoring="hybrid", normalize=True, temperature=0.1, temporal_segments=2)
    cfg["trainer"]["max_epochs"] = 1
    out["mcqa"] = fit_and_test(cfg, root / "exports/mcqa")

    cfg = base(root, "vlm.captioning", test_pairs=str(msrvtt / "MSRVTT_data.json"), **pairs)
    cfg["model"].update(num_beams=2, max_decode_length=5)
    cfg["optim"]["lr"] = 5e-3
    out["captioning"] = fit_and_test(cfg, root / "exports/captioning")

    cfg = base(root, "vlm.segmentation", annotations=str(w / "formats/coin/COIN.json"), window=4,
               train_stride=2, eval_stride=2, batch_size=16)
    for key in ("tokenizer", "max_video_len", "max_text_len"):
        del cfg["data"][key]
    cfg["trainer"]["max_epochs"] = 1
    out["segmentation"] = fit_and_test(cfg, root / "exports/segmentation")

    for gone in ("features", "tok", "runs"):  # the folders stand alone
        shutil.rmtree(root / gone)
    return w, out


def video_path(world, vid: str) -> str:
    return str(world / "videos" / f"{vid}.mp4")


def test_retrieval_export_reproduces_the_runs_test_metrics(runs):
    world, out = runs
    folder, logged, _ = out["retrieval"]
    pipe = videolang.load(folder)
    assert pipe.spec.task == "retrieval" and pipe.spec.video.max_len == 4 and pipe.spec.similarity.metric == "cosine"
    with open(world / "formats/msrvtt/MSRVTT_JSFUSION_test.csv", newline="", encoding="utf-8") as f:
        pairs = [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]
    # the evaluation embedded each video's first window of 4 rows
    sim = pipe.score([video_path(world, v) for v, _ in pairs], [t for _, t in pairs], pooling="first")
    metrics = retrieval_metrics(sim.t())
    for name, value in metrics.items():
        assert value == pytest.approx(logged[f"test/msrvtt-test/{name}"], abs=1e-4), name
    assert sim.unique().numel() == sim.numel() and len(pairs) >= 5  # no ties: equal rankings
    feats = Features(torch.randn(3, pipe.model.config.feature_dim))
    torch.testing.assert_close(pipe.logits(feats, ["a red circle"]), pipe.score(feats, ["a red circle"]) / 0.1)
    with pytest.raises(ConfigError, match="offers encode_video"):
        pipe.segment(video_path(world, pairs[0][0]))


def test_retrieval_export_is_batch_independent(runs):
    world, out = runs
    pipe = videolang.load(out["retrieval"][0])
    paths = sorted((world / "videos").glob("*.mp4"))[:4]
    rows = [pipe.video_features(str(p)) for p in paths]
    videos = [Features(rows[0]), Features(rows[1][:3]), Features(rows[2][:1]), str(paths[3])]  # mixed lengths
    alone = torch.cat([pipe.encode_video(v) for v in videos])
    torch.testing.assert_close(pipe.encode_video(videos), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(videos[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    texts = ["a red circle moves left", "the green triangle sinks, then it grows larger and spins", "x"]
    one_by_one = torch.cat([pipe.encode_text(t) for t in texts])
    torch.testing.assert_close(pipe.encode_text(texts), one_by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_text(texts[::-1]), one_by_one.flip(0), atol=1e-5, rtol=0)
    windows = pipe.encode_windows(Features(rows[0]), stride=1.0)
    assert windows.starts == [0.0, 1.0] and windows.ends == [2.0, 3.0]
    torch.testing.assert_close(windows.embeddings[:1], pipe.encode_video(Features(rows[0][:4])), atol=1e-5, rtol=0)


def test_mcqa_export_answers_as_the_evaluation_scored(runs):
    world, out = runs
    folder, logged, outputs = out["mcqa"]
    pipe = videolang.load(folder)
    assert pipe.scoring == "hybrid" and pipe.spec.temporal_segments == 2
    items = read_mc_items(world / "formats/msrvtt/MSR_MC_test.csv", "msrvtt")
    videos = [video_path(world, it.video_id) for it in items]
    answers = pipe.answer(videos, [list(it.options) for it in items])
    for k, (item, got) in enumerate(zip(items, answers, strict=True)):
        torch.testing.assert_close(got.scores, outputs.mc[k], atol=1e-4, rtol=0)
        assert got.index == int(got.scores.argmax()) and got.answer == item.options[got.index]
        top2 = got.scores.topk(2).values
        assert top2[0] - top2[1] > 1e-3  # decided by the scores, not by a tie
    accuracy = 100.0 * sum(a.index == it.answer for a, it in zip(answers, items, strict=True)) / len(items)
    assert accuracy == pytest.approx(logged["test/msrvtt-test-mc/accuracy"], abs=1e-4)
    # the head learned: hybrid scores are not the isolated similarity alone
    head = pipe.model.classifier[-1].weight
    assert head.abs().sum() > 0 and len(items) >= 5
    # alone, in a batch, in any order
    alone = [pipe.answer(v, [list(it.options)])[0].scores for v, it in zip(videos[:3], items[:3], strict=True)]
    rev = pipe.answer(videos[:3][::-1], [list(it.options) for it in items[:3]][::-1])
    for a, b in zip(alone, rev[::-1], strict=True):
        torch.testing.assert_close(a, b.scores, atol=1e-5, rtol=0)


def test_captioning_export_decodes_as_the_evaluation(runs):
    world, out = runs
    folder, logged, outputs = out["captioning"]
    pipe = videolang.load(folder)
    assert pipe.spec.captioning.num_beams == 2 and pipe.spec.captioning.max_length == 5
    refs: dict[str, list[str]] = defaultdict(list)
    for vid, _, _, text in read_eval_pairs(str(world / "formats/msrvtt/MSRVTT_data.json"), "msrvtt", "test",
                                       all_captions=True):
        refs[vid].append(text)
    vids = list(refs)
    videos = [video_path(world, v) for v in vids]
    beam, greedy = pipe.caption(videos), pipe.caption(videos, num_beams=1)
    seen = outputs.store.local()  # the recipe's evaluation buffer: index, beam, greedy
    evaluated = dict(zip(seen["index"].tolist(), zip(seen["beam"], seen["greedy"], strict=True), strict=True))
    assert beam == [evaluated[i][0] for i in range(len(vids))]
    assert greedy == [evaluated[i][1] for i in range(len(vids))]
    for kind, got in (("beam", beam), ("greedy", greedy)):
        metrics = caption_metrics(got, [refs[v] for v in vids])
        for name in ("BLEU-4", "ROUGE-L"):
            assert metrics[name] == pytest.approx(logged[f"test/msrvtt-test/{kind}/{name}"], abs=1e-4)
    assert all(beam) and beam != greedy  # the recorded beam search, not greedy decoding
    # the captions came from the same rows the evaluation decoded: the first window of 4
    for i, video in enumerate(videos):
        torch.testing.assert_close(pipe.video_features(video)[:4], outputs.rows[i], atol=1e-6, rtol=0)
    # alone, batched, in any order
    assert [pipe.caption(v)[0] for v in videos[:4]] == pipe.caption(videos[:4][::-1])[::-1] == beam[:4]


def test_segmentation_export_labels_rows_as_the_evaluation(runs):
    world, out = runs
    folder, logged, outputs = out["segmentation"]
    pipe = videolang.load(folder)
    seg = pipe.spec.segmentation
    assert seg.stride == 2 and pipe.spec.video.max_len == 4 and seg.labels[0] == "background"
    videos, _ = read_coin(world / "formats/coin/COIN.json", "testing")
    rate = pipe.spec.video.feature_rate
    correct, total = 0, 0
    seen = outputs.store.local()  # the recipe's evaluation buffer of window logits
    video_idx, offset, logits = seen["video"], seen["offset"], seen["logits"]
    for v_i, video in enumerate(videos):
        result = pipe.segment(video_path(world, video.video_id))
        labels = torch.from_numpy(row_labels(video.segments, len(result.ids), rate))
        correct += int((result.ids == labels).sum())
        total += len(labels)
        top2 = result.logits.topk(2, dim=-1).values
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-4  # every row's label decided, no tie
        # the evaluation's window logits, averaged per row, equal the pipeline's
        want = torch.zeros_like(result.logits)
        count = torch.zeros(len(want), 1)
        for o, lg in zip(offset[video_idx == v_i].tolist(), logits[video_idx == v_i], strict=True):
            n = min(len(want) - o, len(lg))
            want[o : o + n] += lg[:n]
            count[o : o + n] += 1
        torch.testing.assert_close(result.logits, want / count, atol=1e-4, rtol=0)
        assert result.labels == [seg.labels[i] for i in result.ids.tolist()] and result.ends[-1] == len(labels) / rate
    assert 100.0 * correct / total == pytest.approx(logged["test/coin-testing/frame_accuracy"], abs=1e-4)
    spans = result.segments()
    assert spans[0][0] == 0.0 and spans[-1][1] == result.ends[-1]
