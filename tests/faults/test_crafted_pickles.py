"""No code runs from a file: a crafted pickle (its ``__reduce__`` would create a marker file when
unpickled) given to every entry point that reads weights is refused with a named error, and the
marker never appears."""

from __future__ import annotations

import builtins
import json
import pickle

import pytest
import torch

from videolang.errors import VideolangError


class Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "crafted.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(marker)}, path)
    raw = tmp_path / "crafted.pkl"
    raw.write_bytes(pickle.dumps({"model": Payload(marker)}))
    return path, raw, marker


def _entry_points(tmp_path, crafted_file):
    from videolang.engine.run import checkpoint_state_dict
    from videolang.models.backbones import load_state_dict_file
    from videolang.models.bert import load_bert_state_dict
    from videolang.models.frame_tokenizers import load_frame_tokenizer
    from videolang.models.weights import read_checkpoint
    from videolang.pipelines.convert import convert_checkpoint

    bert_dir = tmp_path / "bert"
    bert_dir.mkdir(exist_ok=True)
    (bert_dir / "pytorch_model.bin").write_bytes(crafted_file.read_bytes())
    (bert_dir / "config.json").write_text(json.dumps({"hidden_size": 8}))
    backbone = torch.nn.Linear(1, 1)
    return {
        "read_checkpoint (convert, model.init of every recipe)": lambda: read_checkpoint(crafted_file),
        "videolang convert videoclip": lambda: convert_checkpoint("videoclip", crafted_file, tmp_path / "out1"),
        "videolang convert vimpac": lambda: convert_checkpoint("vimpac", crafted_file, tmp_path / "out2"),
        "videolang convert clipbert": lambda: convert_checkpoint("clipbert", crafted_file, tmp_path / "out3"),
        "frame tokenizer file": lambda: load_frame_tokenizer(f"dalle:{crafted_file}"),
        "backbone weights": lambda: load_state_dict_file(backbone, crafted_file),
        "BERT pytorch_model.bin": lambda: load_bert_state_dict(bert_dir),
        "run checkpoint (--ckpt, export)": lambda: checkpoint_state_dict(crafted_file),
    }


@pytest.mark.parametrize("which", ["torch.save", "plain pickle"])
def test_every_weight_entry_point_refuses_a_crafted_pickle(tmp_path, crafted, which):
    torch_file, raw_file, marker = crafted
    failures = []
    for name, call in _entry_points(tmp_path, torch_file if which == "torch.save" else raw_file).items():
        try:
            call()
        except VideolangError:
            pass
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{name}: accepted the file")
        assert not marker.exists(), f"{name} ran code from the file"
    assert not failures, "\n".join(failures)


def test_resuming_from_a_crafted_checkpoint_runs_nothing(tmp_path, crafted):
    from tests.engine.toy_recipe import toy_config

    from videolang.engine import fit

    torch_file, _, marker = crafted
    with pytest.raises(Exception) as err:
        fit(toy_config(tmp_path, max_epochs=1), resume=torch_file)
    assert not marker.exists()
    assert "Weights only load failed" in str(err.value) or isinstance(err.value, VideolangError)
