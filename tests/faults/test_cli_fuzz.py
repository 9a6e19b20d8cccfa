"""Bad command lines end with one line naming the problem and exit status 2, never a traceback."""

from __future__ import annotations

import logging

import pytest

from videolang.cli.main import main

BAD_COMMAND_LINES = [
    ["fit"],
    ["fit", "--config"],
    ["fit", "--config", "nosuch/config"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "optim.lr"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "optim.lr=fast"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "trainer.devices=[0, x]"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "nosuchsection.key=1"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "--seed", "x"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "--name", "../escape"],
    ["fit", "--config", "vimpac/synthetic_pretrain", "--resume", "{missing}/last.ckpt"],
    ["fit", "--config", "{dir}"],
    ["fit", "--config", "{binary}"],
    ["validate", "--config", "vimpac/synthetic_pretrain"],
    ["test", "--config", "vimpac/synthetic_pretrain", "--ckpt", "{binary}"],
    ["export", "--config", "vimpac/synthetic_pretrain", "--ckpt", "{missing}", "--out", "{tmp}/o"],
    ["predict"],
    ["predict", "--model", "{missing}", "{missing}"],
    ["predict", "--model", "{tmp}", "video.mp4"],
    ["config", "show", "nosuch.recipe"],
    ["config", "show", "nosuch/config"],
    ["config", "list", "nomethod"],
    ["nosuchcommand"],
    ["data", "synth", "--out", "{tmp}/w", "--videos", "-3"],
    ["data", "synth", "--out", "{tmp}/w", "--videos", "many"],
    ["data", "pack", "{missing}", "{tmp}/out.lmdb"],
    ["data", "probe", "{missing}"],
    ["data", "probe", "{binary}"],
    ["extract-features", "{missing}", "{tmp}/feats"],
    ["extract-features", "{tmp}", "{tmp}/feats", "--backbone", "nosuchnet"],
    ["convert", "{missing}", "{tmp}/model"],
    ["convert", "{binary}", "{tmp}/model"],
    ["tokenize", "{missing}", "{tmp}/tokens"],
    ["index", "{missing}", "{tmp}", "{tmp}/index"],
    ["index", "{tmp}", "{missing}", "{tmp}/index"],
    ["search", "{missing}", "a red circle"],
    ["search", "{tmp}", "a red circle", "-k", "0"],
    ["search", "{tmp}", "a red circle", "-k", "many"],
    ["serve", "{missing}"],
    ["serve", "{tmp}", "--port", "99999"],
    ["serve", "{tmp}", "--port", "-1"],
    ["ask", "{missing}", "v.mp4", "what?", "--model", "{missing}"],
    ["glue", "--tasks", "nosuchtask"],
]


def _drop_handlers_of_closed_streams() -> None:
    """Handlers made under an earlier test's captured stderr (Lightning adds its own at import)
    would report a logging error about that closed stream: a test artifact, not the CLI's."""
    loggers = [logging.root, *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)
    logging.root.handlers.clear()  # main() configures logging to this test's stderr


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES, ids=lambda a: " ".join(a)[:60])
def test_bad_command_lines_exit_2_with_one_line(argv, tmp_path, capsys):
    binary = tmp_path / "garbage.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    fill = {"missing": str(tmp_path / "missing"), "dir": str(tmp_path), "binary": str(binary), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    if argv[0] in ("fit", "validate", "test", "export"):
        argv.append(f"run.root={tmp_path / 'runs'}")
    _drop_handlers_of_closed_streams()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and err.strip(), err
    assert err.strip().splitlines()[-1].startswith("videolang") or "usage:" in err, err


def test_debug_shows_the_traceback():
    from videolang.errors import ConfigError

    with pytest.raises(ConfigError, match="nosuch"):
        main(["--debug", "config", "show", "nosuch.recipe"])


def test_an_unforeseen_failure_is_one_line_with_exit_1(monkeypatch, capsys):
    import videolang.cli.train as train

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(train, "run_config_list", broken)
    _drop_handlers_of_closed_streams()
    assert main(["config", "list"]) == 1
    err = capsys.readouterr().err
    assert err == "videolang: error: KeyError: 'surprise' (run with --debug for the traceback)\n"
