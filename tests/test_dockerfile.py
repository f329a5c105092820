"""The image, checked without a Docker engine: its shape, its health check, and its install steps.

The slow test reads the Dockerfile instead of repeating it: it rebuilds the builder's context from
the COPY lines, runs every RUN that calls docker/install.sh (builder and runtime stages) in a
fresh venv, then checks the CLI and the packaged model there, offline. Changing the Dockerfile
or the script changes what this test runs, so the two cannot drift apart.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main

ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = "docker/install.sh"
IMAGE_VENV = "/opt/venv"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, tagged with their stage."""
    instructions: list[Instruction] = []
    stage = ""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        keyword, _, args = logical.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage = args.split()[-1]
        instructions.append(Instruction(stage, keyword.upper(), " ".join(args.split())))
        logical = ""
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def only(instructions: list[Instruction], stage: str, keyword: str) -> list[str]:
    return [i.args for i in instructions if i.stage == stage and i.keyword == keyword]


def install_runs(instructions: list[Instruction]) -> list[Instruction]:
    return [i for i in instructions if i.keyword == "RUN" and INSTALL_SCRIPT.split("/")[-1] in i.args]


def test_two_stages_on_python_311_slim(dockerfile):
    assert [i.args for i in dockerfile if i.keyword == "FROM"] == [
        "python:3.11-slim AS builder",
        "python:3.11-slim AS runtime",
    ]
    assert only(dockerfile, "runtime", "COPY")[0] == f"--from=builder {IMAGE_VENV} {IMAGE_VENV}"


def test_runtime_is_non_root_with_data_volume_port_and_offline_model(dockerfile):
    user = only(dockerfile, "runtime", "USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    env = " ".join(only(dockerfile, "runtime", "ENV"))
    for setting in ("SUPPORTBOT_DATA_DIR=/data", "HF_HUB_OFFLINE=1", f"PATH={IMAGE_VENV}/bin:$PATH"):
        assert setting in env
    assert only(dockerfile, "runtime", "VOLUME") == ["/data"]
    assert only(dockerfile, "runtime", "EXPOSE") == ["3000"]
    assert only(dockerfile, "runtime", "CMD") == ['["supportbot", "serve"]']


def test_torch_comes_from_the_cpu_index_and_the_lock_pins_it(dockerfile):
    assert "download.pytorch.org/whl/cpu" in only(dockerfile, "builder", "ARG")[0]
    assert "${TORCH_INDEX_ARGS:-}" in (ROOT / INSTALL_SCRIPT).read_text(encoding="utf-8")
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "requirements.lock").read_text(encoding="utf-8"), re.M)


def test_both_stages_run_the_shared_install_script(dockerfile):
    runs = install_runs(dockerfile)
    assert [(run.stage, "--verify" in run.args) for run in runs] == [("builder", False), ("runtime", True)]


def test_everything_copied_is_in_the_build_context(dockerfile):
    """.dockerignore is an allow-list: a COPY of anything it leaves out fails only at build time."""
    allowed = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for stage in ("builder", "runtime"):
        for copy in only(dockerfile, stage, "COPY"):
            if copy.startswith("--from="):
                continue
            for source in shlex.split(copy)[:-1]:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_healthcheck_runs_a_real_cli_command(dockerfile):
    (healthcheck,) = only(dockerfile, "runtime", "HEALTHCHECK")
    command = healthcheck.split("CMD ", 1)[1]
    assert command == '["supportbot", "healthcheck"]'
    assert "healthcheck" in main.commands


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, list[int]]]:
    """A local /healthz whose status code the test sets: (port, [status])."""
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(status[0] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], status
    server.shutdown()
    server.server_close()


def test_healthcheck_command_follows_healthz(healthz_server, monkeypatch):
    port, status = healthz_server
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # must be ignored for a local probe
    runner = CliRunner()
    assert runner.invoke(main, ["healthcheck"], env={"SUPPORTBOT_PORT": str(port)}).exit_code == 0
    status[0] = 503
    assert runner.invoke(main, ["healthcheck", "--port", str(port)]).exit_code == 1
    server_gone = runner.invoke(main, ["healthcheck", "--port", "9", "--timeout", "1"])
    assert server_gone.exit_code == 1 and "127.0.0.1:9" in server_gone.output


# --------------------------------------------------------------------------- the real install


def build_context_copy(instructions: list[Instruction], destination: Path) -> None:
    """What the builder stage sees under its WORKDIR: its COPY lines, replayed from the repo."""
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc")  # as .dockerignore
    for copy in only(instructions, "builder", "COPY"):
        *sources, target = shlex.split(copy)
        for source in sources:
            origin = ROOT / source
            into = destination / target
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=ignored, dirs_exist_ok=True)
                continue
            into = into / origin.name if target.endswith("/") else into
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


def run_instruction(run: Instruction, context: Path, env: dict[str, str]) -> None:
    """A RUN line through `sh -c`, as Docker runs it; a bind mount's source is read from the repo."""
    flags, command = [], run.args
    while command.startswith("--"):
        flag, _, command = command.partition(" ")
        flags.append(flag)
    for flag in flags:
        mount = dict(part.split("=", 1) for part in flag.removeprefix("--mount=").split(","))
        if mount.get("type") == "bind":
            command = command.replace(mount["target"], str(ROOT / mount["source"]))
    subprocess.run(["sh", "-c", command], cwd=context, env=env, check=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_install_steps_build_a_working_offline_venv(dockerfile, tmp_path):
    context, venv = tmp_path / "src", tmp_path / "venv"
    build_context_copy(dockerfile, context)
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(venv),
        "TORCH_INDEX_ARGS": "",  # `--build-arg TORCH_INDEX_ARGS=`: this machine's pip finds the CPU wheel
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3 is 3.11
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("PYTHONPATH", None)
    try:
        for run in install_runs(dockerfile):  # the runtime RUN is --verify: CLI starts, model embeds offline
            started = time.monotonic()
            run_instruction(run, context, env)
            print(f"{run.stage} RUN took {time.monotonic() - started:.0f} s")  # for benchmarks/RESULTS.md

        cli = subprocess.run(
            [venv / "bin" / "supportbot", "--help"], env=env, capture_output=True, text=True, check=True
        )
        assert "refresh" in cli.stdout and "healthcheck" in cli.stdout
        probe = "import knowledge.embeddings as e; print(e.__file__); print(e.resolve_model_path())"
        out = subprocess.run(
            [venv / "bin" / "python", "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout.split()
        assert all(Path(path).resolve().is_relative_to(venv.resolve()) for path in out), out  # not the repo's copy
        assert (Path(out[1]) / "tokenizer.json").is_file()
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # 2 GB; pytest keeps old tmp dirs


def test_compose_replicas_share_the_database_and_the_s3_index_with_real_setting_names():
    """docker-compose.yml cannot run here (no Docker engine): its bot settings must at least be ones
    `Settings` reads, and its replicas must use the shared stores the README describes."""
    import yaml

    from bot.settings import Settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    fields = {name.upper() for name in Settings.model_fields}
    for name in ("bot-1", "bot-2"):
        environment = compose["services"][name]["environment"]
        unknown = [key for key in environment if key.startswith("SUPPORTBOT_") and key[11:] not in fields]
        assert not unknown, unknown
        assert environment["SUPPORTBOT_INDEX_URI"].startswith("s3://") and environment["AWS_ENDPOINT_URL"]
        assert environment["SUPPORTBOT_DATABASE_URL"].startswith("postgresql://")
        assert "healthcheck" in compose["services"][name]
    bucket = environment["SUPPORTBOT_INDEX_URI"].removeprefix("s3://").split("/")[0]
    assert f"store/{bucket}" in " ".join(compose["services"]["bucket"]["command"])
