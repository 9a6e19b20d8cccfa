"""GLUE TSV readers: the eight official layouts, test-label files, and errors naming file:line."""

from __future__ import annotations

import pytest

from videolang.data.glue import GLUE_TASKS, get_task, glue_task_folder, read_glue
from videolang.errors import ConfigError

# One tiny file per task in the official layout (header names as in the GLUE download).
LAYOUTS = {
    "CoLA": ("train.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n"),
    "SST-2": ("dev.tsv", "sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak\t0\n"),
    "MRPC": ("train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \"yes\".\tHe agreed.\n"
                          "0\t3\t4\tA cat.\tA dog.\n"),
    "STS-B": ("dev.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                         "0\tmain-captions\tMSRvid\t2012test\t0\tnone\tnone\tA man plays.\tA man is playing.\t4.75\n"),
    "QQP": ("train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tHow?\tWhy?\t0\n"
                         "2\t3\t4\tWhat is AI?\tWhat's AI?\t1\n"),
    "MNLI": ("dev_matched.tsv", "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                                "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
                                "0\t1\t1e\tgov\t(x)\t(y)\t(X)\t(Y)\tThe new rights are nice.\tEveryone likes them.\t"
                                "neutral\tneutral\n"),
    "QNLI": ("train.tsv", "index\tquestion\tsentence\tlabel\n0\tWhen?\tIn 1990.\tentailment\n"),
    "RTE": ("train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA dog runs.\tAn animal moves.\tentailment\n"
                         "1\tA dog runs.\tA cat sleeps.\tnot_entailment\n"),
}


@pytest.fixture()
def glue_root(tmp_path):
    for task, (name, text) in LAYOUTS.items():
        (tmp_path / task).mkdir()
        (tmp_path / task / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_every_task_reads(glue_root):
    assert set(LAYOUTS) == set(GLUE_TASKS)
    cola = read_glue(glue_root / "CoLA", "cola", "train")
    assert [(e.text_a, e.label) for e in cola.examples] == [("Our friends won't buy this analysis.", 1),
                                                           ("They drank the pub.", 0)]
    sst = read_glue(glue_root / "SST-2", "SST-2", "dev")
    assert sst.examples[0].text_b is None and [e.label for e in sst.examples] == [1, 0]
    mrpc = read_glue(glue_root / "MRPC", "mrpc", "train")
    assert mrpc.examples[0].text_a == 'He said "yes".'  # no CSV quoting in GLUE files
    sts = read_glue(glue_root / "STS-B", "sts-b", "dev")
    assert sts.examples[0].label == pytest.approx(4.75) and sts.task.is_regression
    qqp = read_glue(glue_root / "QQP", "qqp", "train")
    assert (qqp.examples[1].text_a, qqp.examples[1].label) == ("What is AI?", 1)
    mnli = read_glue(glue_root / "MNLI", "mnli", "dev")  # dev means dev_matched
    assert mnli.examples[0].label == get_task("mnli").labels.index("neutral")
    qnli = read_glue(glue_root / "QNLI", "qnli", "train")
    assert qnli.examples[0].text_b == "In 1990." and qnli.examples[0].label == 0
    rte = read_glue(glue_root / "RTE", "rte", "train")
    assert [e.label for e in rte.examples] == [0, 1]


def test_test_split_with_labels_file(glue_root):
    d = glue_root / "RTE"
    (d / "test.tsv").write_text("index\tsentence1\tsentence2\n0\ta\tb\n1\tc\td\n")
    assert [e.label for e in read_glue(d, "rte", "test").examples] == [None, None]
    (d / "test_labels.tsv").write_text("index\tlabel\n1\tentailment\n0\tnot_entailment\n")
    assert [e.label for e in read_glue(d, "rte", "test").examples] == [1, 0]
    assert read_glue(d, "rte", "test").labelled


def test_errors_name_file_and_line(glue_root):
    d = glue_root / "RTE"
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    with pytest.raises(ConfigError, match=r"RTE/dev\.tsv:3: field 'label': RTE label 'maybe'"):
        read_glue(d, "rte", "dev")
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:2: expected at least 4 tab-separated columns, got 2"):
        read_glue(d, "rte", "dev")
    assert read_glue(d, "rte", "train").skipped == 0
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\n1\ta\tb\tentailment\n")
    kept = read_glue(d, "rte", "dev", skip_malformed=True)
    assert kept.skipped == 1 and len(kept.examples) == 1
    (d / "dev.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:1: header has no column 'sentence1'"):
        read_glue(d, "rte", "dev")
    with pytest.raises(ConfigError, match=r"split 'dev_mismatched'.*not found \(files there: dev\.tsv"):
        read_glue(d, "rte", "dev_mismatched")
    (glue_root / "STS-B" / "dev.tsv").write_text(LAYOUTS["STS-B"][1].replace("4.75", "high"))
    with pytest.raises(ConfigError, match=r"dev\.tsv:2: field 'label': .*number"):
        read_glue(glue_root / "STS-B", "stsb", "dev")
    for score in ("nan", "inf", "-inf"):  # float() takes them; a NaN target would give a NaN loss
        (glue_root / "STS-B" / "dev.tsv").write_text(LAYOUTS["STS-B"][1].replace("4.75", score))
        with pytest.raises(ConfigError, match=r"dev\.tsv:2: field 'label': .*finite"):
            read_glue(glue_root / "STS-B", "stsb", "dev")
    with pytest.raises(ConfigError, match="unknown GLUE task 'wnli'"):
        get_task("wnli")


def test_blank_sentences_and_bad_utf8_are_named(glue_root):
    d = glue_root / "RTE"
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\t \tentailment\n1\ta\tb\tentailment\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:2: field 'text_b'"):
        read_glue(d, "rte", "dev")
    kept = read_glue(d, "rte", "dev", skip_malformed=True)
    assert kept.skipped == 1 and [e.text_b for e in kept.examples] == ["b"]
    (d / "dev.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\ta\xff\tb\tentailment\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:2: not UTF-8"):
        read_glue(d, "rte", "dev")


def test_synthetic_world_glue_files(tmp_path):
    """The synthetic world writes SST-2 / RTE in the GLUE layout, test labels beside."""
    from videolang.synth.annotations import TreeWriter, WorldAnnotations
    from videolang.synth.formats import write_glue

    ann = WorldAnnotations(seed=0, videos=[])
    ann.sst = {s: [(f"sentence {s} {i}", i % 2) for i in range(3)] for s in ("train", "dev", "test")}
    ann.rte = {s: [(f"p {i}", f"h {i}", "entailment") for i in range(2)] for s in ("train", "dev", "test")}
    write_glue(ann, TreeWriter(tmp_path))
    sst = read_glue(tmp_path / "formats/glue/SST-2", "SST-2", "test")
    assert [e.label for e in sst.examples] == [0, 1, 0]
    rte = read_glue(tmp_path / "formats/glue/RTE", "RTE", "dev")
    assert rte.examples[1].text_b == "h 1" and rte.examples[1].label == 0


def test_task_folder_under_the_glue_root_or_the_folder_itself(glue_root):
    assert glue_task_folder(glue_root, "sst2") == glue_root / "SST-2"
    assert glue_task_folder(glue_root / "RTE", "RTE") == glue_root / "RTE"
