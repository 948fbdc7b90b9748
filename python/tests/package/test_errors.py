"""Bad input raises Python exceptions that carry the Rust error's message and chain."""

import pytest

import flinch
from conftest import EXAMPLES


def test_a_missing_file_is_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "nope.flinch.csv"
    with pytest.raises(FileNotFoundError) as e:
        flinch.read_trace(missing)
    assert e.value.filename == str(missing)
    assert "cannot open trace" in str(e.value) and str(missing) in str(e.value)
    # The OS error it came from is the cause.
    assert isinstance(e.value.__cause__, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        flinch.analyze(missing, "a", "b")


def test_a_text_file_that_is_not_a_trace(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("just some notes\nnot a trace\n")
    with pytest.raises(flinch.TraceFormatError) as e:
        flinch.read_trace(p)
    assert isinstance(e.value, flinch.FlinchError) and isinstance(e.value, ValueError)
    assert e.value.path == str(p) and e.value.line == 1
    assert "not a flinch trace" in str(e.value) and '"just some notes"' in str(e.value)


def test_a_damaged_row_names_its_line(tmp_path):
    lines = open(EXAMPLES["llm"]).read().splitlines(keepends=True)
    lines[10] = "123,sample,gpu0.power_instant,not-a-number,,\n"
    p = tmp_path / "damaged.flinch.csv"
    p.write_text("".join(lines))
    with pytest.raises(flinch.TraceFormatError) as e:
        flinch.read_trace(p)
    assert e.value.line == 11
    assert "not-a-number" in str(e.value)


def test_an_unknown_label_lists_the_labels_present():
    with pytest.raises(flinch.InvalidInput) as e:
        flinch.analyze(EXAMPLES["llm"], "infer_start", "last_token")
    msg = str(e.value)
    assert '"last_token"' in msg and "first_token (16)" in msg


def test_a_bad_idle_window():
    with pytest.raises(flinch.InvalidInput) as e:
        flinch.analyze(EXAMPLES["llm"], "infer_start", "first_token", idle_window="calib_start")
    assert "A..B" in str(e.value)
    with pytest.raises(flinch.InvalidInput) as e:
        flinch.analyze(EXAMPLES["llm"], "infer_start", "first_token", idle_window="nope..calib_end")
    assert '"nope"' in str(e.value) and "labels present" in str(e.value)


def test_an_unknown_source(tmp_path):
    with pytest.raises(flinch.InvalidInput) as e:
        flinch.Recorder(sources=["tpu"], out=tmp_path / "t.flinch.csv")
    assert '"tpu"' in str(e.value) and "nvml, dcgm, rapl, cpu, synthetic" in str(e.value)
    assert not (tmp_path / "t.flinch.csv").exists(), "nothing is created on failure"


def test_a_missing_nvml_says_why_instead_of_crashing(tmp_path):
    # This machine has no NVIDIA driver: asking for it is an exception that says so.
    with pytest.raises(flinch.SourceError) as e:
        flinch.Recorder(sources=["nvml"], out=tmp_path / "t.flinch.csv")
    assert e.value.backend == "nvml"
    assert e.value.kind == "not-available"
    assert "libnvidia-ml" in str(e.value)


def test_a_missing_powercap_tree(tmp_path):
    with pytest.raises(flinch.SourceError) as e:
        flinch.Recorder(sources=["rapl"], rapl_root=tmp_path / "absent", out=tmp_path / "t.csv")
    assert e.value.backend == "rapl" and str(tmp_path / "absent") in str(e.value)


def test_an_existing_output_is_not_replaced(tmp_path):
    p = tmp_path / "t.flinch.csv"
    p.write_text("precious")
    with pytest.raises(FileExistsError):
        flinch.Recorder(sources=["synthetic"], out=p)
    assert p.read_text() == "precious"


def test_bad_marks_and_windows(tmp_path):
    with flinch.Recorder(sources=["synthetic"], out=tmp_path / "t.csv") as rec:
        with pytest.raises(flinch.InvalidInput):
            rec.mark("not a label")
        with pytest.raises(flinch.InvalidInput):
            rec.mark("ok", note="has blanks in it")
        with pytest.raises(flinch.InvalidInput):
            with rec.window("bad name"):
                pass
        w = rec.window("once")
        with w:
            pass
        with pytest.raises(RuntimeError):
            with w:
                pass
        open_w = rec.window("never_closed")
        with pytest.raises(flinch.InvalidInput):
            open_w.result()
    with pytest.raises(flinch.InvalidInput) as e:
        rec.mark("after_stop")
    assert "stopped" in str(e.value)
