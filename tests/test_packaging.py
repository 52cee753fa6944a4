"""The constraints CI installs with agree with what pyproject.toml declares."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.samples import install_samples

ROOT = Path(__file__).resolve().parent.parent


def pinned() -> dict[str, str]:
    lines = (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pins}


def expanded(extras: dict, name: str) -> list[str]:
    """An extra's requirements, with a self-reference (`deepfield[serve,track]`) replaced by
    those extras' own requirements."""
    out = []
    for text in extras[name]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "deepfield":
            out += [r for extra in sorted(requirement.extras) for r in expanded(extras, extra)]
        else:
            out.append(text)
    return out


def test_every_declared_dependency_is_pinned_in_the_constraints_within_its_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + expanded(extras, "dev")
    pins = pinned()
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared but not pinned in .ci/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {text}"


def committed_samples() -> set[str]:
    """The sample files committed under datasets/ (what prepare never generates)."""
    files = subprocess.run(
        ["git", "ls-files", "datasets"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {name.removeprefix("datasets/") for name in files}


def test_the_wheel_carries_the_configs_and_every_committed_sample_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("deepfield-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("deepfield_datasets/") for n in names if "datasets/" in n}
    assert shipped == committed_samples()
    configs = {n for n in names if n.endswith(".yaml")}
    assert "apps/fraud/configs/smoke.yaml" in configs and "shared/cli.py" in names
    assert not any("/generated/" in n for n in names)


def test_prepare_copies_the_packaged_samples_to_a_folder_that_lacks_them(tmp_path):
    root = tmp_path / "datasets"
    written = install_samples("nlp", root)
    nlp = {n.removeprefix("nlp/") for n in committed_samples() if n.startswith("nlp/")}
    assert {str(p.relative_to(root / "nlp")) for p in written} == nlp
    original = (ROOT / "datasets" / "nlp" / "score_sample.csv").read_bytes()
    assert (root / "nlp" / "score_sample.csv").read_bytes() == original
    (root / "nlp" / "score_sample.csv").write_text("edited")
    assert install_samples("nlp", root) == []  # a file the user has is never overwritten
    assert (root / "nlp" / "score_sample.csv").read_text() == "edited"
