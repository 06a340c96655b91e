"""The Dockerfile, read as data (no container engine here): multi-stage, slim
Python 3.11 base, non-root final stage without build tools, generated protos
included, one entry point per component, each an existing module."""

from __future__ import annotations

import fnmatch
import importlib.util
import subprocess
import sys
import tomllib

import helm_python
import yaml

from .dockerfile import COMPONENTS, DOCKERFILE, ROOT, entry_modules, pythonpath_roots, stages

GLOBAL_ARGS, STAGES = stages(DOCKERFILE.read_text())
BUILDER, FINAL = STAGES[0], STAGES[-1]
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "grpcio-tools", "pip install", "apt-get")


def test_multi_stage_slim_python_311() -> None:
    assert len(STAGES) >= 2
    assert BUILDER.name == "builder"
    for stage in STAGES:
        assert stage.base.startswith("python:3.11-slim"), stage.base


def test_final_stage_is_non_root_without_build_tools() -> None:
    (user,) = FINAL.ops("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric uid so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) > 0
    for run in FINAL.ops("RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in run.args, f"final stage runs {tool!r}: {run.args}"
    for copy in FINAL.ops("COPY"):
        assert copy.args.startswith("--from=builder "), (
            f"final stage copies from the context: {copy.args}"
        )
        assert "/opt/protoc" not in copy.args, "the code generator's venv stays in the builder"


def test_chart_runs_as_the_image_user() -> None:
    (user,) = FINAL.ops("USER")
    with helm_python.Chart.load(ROOT / "charts" / "tessera") as chart:
        rendered = chart.render({}, name="t", namespace="n", is_install=True)
    manifests = [text for path, text in rendered.items() if path.endswith(".yaml")]
    for text in manifests:
        for obj in yaml.safe_load_all(text):
            if obj and obj["kind"] == "Deployment":
                pod = obj["spec"]["template"]["spec"]["securityContext"]
                assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == user.args


def test_protos_generated_in_builder_and_shipped() -> None:
    runs = " ".join(r.args for r in BUILDER.ops("RUN"))
    assert "bash scripts/gen_protos.sh" in runs and "protos protos/gen" in runs
    assert any("/src/protos/gen /app/protos/gen" in c.args for c in FINAL.ops("COPY"))


def test_runtime_dependencies_are_the_runtime_lock() -> None:
    venv_installs = [r.args for r in BUILDER.ops("RUN") if "/opt/venv/bin/pip install" in r.args]
    assert len(venv_installs) == 1
    install = venv_installs[0].split("/opt/venv/bin/pip install", 1)[1].split("&&")[0].split()
    assert "--require-hashes" in install and "--no-deps" in install, "nothing resolved at build"
    assert install[-2:] == ["-r", "locks/runtime.txt"], "dev tools stay out of the image"
    assert any(c.words()[0] == "locks/" for c in BUILDER.ops("COPY"))


def test_source_roots_match_pyproject() -> None:
    where = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["where"]
    roots = pythonpath_roots(FINAL)
    assert roots == [f"/app/{w}" for w in where]
    shipped = {c.words()[-1] for c in FINAL.ops("COPY")}
    copied_in_builder = {c.words()[0].rstrip("/") for c in BUILDER.ops("COPY")}
    for w in where:
        assert f"/app/{w}" in shipped
        if w != "protos/gen":
            assert w in copied_in_builder
            assert (ROOT / w).is_dir(), f"source root {w}/ is missing from the repository"


def test_one_entry_point_per_component() -> None:
    modules = entry_modules(FINAL)
    assert modules == [f"tessera.{c}" for c in COMPONENTS]
    (entrypoint,) = FINAL.ops("ENTRYPOINT")
    assert entrypoint.words() == ["python", "-m"]
    (cmd,) = FINAL.ops("CMD")
    assert cmd.words()[0] in modules


def test_entry_point_modules_exist_under_the_source_roots() -> None:
    """Each entry point resolves to a __main__ module when only the image's
    source roots are on the path (mapped onto this checkout)."""
    paths = [str(ROOT / r.removeprefix("/app/")) for r in pythonpath_roots(FINAL)]
    probe = (
        "import importlib.util, sys\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        spec = importlib.util.find_spec(m + '.__main__')\n"
        "    except ModuleNotFoundError:\n"
        "        spec = None\n"
        "    print(m, spec.origin if spec else None)\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path[:0] = {paths!r}\n" + probe,
            *entry_modules(FINAL),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = dict(line.split(" ", 1) for line in out.splitlines())
    missing = [m for m, origin in found.items() if origin == "None"]
    assert missing == [], f"entry points without a module: {missing}"
    for module, origin in found.items():
        assert origin.startswith(str(ROOT)), f"{module} resolved outside the checkout: {origin}"
    assert importlib.util.find_spec("tessera.common.server") is not None


def test_dockerignore_keeps_what_the_builder_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must_ignore in (".venv", ".git", "protos/gen", "tests"):
        assert must_ignore in patterns
    for copy in BUILDER.ops("COPY"):
        source = copy.words()[0].rstrip("/")
        for pattern in patterns:
            assert not fnmatch.fnmatch(source, pattern), f"{source} is excluded by {pattern}"
