"""The software environments agree with the code and with each other.

- every third-party module the package (and the tests) import is declared in pyproject.toml;
- each ``conda:`` environment of a workflow rule installs what that rule's script imports,
  found by following the script's imports through ``voxtell`` (module-level imports must
  all be there; imports inside functions must be there unless listed in ``NOT_ON_PATH`` with
  the reason the rule never runs them);
- every package an environment lists is a project dependency, and the lock files' versions
  satisfy both the environment's and pyproject's ranges; the GPU lock differs from the CPU
  lock only by the CUDA build of the same torch and by onnxruntime-gpu;
- the running environment was installed from its lock and ``pip check`` is clean.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib", "pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}

#: Distributions a rule's script can reach only through an import inside a function that the
#: rule never calls, per environment, with the reason. Entries that are no longer reachable
#: fail the test (keep the list honest).
_QC = "QC rendering (voxtell.stats.qc_report / qc), reached through voxtell.stats; this stage renders no QC"
_TEXT = "prompt embedding (voxtell.text encoders); this stage only reads prompt files"
_CLI = "voxtell.cli registers every command; train/retrain never run this one's code"
NOT_ON_PATH = {
    "envs/stats.yaml": {
        "torch": _TEXT,
        "transformers": _TEXT,
        "huggingface-hub": _TEXT,
        "dcm2niix": "PET conversion (voxtell.io.petct.convert_companion_pet) runs in the convert stage; "
                    "stats reads the converted pet/image.nii.gz",
    },
    "envs/torch.yaml": {
        "matplotlib": _QC,
        "pillow": _QC,
        "dcm2niix": f"DICOM conversion of `voxtell convert`: {_CLI}",
    },
}
NOT_ON_PATH["envs/torch-gpu.yaml"] = NOT_ON_PATH["envs/torch.yaml"]


# ----------------------------------------------------------------------------- import graph
def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


@lru_cache(maxsize=None)
def _edges(path: Path, modname: str) -> tuple[tuple[tuple[str, tuple[str, ...], bool], ...], dict[str, str]]:
    """((module, imported names, inside a function), ...) and the lazy ``_EXPORTS`` map."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = modname if path.name == "__init__.py" else modname.rpartition(".")[0]
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(sub) for sub in ast.walk(node) if sub is not node)
    exports: dict[str, str] = {}
    export_values: set[int] = set()  # `_EXPORTS` targets load on attribute access, not on import
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)):
            for key, value in zip(node.value.keys, node.value.values):
                target = value.value
                exports[key.value] = target if target.startswith("voxtell.") else f"{modname}.{target}"
                export_values.add(id(value))
    out = []
    for node in ast.walk(tree):
        lazy = id(node) in in_function
        if isinstance(node, ast.Import):
            out += [(alias.name, (), lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            out.append((module, tuple(a.name for a in node.names), lazy))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in export_values
              and re.fullmatch(r"voxtell(\.\w+)+", node.value) and _module_file(node.value)):
            out.append((node.value, (), lazy))  # importlib.import_module("voxtell.x") tables
    return tuple(out), exports


def _targets(module: str, names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Module files executed by ``from module import names`` (parents, submodules, lazy exports)."""
    parts = module.split(".")
    found = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    package_file = _module_file(module)
    for name in names:
        if _module_file(f"{module}.{name}"):
            found.append(f"{module}.{name}")
        elif package_file is not None:
            export = _edges(package_file, module)[1].get(name)
            if export:
                found.append(export)
    return [(m, f) for m in found if (f := _module_file(m)) is not None]


@lru_cache(maxsize=None)
def third_party_imports(script: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(module-level, all) third-party top-level modules a script can import, each with the
    chain of project modules that leads to it."""
    result: list[dict[str, str]] = []
    for eager_only in (True, False):
        seen: set[Path] = set()
        found: dict[str, str] = {}
        todo = [(script, "__main__", script.name)]
        while todo:
            path, modname, chain = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            for module, names, lazy in _edges(path, modname)[0]:
                if eager_only and lazy:
                    continue
                top = module.split(".")[0]
                if top == "voxtell":
                    todo += [(f, m, f"{chain} > {m}") for m, f in _targets(module, names)]
                elif top == "_wf":
                    todo.append((ROOT / "scripts" / "_wf.py", "_wf", f"{chain} > _wf"))
                elif top not in STDLIB and top:
                    found.setdefault(top, chain)
        result.append(found)
    return result[0], result[1]


@lru_cache(maxsize=1)
def _import_to_dist() -> dict[str, str]:
    return {module: canonicalize_name(dists[0]) for module, dists in packages_distributions().items()}


def dist_of(module: str) -> str:
    dist = _import_to_dist().get(module)
    assert dist, f"module {module!r} is imported but no installed distribution provides it"
    return dist


# ----------------------------------------------------------------------------- declarations
@lru_cache(maxsize=1)
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def declared(*extras: str) -> dict[str, SpecifierSet]:
    project = pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in reqs}


def env_packages(env: Path) -> dict[str, SpecifierSet]:
    """PyPI name -> version range of everything an environment file lists (conda and pip)."""
    spec = yaml.safe_load(env.read_text(encoding="utf-8"))
    out: dict[str, SpecifierSet] = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if not line.startswith("-"):
                    req = Requirement(line)
                    out[canonicalize_name(req.name)] = req.specifier
            continue
        name, _, version = dep.partition(" ")
        if name in NOT_PACKAGES:
            continue
        version = version.strip()  # conda: "=2.*" is pip's "==2.*"; ">=0.23" is the same in both
        if version.startswith("=") and not version.startswith("=="):
            version = "=" + version
        out[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(version)
    return out


def provided(names) -> set[str]:
    """The listed distributions and everything they require (from the installed metadata)."""
    todo, seen = list(names), set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def rule_envs() -> list[tuple[str, Path, Path]]:
    """(rule, conda env file, script) for every rule that has both."""
    rows = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint) \w+:)", text):
            name = re.match(r"\s*(?:rule|checkpoint) (\w+):", block)
            conda = re.search(r"\bconda:\s*\n\s*\"([^\"]+)\"", block)
            script = re.search(r"\bscript:\s*\n\s*\"([^\"]+)\"", block)
            if name and conda and script:
                rows.append((name.group(1), (smk.parent / conda.group(1)).resolve(),
                             (smk.parent / script.group(1)).resolve()))
    return rows


def read_lock(name: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            dist, _, version = line.partition("==")
            pins[canonicalize_name(dist)] = Version(version)
    return pins


ENV_FILES = sorted(ROOT.glob("envs/*.yaml"))


# ----------------------------------------------------------------------------- tests
def test_every_rule_with_a_script_has_an_environment_that_exists():
    rows = rule_envs()
    assert len(rows) >= 8, rows  # the parser still finds the workflow's rules
    for rule, env, script in rows:
        assert env.is_file(), f"rule {rule}: {env} does not exist"
        assert script.is_file(), f"rule {rule}: {script} does not exist"


@pytest.mark.parametrize("rule,env,script", rule_envs(), ids=[r[0] for r in rule_envs()])
def test_rule_environment_installs_what_its_script_imports(rule, env, script):
    env_key = str(env.relative_to(ROOT))
    have = provided(env_packages(env))
    eager, every = third_party_imports(script)
    excused = NOT_ON_PATH.get(env_key, {})
    for module, chain in eager.items():
        assert dist_of(module) in have, (
            f"rule {rule}: {script.name} imports {module} at start ({chain}); add {dist_of(module)} to {env_key}")
        assert dist_of(module) not in excused, f"{env_key}: {dist_of(module)} is imported at start, not optional"
    for module, chain in every.items():
        dist = dist_of(module)
        assert dist in have or dist in excused, (
            f"rule {rule}: {script.name} can import {module} ({chain}); add {dist} to {env_key} or, if "
            f"this rule never runs that code, list it in NOT_ON_PATH with the reason")


@pytest.mark.parametrize("env_key", sorted(NOT_ON_PATH))
def test_excused_imports_are_still_reachable(env_key):
    """An excuse for an import that no rule of this environment can reach any more is stale."""
    reachable = set()
    for _rule, env, script in rule_envs():
        if str(env.relative_to(ROOT)) == env_key or (env_key == "envs/torch-gpu.yaml" and env.name == "torch.yaml"):
            reachable |= {dist_of(m) for m in third_party_imports(script)[1]}
    stale = set(NOT_ON_PATH[env_key]) - reachable
    assert not stale, f"{env_key}: remove {sorted(stale)} from NOT_ON_PATH (no longer imported)"


def test_package_imports_are_declared_in_pyproject():
    deps, dev = declared("cpu", "gpu"), declared("cpu", "gpu", "dev")
    for folder, allowed in (("voxtell", deps), ("scripts", deps), ("tests", dev)):
        local = {p.stem for p in (ROOT / folder).rglob("*.py")} | {p.name for p in (ROOT / folder).iterdir()}
        for path in (ROOT / folder).rglob("*.py"):
            modname = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for module, _names, _lazy in _edges(path, modname)[0]:
                top = module.split(".")[0]
                if not top or top in STDLIB or top in local or top in ("voxtell", "_wf", "conftest"):
                    continue
                assert dist_of(top) in allowed, (
                    f"{path.relative_to(ROOT)} imports {top}; declare {dist_of(top)} in pyproject.toml")


@pytest.mark.parametrize("env", ENV_FILES, ids=[e.name for e in ENV_FILES])
def test_environment_packages_are_project_dependencies_at_locked_versions(env):
    gpu = env.stem.endswith("gpu")
    deps = declared("gpu" if gpu else "cpu", "dev")
    lock = read_lock("gpu.lock.txt" if gpu else "cpu.lock.txt")
    for name, spec in env_packages(env).items():
        assert name in deps, f"{env.name} installs {name}, which pyproject.toml does not declare"
        assert name in lock, f"{name} ({env.name}) is missing from the lock file"
        pinned = lock[name]
        assert spec.contains(pinned, prereleases=True), f"{env.name}: {name}{spec} excludes the locked {pinned}"
        assert deps[name].contains(pinned, prereleases=True), f"pyproject: {name}{deps[name]} excludes {pinned}"


def test_torch_environments_match_their_comments():
    cpu_text = (ROOT / "envs" / "torch.yaml").read_text(encoding="utf-8")
    gpu_text = (ROOT / "envs" / "torch-gpu.yaml").read_text(encoding="utf-8")
    cpu, gpu = env_packages(ROOT / "envs" / "torch.yaml"), env_packages(ROOT / "envs" / "torch-gpu.yaml")
    assert "CPU" in cpu_text.splitlines()[0] and "download.pytorch.org/whl/cpu" in cpu_text
    assert all(Version(s.version).local == "cpu" for s in cpu["torch"]), cpu["torch"]
    assert "CUDA" in gpu_text.splitlines()[0]
    assert all(Version(s.version).local is None for s in gpu["torch"]) and "onnxruntime-gpu" in gpu
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" not in cpu
    # the same package set otherwise: a stage behaves the same on either
    assert set(cpu) - {"onnxruntime"} == set(gpu) - {"onnxruntime-gpu"}


def test_gpu_lock_differs_from_cpu_lock_only_by_the_cuda_builds():
    cpu, gpu = read_lock("cpu.lock.txt"), read_lock("gpu.lock.txt")
    assert cpu["torch"].local == "cpu" and gpu["torch"].local is None
    assert cpu["torch"].public == gpu["torch"].public
    assert cpu["dynamic-network-architectures"] == gpu["dynamic-network-architectures"]
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu and "onnxruntime" in cpu
    cuda_only = {n for n in set(gpu) - set(cpu) if n.startswith(("nvidia-", "cuda-", "triton"))}
    assert set(gpu) - set(cpu) == cuda_only | {"onnxruntime-gpu"}
    assert set(cpu) - set(gpu) == {"onnxruntime"}
    differ = {n for n in set(cpu) & set(gpu) if cpu[n] != gpu[n]}
    assert differ == {"torch"}, differ


@pytest.mark.parametrize("lock_name", ["cpu.lock.txt", "gpu.lock.txt"])
def test_locks_satisfy_pyproject(lock_name):
    lock = read_lock(lock_name)
    for name, spec in declared("gpu" if lock_name.startswith("gpu") else "cpu", "dev").items():
        assert name in lock, f"{lock_name} lacks {name}"
        assert spec.contains(lock[name], prereleases=True), f"{lock_name}: {name}=={lock[name]} outside {spec}"


def test_this_environment_was_installed_from_its_lock_and_pip_check_is_clean():
    torch_version = Version(distribution("torch").version)
    lock = read_lock("cpu.lock.txt" if torch_version.local == "cpu" else "gpu.lock.txt")
    wrong = {}
    for name, version in lock.items():
        try:
            installed = Version(distribution(name).version)
        except PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, f"installed versions differ from the lock (re-run scripts/bootstrap.sh): {wrong}"
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
