"""Config validation: every problem at once, with the file, the key path and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edged.config import ConfigError, load_config, parse_config
from tests.support.daemon import toml_text

REPO = Path(__file__).resolve().parents[2]


def minimal(model: Path, video: Path) -> str:
    return toml_text(
        {
            "workers": [{"name": "cpu0", "model": model}],
            "streams": [{"name": "cam1", "source": video, "worker": "cpu0"}],
        }
    )


@pytest.fixture
def video(assets: Path) -> Path:
    return assets / "media" / "traffic-720p.mp4"


def problems(text: str, tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "config.toml")
    for p in caught.value.problems:
        assert p.file == str(tmp_path / "config.toml")
    return {p.key: p.message for p in caught.value.problems}


def test_minimal_config_gets_documented_defaults(
    tmp_path: Path, model_path: Path, video: Path
) -> None:
    config = parse_config(minimal(model_path, video), tmp_path / "config.toml")
    assert config.node.name == "edge"
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.mqtt.topic_prefix == "edged"
    assert config.workers[0].backend == "cpu"
    assert config.workers[0].input_size == (416, 416)
    assert config.streams[0].detect_fps == 0
    assert config.streams[0].realtime is True


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(model_path.read_bytes())
    (tmp_path / "clip.mp4").write_bytes(b"not really a video, but a file")
    text = minimal(Path("models/m.onnx"), Path("clip.mp4"))
    config = parse_config(text, tmp_path / "config.toml")
    assert config.workers[0].model == str(tmp_path / "models" / "m.onnx")
    assert config.streams[0].source == str(tmp_path / "clip.mp4")


def test_every_error_is_reported_at_once_with_its_key_path(
    tmp_path: Path, model_path: Path, video: Path
) -> None:
    text = toml_text(
        {
            "node": {"name": "Front Door", "colour": "blue"},
            "mqtt": {"url": "http://broker"},
            "workers": [
                {"name": "cpu0", "model": tmp_path / "missing.onnx", "threads": "two"},
                {"name": "cpu0", "model": model_path, "backend": "npu"},
            ],
            "streams": [
                {"name": "cam1", "source": video, "worker": "gpu7", "min_score": 1.5},
                {
                    "name": "cam2",
                    "source": video,
                    "worker": "cpu0",
                    "labels": ["person", "unicorn"],
                },
            ],
        }
    )
    found = problems(text, tmp_path)
    assert "node.colour" in found and "unknown key" in found["node.colour"]
    assert "name" in found["node.colour"]  # it lists the keys that exist
    assert "lowercase" in found["node.name"]
    assert "mqtt.url" in found
    assert "integer" in found["workers[0].threads"]
    assert "expected one of 'ascend', 'cpu'" in found["workers[1].backend"]
    assert "two workers are named 'cpu0'" in found["workers"]
    assert "<= 1" in found["streams[0].min_score"]
    assert "'unicorn'" in found["streams[1].labels[1]"]
    # entries with a schema error still get their references and files checked
    assert "missing.onnx" in found["workers[0].model"]
    assert "no worker named 'gpu7'" in found["streams[0].worker"]


def test_missing_references_and_files_are_errors(tmp_path: Path, model_path: Path) -> None:
    text = f"""
[[workers]]
name = "cpu0"
model = "{tmp_path / "nope.onnx"}"
labels = "{tmp_path / "labels.txt"}"

[[streams]]
name = "cam1"
source = "{tmp_path / "nope.mp4"}"
worker = "cpu1"

[[streams]]
name = "cam1"
source = "rtsp://camera.local/stream"
worker = "cpu0"
"""
    found = problems(text, tmp_path)
    assert "nope.onnx" in found["workers[0].model"]
    assert "labels file" in found["workers[0].labels"]
    assert "no worker named 'cpu1'" in found["streams[0].worker"]
    assert "nope.mp4" in found["streams[0].source"]
    assert "two streams are named 'cam1'" in found["streams"]


def test_required_keys_and_wrong_types(tmp_path: Path) -> None:
    found = problems('[[workers]]\nname = "cpu0"\n\n[[streams]]\nname = 5\n', tmp_path)
    assert found["workers[0].model"].startswith("missing")
    assert found["streams[0].source"].startswith("missing")
    assert "string" in found["streams[0].name"]


def test_names_that_would_break_topics_are_rejected(
    tmp_path: Path, model_path: Path, video: Path
) -> None:
    for bad in ("cam/1", "cam+", "cam#", "Cam", ""):
        text = minimal(model_path, video).replace('name = "cam1"', f'name = "{bad}"')
        assert "streams[0].name" in problems(text, tmp_path), bad


def test_fetched_model_name_points_at_the_state_directory(
    tmp_path: Path, model_path: Path, video: Path
) -> None:
    text = f'[node]\nstate_dir = "{tmp_path / "state"}"\n' + minimal(
        Path("yolox-nano"), video
    ).replace(f'"{Path("yolox-nano")}"', '"yolox-nano"')
    found = problems(text, tmp_path)
    assert "edged models fetch yolox-nano" in found["workers[0].model"]
    (tmp_path / "state" / "models").mkdir(parents=True)
    (tmp_path / "state" / "models" / "yolox_nano.onnx").write_bytes(model_path.read_bytes())
    config = parse_config(text, tmp_path / "config.toml")
    assert config.workers[0].model == str(tmp_path / "state" / "models" / "yolox_nano.onnx")


def test_tls_files_with_a_plain_mqtt_url_are_an_error(
    tmp_path: Path, model_path: Path, video: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    text = (
        minimal(model_path, video)
        + f'[mqtt]\nurl = "mqtt://broker"\n[mqtt.tls]\nca_file = "{ca}"\n'
    )
    assert "mqtts://" in problems(text, tmp_path)["mqtt.url"]
    parse_config(text.replace("mqtt://broker", "mqtts://broker"), tmp_path / "config.toml")


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    found = problems("[node\nname = 1\n", tmp_path)
    assert "line 1" in found[""]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_check_config_command_exit_codes(tmp_path: Path, model_path: Path, video: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(minimal(model_path, video))
    bad = tmp_path / "bad.toml"
    bad.write_text(
        minimal(model_path, video).replace('worker = "cpu0"', 'worker = "x"') + "oops = 1\n"
    )
    ok = subprocess.run(
        [sys.executable, "-m", "edged", "check-config", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 workers, 1 streams)" in ok.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "edged", "check-config", str(bad)], capture_output=True, text=True
    )
    assert failed.returncode == 2
    assert f"{bad}: streams[0].oops: unknown key" in failed.stderr
    assert f"{bad}: streams[0].worker: no worker named 'x'" in failed.stderr


def test_shipped_example_config_is_valid(tmp_path: Path, model_path: Path) -> None:
    # the example names the fetched model; give it a state directory that has it
    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    (state / "models" / "yolox_nano.onnx").write_bytes(model_path.read_bytes())
    text = (REPO / "config.toml").read_text().replace('state_dir = ""', f'state_dir = "{state}"')
    config = parse_config(text, REPO / "config.toml")
    assert [s.name for s in config.streams] == ["street", "road"]


def test_ascend_workers_need_an_om_model_and_a_vpc_friendly_input_size(
    tmp_path: Path, model_path: Path, video: Path
) -> None:
    om = tmp_path / "yolox.om"
    om.write_text("{}")
    text = f"""
[[workers]]
name = "npu0"
backend = "ascend"
device = 1
model = "{model_path}"
input_size = [420, 416]
input_kind = "yuv420sp"
batch = 4

[[workers]]
name = "npu1"
backend = "ascend"
model = "{om}"
input_kind = "rgb"

[[streams]]
name = "cam1"
source = "{video}"
worker = "npu0"
"""
    found = problems(text, tmp_path)
    assert ".om" in found["workers[0].model"] and "atc" in found["workers[0].model"]
    assert "multiple of 16" in found["workers[0].input_size"]
    assert "'float', 'yuv420sp'" in found["workers[1].input_kind"]
    good = text.replace(str(model_path), str(om)).replace("[420, 416]", "[416, 416]")
    config = parse_config(good.replace('"rgb"', '"float"'), tmp_path / "config.toml")
    npu0 = config.workers[0]
    assert (npu0.backend, npu0.device, npu0.batch, npu0.input_kind) == ("ascend", 1, 4, "yuv420sp")
    assert npu0.threads == 1  # "auto" for an accelerator: one loop keeps the device fed
