"""VidLanKD models: the golden port of the original teacher / video tower / student, converter
strictness, the video tower, the classifier. (Forward/backward/save/load of every registered
config is the generic tests/models/test_registry.py, via TEST_OVERRIDES and example_inputs.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.golden import load_golden

from videolang.errors import ConfigError
from videolang.models import create_model
from videolang.models.bert import BertConfig
from videolang.models.convert.vidlankd import convert_student_state_dict, convert_teacher_state_dict
from videolang.models.vidlankd import (
    TEST_OVERRIDES,
    VidLanKDClassifier,
    VidLanKDClassifierConfig,
    VidLanKDStudent,
    VidLanKDStudentConfig,
    VidLanKDTeacher,
    VidLanKDTeacherConfig,
)


@pytest.fixture(scope="module")
def golden():
    return load_golden("vidlankd_tiny")


def _bert(cfg: dict) -> BertConfig:
    return BertConfig.from_dict(cfg, source="golden cfg")


@pytest.fixture(scope="module")
def ported(golden):
    bert = _bert(golden["cfg"])
    teacher = VidLanKDTeacher(VidLanKDTeacherConfig(bert=bert, double_video_embeddings=True)).eval()
    convert_teacher_state_dict(golden["teacher"], golden["visn"], teacher, source="golden")
    student = VidLanKDStudent(VidLanKDStudentConfig(bert=bert)).eval()
    convert_student_state_dict(golden["student"], student, source="golden")
    return teacher, student


def test_golden_teacher_losses(golden, ported):
    from videolang.losses.distill import paired_hinge_loss

    teacher, _ = ported
    i, want = golden["inputs"], golden["outputs"]
    vmask = i["vfeat"][..., -1] != 0  # the original's frame mask
    with torch.no_grad():
        out = teacher(i["ids"], i["att"], i["vfeat"], vmask, mlm_labels=i["mlm_labels"])
    torch.testing.assert_close(out["video_emb"].norm(dim=-1), torch.ones(4), rtol=0, atol=1e-6)
    hinge = paired_hinge_loss(out["token_emb"], out["video_emb"], i["att"], 1.0)
    mlm = F.cross_entropy(out["mlm_logits"], out["mlm_targets"])
    assert hinge.item() == pytest.approx(want["teacher.hinge"], rel=1e-5)
    assert mlm.item() == pytest.approx(want["teacher.mlm"], rel=1e-5)
    # single embedding of the video tokens (our default) changes the video side
    teacher.video.double_embeddings = False
    with torch.no_grad():
        other = teacher.video(i["vfeat"], vmask)
    teacher.video.double_embeddings = True
    assert not torch.allclose(other, out["video_emb"], atol=1e-3)


def test_golden_student_losses(golden, ported):
    from videolang.recipes.vidlankd import StudentModelConfig, student_kd_terms

    teacher, student = ported
    i, want = golden["inputs"], golden["outputs"]
    m = StudentModelConfig(kd=["nst", "contrastive"], original_normalization=True)
    with torch.no_grad():
        t_hidden = teacher.text_hidden(i["ids"], i["att"])
        out = student(i["ids"], i["att"], mlm_labels=i["mlm_labels"])
        terms = student_kd_terms(out, t_hidden, i["att"].bool(), m)
    mlm = F.cross_entropy(out["mlm_logits"], out["mlm_targets"])
    assert terms["nst"].item() == pytest.approx(want["student.kd1_nst"], rel=1e-5)
    assert terms["contrastive"].item() == pytest.approx(want["student.kd2_ntxent"], rel=1e-5)
    assert mlm.item() == pytest.approx(want["student.mlm"], rel=1e-5)
    total = terms["nst"] + terms["contrastive"] + mlm
    assert total.item() == pytest.approx(want["student.total(voken_ratio=1)"], rel=1e-5)


def test_converters_are_strict(golden):
    bert = _bert(golden["cfg"])
    teacher = VidLanKDTeacher(VidLanKDTeacherConfig(bert=bert, double_video_embeddings=True))
    visn = dict(golden["visn"])
    del visn["mlp_map.3.bias"]
    with pytest.raises(ConfigError, match=r"missing keys: video\.mlp_map\.3\.bias"):
        convert_teacher_state_dict(golden["teacher"], visn, teacher)
    text = dict(golden["teacher"])
    text["cls.predictions.decoder.weight"] = text["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ConfigError, match="not tied"):
        convert_teacher_state_dict(text, golden["visn"], teacher)
    # an NST-only student needs contrastive_head=False; the error says so
    nst_only = {k: v for k, v in golden["student"].items() if not k.startswith("kd2_")}
    student = VidLanKDStudent(VidLanKDStudentConfig(bert=bert))
    with pytest.raises(ConfigError, match="contrastive=False"):
        convert_student_state_dict(nst_only, student)
    convert_student_state_dict(nst_only, VidLanKDStudent(VidLanKDStudentConfig(bert=bert, contrastive_head=False)))
    # DDP-wrapped video state dicts ("module." prefix) load too
    convert_teacher_state_dict(golden["teacher"], {f"module.{k}": v for k, v in golden["visn"].items()}, teacher)
    assert torch.equal(teacher.video.mlp_map[3].bias, golden["visn"]["mlp_map.3.bias"])


def test_video_tower_trains_and_masks_padding():
    model = create_model("vidlankd-teacher-tiny", **TEST_OVERRIDES)
    model.eval()
    inputs = model.example_inputs(2)
    feats, vmask = inputs["video_feats"], inputs["video_mask"]
    with torch.no_grad():
        base = model.video(feats, vmask)
        noisy = feats.clone()
        noisy[-1, 3:] = 100.0  # padded frames of the last clip
        torch.testing.assert_close(model.video(noisy, vmask), base, rtol=0, atol=1e-6)
    model.train()
    model(**inputs)["video_emb"].sum().backward()
    assert model.video.feature_proj[0].weight.grad.abs().sum() > 0


def test_classifier_from_student_and_regression():
    student = create_model("vidlankd-student-tiny", **TEST_OVERRIDES)
    clf = VidLanKDClassifier.from_encoder(student.bert, 3)
    for k, v in student.bert.state_dict().items():
        assert torch.equal(clf.bert.state_dict()[k], v)
    assert clf(**clf.example_inputs(4)).shape == (4, 3)
    reg = VidLanKDClassifier.from_encoder(student.bert, 1, problem="regression")
    assert reg(**reg.example_inputs(4)).shape == (4,)
    with pytest.raises(ConfigError, match="num_labels 1"):
        VidLanKDClassifierConfig.from_dict({"problem": "regression", "num_labels": 2})


def test_teacher_and_student_sizes_may_differ():
    student = create_model("vidlankd-student-tiny", **TEST_OVERRIDES, teacher_hidden_size=48)
    out = student(**student.example_inputs(2))
    assert out["nst"].shape[-1] == 48 and out["contrastive"].shape[-1] == 48
    torch.testing.assert_close(out["nst"].norm(dim=-1), torch.ones(2, 7))


def test_convert_entry_point_reads_both_layouts(golden, tmp_path):
    """``videolang convert vidlankd`` (CONVERTER): the golden dict holds the teacher's two
    state dicts and a student's; each goes to the matching model."""
    from videolang.models.convert.vidlankd import CONVERTER

    bert = _bert(golden["cfg"])
    teacher = VidLanKDTeacher(VidLanKDTeacherConfig(bert=bert, double_video_embeddings=True))
    CONVERTER["load_state"](golden, teacher, source="golden")
    assert torch.equal(teacher.video.feature_proj[1].weight,
                       golden["visn"]["backbone.video_encoder.new_video_embeddings.1.weight"])
    student = VidLanKDStudent(VidLanKDStudentConfig(bert=bert))
    CONVERTER["load_state"](golden["student"], student, source="student.bin")
    assert torch.equal(student.nst_head.proj.net[0].weight, golden["student"]["kd1_student_head.dense.weight"])
    with pytest.raises(ConfigError, match=r"'teacher'.*'visn'"):
        CONVERTER["load_state"](golden["student"], teacher, source="student.bin")
    assert set(CONVERTER) == {"default_model", "load_state", "description"}  # the folder's spec: pipelines


def test_converted_teacher_matches_the_original_by_default(golden, ported):
    """The original embeds video tokens twice; a teacher built with our default (once) is
    switched to the original's computation by the converter, not left off by ~1e-2."""
    from videolang.losses.distill import paired_hinge_loss

    i, want = golden["inputs"], golden["outputs"]
    vmask = i["vfeat"][..., -1] != 0
    teacher = VidLanKDTeacher(VidLanKDTeacherConfig(bert=_bert(golden["cfg"]))).eval()
    assert not teacher.config.double_video_embeddings
    convert_teacher_state_dict(golden["teacher"], golden["visn"], teacher, source="golden")
    assert teacher.config.double_video_embeddings and teacher.config.to_dict()["double_video_embeddings"]
    with torch.no_grad():
        out = teacher(i["ids"], i["att"], i["vfeat"], vmask)
        reference = ported[0].video(i["vfeat"], vmask)
    torch.testing.assert_close(out["video_emb"], reference, rtol=0, atol=0)
    hinge = paired_hinge_loss(out["token_emb"], out["video_emb"], i["att"], 1.0)
    assert hinge.item() == pytest.approx(want["teacher.hinge"], rel=2e-7, abs=0)
    teacher.video.double_embeddings = False  # what the converter used to leave: 1.2e-5 off
    with torch.no_grad():
        single = teacher.video(i["vfeat"], vmask)
    assert paired_hinge_loss(out["token_emb"], single, i["att"], 1.0).item() != pytest.approx(
        want["teacher.hinge"], rel=2e-7, abs=0)
