"""Anticipation models: the teacher for every supported encoder type, the causal student."""

from __future__ import annotations

import pytest
import torch

from videolang.errors import ConfigError
from videolang.models import create_model
from videolang.models.anticipation import (
    TEACHER_TYPES,
    AnticipationStudent,
    AnticipationStudentConfig,
    AnticipationTeacher,
    AnticipationTeacherConfig,
    build_hf_config,
)


def _teacher(model_type: str, **kw) -> AnticipationTeacher:
    cfg = AnticipationTeacherConfig(model_type=model_type, hidden_size=32, num_layers=1, num_heads=2,
                                    intermediate_size=64, vocab_size=64, max_position_embeddings=32,
                                    num_actions=7, num_verbs=3, num_nouns=4, **kw)
    return AnticipationTeacher(cfg)


@pytest.mark.parametrize("model_type", TEACHER_TYPES)
def test_teacher_every_encoder_type(model_type):
    torch.manual_seed(0)
    model = _teacher(model_type).eval()
    hf = build_hf_config(model.config)
    assert (hf.dim if model_type == "distilbert" else hf.hidden_size) == 32
    inputs = model.example_inputs(3)
    out = model(**inputs)
    assert out["action"].shape == (3, 7) and out["verb"].shape == (3, 3) and out["noun"].shape == (3, 4)
    assert out["features"].shape == (3, 32)
    assert model.mlm_logits(**inputs).shape == (3, 8, 64)
    # the untied decoder is a separate parameter, equal to the embeddings at the start
    emb, dec = model.lm.get_input_embeddings().weight, model.lm.get_output_embeddings().weight
    assert emb.data_ptr() != dec.data_ptr()


def test_teacher_padding_does_not_change_the_prediction():
    torch.manual_seed(0)
    model = _teacher("bert").eval()
    ids = torch.randint(5, 64, (1, 6))
    short = model(ids, torch.ones(1, 6, dtype=torch.long))["action"]
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], 1).long()
    torch.testing.assert_close(model(padded_ids, mask)["action"], short, rtol=1e-5, atol=1e-5)


def test_teacher_local_folder_and_errors(tmp_path):
    model = _teacher("distilbert")
    model.lm.save_pretrained(tmp_path / "lm")
    again = _teacher("distilbert", text_pretrained=str(tmp_path / "lm"))
    for (k, a), b in zip(model.lm.state_dict().items(), again.lm.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="not a local folder"):
        _teacher("bert", text_pretrained=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="model_type"):
        AnticipationTeacherConfig(model_type="gpt2")


def test_student_is_causal_and_reads_the_newest_row():
    torch.manual_seed(0)
    cfg = AnticipationStudentConfig(feature_dim=6, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                                    max_rows=8, dropout=0.0, num_actions=5, num_verbs=2, num_nouns=3,
                                    teacher_feature_dim=10)
    model = AnticipationStudent(cfg).eval()
    feats = torch.randn(2, 6, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    out = model(feats, mask)
    assert out["projected_features"].shape == (2, 10)
    # sample 1 = its 4 valid rows alone; padding content is irrelevant
    alone = model(feats[1:, :4])
    torch.testing.assert_close(out["action"][1:], alone["action"], rtol=1e-5, atol=1e-5)
    noisy = feats.clone()
    noisy[1, 4:] = 100.0
    torch.testing.assert_close(model(noisy, mask)["action"], out["action"])
    # changing an old row changes the prediction (it is attended to); too many rows is an error
    older = feats.clone()
    older[0, 0] += 1.0
    assert not torch.allclose(model(older, mask)["action"][0], out["action"][0])
    with pytest.raises(ValueError, match="max_rows"):
        model(torch.randn(1, 9, 6))


def test_registered_configs_build_with_dataset_sizes():
    model = create_model("anticipation-student-tiny", num_actions=11)
    assert model.action_head.out_features == 11
