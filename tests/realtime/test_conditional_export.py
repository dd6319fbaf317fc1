"""Export of a conditional run is refused in one line until the label travels as an input channel
(docs/conditional.md)."""

from __future__ import annotations

from click.testing import CliRunner

from audiovae.cli.main import main


def test_exporting_a_conditional_run_is_one_line(conditional_run, tmp_path):
    result = CliRunner().invoke(main, ["export", str(conditional_run), str(tmp_path / "exported")])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: export of conditional models is not supported yet (the label would be an "
                                     "input channel of prior and decode); export an unconditional run")
    assert not (tmp_path / "exported" / "model.ts").exists()
