"""VidLanKD inference: converted originals reproduce the golden outputs (the teacher by default),
GLUE classifiers answer as ``videolang glue`` evaluated them (folder copied away, tokenizer and
runs deleted), the student's and teacher's embeddings, batch independence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.golden import load_golden

import videolang
from videolang.data.glue import glue_token_ids, read_glue
from videolang.data.text import build_wordpiece_tokenizer, load_tokenizer
from videolang.engine import fit
from videolang.errors import ConfigError
from videolang.losses.distill import paired_hinge_loss
from videolang.metrics import retrieval_metrics
from videolang.metrics.glue import glue_metrics
from videolang.pipelines import Features
from videolang.pipelines.base import tokenize_sentences
from videolang.pipelines.convert import convert_checkpoint
from videolang.synth import synthesize_world

GOLDEN_SIZES = ["bert.vocab_size=100", "bert.hidden_size=32", "bert.num_hidden_layers=2",
                "bert.num_attention_heads=2", "bert.intermediate_size=64"]
SMALL = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
         "bert.intermediate_size": 64, "bert.vocab_size": 400}
QUIET = {"enable_progress_bar": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1}


# ------------------------------------------------------------ converted originals (golden) --


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The golden original teacher and student through ``videolang convert`` with the
    registered base configs at the golden sizes (``double_video_embeddings`` left at its
    default, as a user would)."""
    from videolang.cli.main import main

    golden = load_golden("vidlankd_tiny")
    tmp = tmp_path_factory.mktemp("vkconv")
    torch.save({"teacher": golden["teacher"], "visn": golden["visn"]}, tmp / "teacher.pt")
    torch.save(golden["student"], tmp / "student.pt")
    assert main(["convert", "vidlankd", str(tmp / "teacher.pt"), str(tmp / "teacher"), "--model",
                 "vidlankd-teacher-base", "--set", *GOLDEN_SIZES]) == 0
    convert_checkpoint("vidlankd", tmp / "student.pt", tmp / "student", overrides=GOLDEN_SIZES)
    return golden, tmp


def _golden_videos(golden) -> list[Features]:
    feats = golden["inputs"]["vfeat"]
    vmask = feats[..., -1] != 0  # the original's frame mask
    lengths = vmask.sum(1).tolist()
    assert torch.equal(vmask, torch.arange(feats.shape[1])[None] < torch.tensor(lengths)[:, None])
    return [Features(feats[b, :n]) for b, n in enumerate(lengths)]


def test_converted_teacher_reproduces_the_original_by_default(converted):
    golden, tmp = converted
    pipe = videolang.load(tmp / "teacher")
    assert pipe.spec.task == "teacher" and pipe.model.config.double_video_embeddings
    assert json.loads((tmp / "teacher" / "config.json").read_text())["double_video_embeddings"] is True
    i, want = golden["inputs"], golden["outputs"]
    videos = _golden_videos(golden)
    video = pipe.encode_video(videos)  # 10, 7, 10, 10 rows: a batch of mixed lengths
    with torch.no_grad():
        out = pipe.model(i["ids"], i["att"], mlm_labels=i["mlm_labels"])
    # the hinge of the original (1.0046769); single video embeddings give 1.0046890
    hinge = paired_hinge_loss(out["token_emb"], video, i["att"], 1.0)
    assert hinge.item() == pytest.approx(want["teacher.hinge"], rel=2e-7, abs=0)
    assert F.cross_entropy(out["mlm_logits"], out["mlm_targets"]).item() == pytest.approx(want["teacher.mlm"], rel=1e-6)
    alone = torch.cat([pipe.encode_video(v) for v in videos[::-1]]).flip(0)
    torch.testing.assert_close(alone, video, atol=1e-6, rtol=0)


def test_converted_student_reproduces_the_original(converted):
    from videolang.recipes.vidlankd import StudentModelConfig, student_kd_terms

    golden, tmp = converted
    student, teacher = videolang.load(tmp / "student"), videolang.load(tmp / "teacher")
    spec = json.loads((tmp / "student" / "pipeline.json").read_text())
    assert spec["task"] == "text-encoder" and spec["text"]["max_len"] == 126  # [CLS] 126 pieces [SEP]
    assert spec["provenance"]["converted_from"]["file"] == "student.pt"
    assert len(student.tokenizer) == 30522  # the release's bert-base-uncased vocabulary, in the folder
    i, want = golden["inputs"], golden["outputs"]
    with torch.no_grad():
        out = student.model(i["ids"], i["att"], mlm_labels=i["mlm_labels"])
        terms = student_kd_terms(out, teacher.model.text_hidden(i["ids"], i["att"]), i["att"].bool(),
                                 StudentModelConfig(kd=["nst", "contrastive"], original_normalization=True))
    assert terms["nst"].item() == pytest.approx(want["student.kd1_nst"], rel=1e-5)
    assert terms["contrastive"].item() == pytest.approx(want["student.kd2_ntxent"], rel=1e-5)
    assert F.cross_entropy(out["mlm_logits"], out["mlm_targets"]).item() == pytest.approx(want["student.mlm"], rel=1e-6)
    with pytest.raises(ConfigError, match="no classification head"):
        student.classify(["a sentence"])


# ------------------------------------------------------ tiny runs: teacher, student, GLUE --


def learnable_glue(world_glue: Path, out: Path) -> Path:
    """The world's SST-2 and RTE sentences with labels a tiny BERT learns in a few epochs (SST-2:
    the sentence starts with "a"; RTE: the second sentence says "before"), dev = dev + test rows
    with every 8th label flipped, so that accuracy is neither chance nor 100."""
    for task, header in (("SST-2", "sentence\tlabel"), ("RTE", "index\tsentence1\tsentence2\tlabel")):
        (out / task).mkdir(parents=True)
        for split, sources in (("train", ["train"]), ("dev", ["dev", "test"])):
            lines = [header]
            for i, e in enumerate(e for s in sources for e in read_glue(world_glue / task, task, s).examples):
                flip = split == "dev" and i % 8 == 0
                if task == "SST-2":
                    lines.append(f"{e.text_a}\t{int(e.text_a.startswith('a ') != flip)}")
                else:
                    label = "entailment" if ("before" in e.text_b.split()) != flip else "not_entailment"
                    lines.append(f"{i}\t{e.text_a}\t{e.text_b}\t{label}")
            (out / task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Teacher (fp16 pooled-pixels store) -> distilled student -> ``videolang glue`` on SST-2
    and RTE with exports; the exports are copied away, then the tokenizer, the store and the
    runs are deleted."""
    from videolang.cli.glue import run_glue
    from videolang.data.vidlankd import (
        TeacherDataConfig,
        TeacherSplits,
        caption_window,
        read_caption_tracks,
    )
    from videolang.pipelines.features import run_extraction

    root = tmp_path_factory.mktemp("vkpipe")
    synthesize_world(root / "world", 24, seed=5, size=32, duration=3.0, progress=False)
    run_extraction(str(root / "world" / "videos"), "pooled-pixels", str(root / "features"), dtype="float16",
                   progress=False, backbone_options={"grid": 2, "rows_per_second": 2})
    text = (root / "world" / "text" / "corpus.txt").read_text().splitlines()
    build_wordpiece_tokenizer([*text, " . "], root / "tok", vocab_size=400)
    h = root / "world" / "formats" / "howto100m"
    data = {"features": str(root / "features"), "captions": str(h / "raw_caption.json"),
            "train_list": str(h / "train.lst"), "val_list": str(h / "val.lst"), "tokenizer": str(root / "tok"),
            "block_size": 24, "max_video_len": 4, "batch_size": 8}
    teacher = fit({"recipe": "vidlankd.teacher", "name": "teacher", "seed": 0,
                   "model": {"name": "vidlankd-teacher-tiny", "overrides": SMALL}, "data": data,
                   "optim": {"lr": 1e-3}, "trainer": {**QUIET, "max_epochs": 2},
                   "run": {"root": str(root / "runs"), "plots": False}})
    # what the teacher's validation read: caption windows (text) and their feature rows
    val = TeacherSplits(TeacherDataConfig(**data), seed=0).dataset("val")
    captions = read_caption_tracks(data["captions"])
    val_items = [(caption_window(captions[v]["text"], 0, 24)[0], val[k]["ids"], val[k]["vfeats"])
                 for k, v in enumerate(val.ids)]
    student = fit({"recipe": "vidlankd.student", "name": "student", "seed": 0,
                   "model": {"name": "vidlankd-student-tiny", "overrides": SMALL,
                             "teacher": str(teacher.run_dir / "export"), "kd": ["nst"]},
                   "data": {"train_files": [str(root / "world" / "text" / "corpus.txt")], "format": "plain",
                            "tokenizer": str(root / "tok"), "block_size": 30, "batch_size": 16},
                   "optim": {"lr": 1e-3}, "trainer": {**QUIET, "max_epochs": 1, "limit_train_batches": 6},
                   "run": {"root": str(root / "runs"), "plots": False}})
    tasks = learnable_glue(root / "world" / "formats" / "glue", root / "glue")
    glue = run_glue(str(student.run_dir / "export"), tasks, ["SST-2", "RTE"], [0], lr=3e-3, epochs=3, batch_size=8,
                    max_seq_length=32, runs=root / "runs", export=True)
    models = root / "models"
    shutil.copytree(teacher.run_dir / "export", models / "teacher")
    shutil.copytree(student.run_dir / "export", models / "student")
    for task, entry in glue.items():
        shutil.copytree(f"{entry['runs'][0]}/export", models / task)
    for gone in ("tok", "features", "runs"):
        shutil.rmtree(root / gone)
    return {"root": root, "models": models, "glue": glue, "teacher_val": teacher.metrics["final"],
            "val_items": val_items}


@pytest.mark.parametrize("task", ["SST-2", "RTE"])
def test_classify_reproduces_the_glue_runs_dev_metric(runs, task):
    pipe = videolang.load(runs["models"] / task)
    dev = read_glue(runs["root"] / "glue" / task, task, "dev")
    assert pipe.spec.glue.task == task and pipe.labels == list(dev.task.labels)
    texts = [e.text_a for e in dev.examples]
    pairs = [e.text_b for e in dev.examples] if pipe.spec.glue.pair else None
    preds = pipe.classify(texts, pairs, top_k=2)
    ids = [pipe.labels.index(p[0].label) for p in preds]
    got = glue_metrics(task, ids, [e.label for e in dev.examples])
    logged = runs["glue"][task]["metrics"]
    for name, value in got.items():
        assert value == pytest.approx(logged[name][0], abs=1e-6), name
    # non-degenerate: both classes are predicted, no probability ties decide a prediction
    assert 50 < got["accuracy"] < 100 and len(set(ids)) == 2 and all(p[0].score > p[1].score for p in preds)
    assert (task == "RTE") == pipe.spec.glue.pair


def test_classify_does_not_depend_on_the_batch(runs):
    pipe = videolang.load(runs["models"] / "RTE")
    dev = read_glue(runs["root"] / "glue/RTE", "RTE", "dev").examples[:6]
    a, b = [e.text_a for e in dev], [e.text_b for e in dev]
    a[0] = " ".join([a[0]] * 8)  # longer than max_length: truncated, the longest in the batch
    alone = torch.cat([pipe.logits(x, y) for x, y in zip(a, b, strict=True)])
    torch.testing.assert_close(pipe.logits(a, b), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.logits(a[::-1], b[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sentence pairs"):
        pipe.classify(a)
    emb = pipe.encode_text(a)
    torch.testing.assert_close(torch.cat([pipe.encode_text(t) for t in a]), emb, atol=1e-5, rtol=0)


def test_glue_tokenization_is_the_recipes(runs):
    from videolang.data.glue import GlueData, GlueExample, get_task
    from videolang.data.vidlankd import GlueFeatures, collate_glue

    pipe = videolang.load(runs["models"] / "RTE")
    dev = read_glue(runs["root"] / "glue/RTE", "RTE", "dev")
    examples = [*dev.examples, GlueExample(" ".join([dev.examples[0].text_a] * 9), "short", 0)]
    want = GlueFeatures(GlueData(get_task("RTE"), "dev", dev.path, examples), pipe.tokenizer, 32)
    a, b = [e.text_a for e in examples], [e.text_b for e in examples]
    ids, types = glue_token_ids(pipe.tokenizer, a, b, 32)
    assert ids == want.ids and types == want.types and len(ids[-1]) == 32 and set(types[0]) == {0, 1}
    # the recipe's evaluation batch (one padded batch of everything) gives the pipeline's logits
    batch = collate_glue([want[i] for i in range(len(want))], pipe.tokenizer.pad_token_id)
    with torch.no_grad():
        evaluated = pipe.model(batch["ids"], batch["mask"], batch["types"])
    torch.testing.assert_close(pipe.logits(a, b, batch_size=7), evaluated, atol=1e-5, rtol=0)


def test_student_encode_text(runs):
    pipe = videolang.load(runs["models"] / "student")
    assert pipe.spec.task == "text-encoder" and pipe.spec.text.max_len == 30
    texts = ["a red circle moves left", "the square grows " * 20, "x"]  # the second is truncated
    emb = pipe.encode_text(texts)
    torch.testing.assert_close(torch.cat([pipe.encode_text(t) for t in texts[::-1]]).flip(0), emb, atol=1e-5, rtol=0)
    # the masked mean of the last hidden states over [CLS] pieces [SEP]
    ids, mask = tokenize_sentences(pipe.tokenizer, pipe.spec.text, texts)
    assert ids[1, 31].item() == pipe.tokenizer.sep_token_id and bool(mask[1].all())
    with torch.no_grad():
        hidden = pipe.model(ids, mask)["hidden"]
    torch.testing.assert_close(emb[2], hidden[2, : int(mask[2].sum())].mean(0), atol=1e-5, rtol=0)
    assert emb.std(0).mean() > 1e-3  # distinct sentences, distinct embeddings


def test_teacher_reproduces_its_validation_retrieval(runs):
    pipe = videolang.load(runs["models"] / "teacher")
    assert pipe.spec.video.backbone.dtype == "float16" and pipe.spec.video.feature_rate == 2
    texts = [t for t, _, _ in runs["val_items"]]
    ids, _ = tokenize_sentences(pipe.tokenizer, pipe.spec.text, texts)
    for row, (_, want, _) in zip(ids, runs["val_items"], strict=True):
        assert row[: len(want)].tolist() == want.tolist()  # the dataset's tokenisation of the window
    video = pipe.encode_video([Features(v) for _, _, v in runs["val_items"]])
    sim = pipe.encode_text(texts) @ video.t()
    got = retrieval_metrics(sim)
    for name, value in got.items():
        assert value == pytest.approx(runs["teacher_val"][f"val/{name}"], abs=1e-4), name
    assert sim.unique().numel() == sim.numel() and len(texts) >= 3


def test_teacher_raw_video_and_long_videos(runs):
    pipe = videolang.load(runs["models"] / "teacher")
    paths = sorted((runs["root"] / "world" / "videos").glob("*.mp4"))[:3]
    rows = pipe.video_features(str(paths[0]))
    assert len(rows) == 6 and bool((rows == rows.half().float()).all())  # 3 s at 2 rows/s, fp16 values
    # longer than max_video_len (4 rows): evenly subsampled, as the teacher's windows were
    pick = torch.tensor([0, 2, 3, 5])  # np.linspace(0, 5, 4).round()
    torch.testing.assert_close(pipe.encode_video(str(paths[0])), pipe.encode_video(Features(rows[pick])),
                               atol=1e-6, rtol=0)
    videos = [str(p) for p in paths]
    alone = torch.cat([pipe.encode_video(v) for v in videos])
    torch.testing.assert_close(pipe.encode_video(videos[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    assert pipe.score(videos, ["a red circle", "a blue square"]).shape == (3, 2)
    torch.testing.assert_close(alone.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)


def test_glue_from_a_model_folder_uses_its_tokenizer(runs, tmp_path):
    from videolang.recipes.vidlankd_glue import load_glue_encoder, load_glue_encoder_tokenizer

    folder = runs["models"] / "student"
    _, name = load_glue_encoder(str(folder))
    assert name == load_glue_encoder_tokenizer(str(folder)) == str(folder / "tokenizer")
    assert len(load_tokenizer(name)) <= 400
