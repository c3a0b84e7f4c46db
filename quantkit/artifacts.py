"""The artifact folder: layout, atomic writing, and the report's environment facts.

Layout of ``output.dir``::

    model.onnx              the quantized model (what ORTModelFor* loads)
    config.json             the transformers model config
    tokenizer files         tokenizer.json, vocab, special tokens, ...
    ort_config.json         Optimum's description of the quantization
    quantkit_report.json    spec, versions, CPU, FP32 vs quantized metric/latency/size, timings
    quantkit_spec.yaml      the resolved spec

The folder is built next to its final place and renamed into it at the end, so a
crash never leaves half a folder, and an existing folder is only replaced when
asked to. A run holds :func:`output_lock` (``.<name>.lock`` beside the folder) from start to end,
so two runs into one folder cannot mix; the holder of the lock removes what a killed run left
behind (temporary siblings; a replaced folder whose swap was cut short is put back). A full disk
is a :class:`~quantkit.errors.DiskFullError`, with the temporary folder removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ArtifactError, DiskFullError, OutputExistsError, OutputLockedError
from .faults import fault_point

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILE",
    "REPORT_FILE",
    "SPEC_FILE",
    "ORT_CONFIG_FILE",
    "check_output_dir",
    "atomic_directory",
    "output_lock",
    "lock_path",
    "clean_stale",
    "write_artifacts",
    "package_versions",
]

MODEL_FILE = "model.onnx"
REPORT_FILE = "quantkit_report.json"
SPEC_FILE = "quantkit_spec.yaml"
ORT_CONFIG_FILE = "ort_config.json"

KEY_PACKAGES = (
    "quantkit",
    "torch",
    "transformers",
    "tokenizers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "neural-compressor",
    "torchao",
    "datasets",
    "evaluate",
    "huggingface_hub",
    "numpy",
    "pydantic",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_output_dir(target: str | Path, overwrite: bool) -> Path:
    """Fail early (before any expensive work) if ``target`` cannot become the artifact folder."""
    target = Path(target).expanduser().resolve()
    if target.exists():
        if not target.is_dir():
            raise ArtifactError(f"output {target} exists and is not a folder")
        if not overwrite and any(target.iterdir()):
            raise OutputExistsError(
                f"output folder {target} already exists",
                hint="pass --overwrite (or output.overwrite: true) to replace it, or choose another --output",
            )
    parent = target.parent
    probe_dir = parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK):
        raise ArtifactError(f"cannot write into {probe_dir} (needed for output {target})")
    return target


def lock_path(target: str | Path) -> Path:
    """The lock file of artifact folder ``target``: ``.<name>.lock`` beside it."""
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.lock"


@contextmanager
def output_lock(target: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on artifact folder ``target`` (``fcntl.flock`` on ``.<name>.lock`` beside it).

    A second run into the same folder fails at once with :class:`OutputLockedError` naming the folder
    and the pid of the run holding it. The lock dies with its process (a killed run leaves no stale
    lock; the file is removed when the run ends), and its holder cleans what killed runs left behind
    (:func:`clean_stale`).
    """
    target = Path(target).expanduser().resolve()
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _artifact_error(f"cannot create the lock file {path} for {target}", exc) from exc
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _artifact_error(f"cannot lock {path}", exc) from exc
            try:
                holder: int | None = int(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or 0) or None
            except (OSError, ValueError):
                holder = None
            who = f"process {holder}" if holder else "another process"
            raise OutputLockedError(
                f"output folder {target} is in use by another quantkit run ({who} holds {path})",
                holder_pid=holder, hint="wait for that run to finish, or choose another --output",
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if not same:  # the previous holder removed it between our open and flock: take the new one
            os.close(fd)
            fd = -1
            with output_lock(target) as again:
                yield again
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        held = True
        clean_stale(target)
        yield path
    finally:
        if held:
            try:
                os.unlink(path)  # still holding the lock: a run that opened it meanwhile re-checks the inode
            except OSError:
                pass
        if fd >= 0:
            os.close(fd)


def clean_stale(target: str | Path) -> None:
    """Remove the temporary siblings of ``target`` left by a killed run (call with :func:`output_lock` held).

    If ``target`` is missing but a complete previous folder waits under ``.<name>.old-*`` (a run was
    killed mid-swap), it is put back.
    """
    target = Path(target).expanduser().resolve()
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        logger.warning("restoring %s from %s (a previous run was killed while replacing it)", target, olds[-1])
        olds[-1].rename(target)
        olds = olds[:-1]
    for stale in [*target.parent.glob(f".{target.name}.tmp-*"), *olds]:
        logger.info("removing %s (left by an interrupted run)", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _artifact_error(message: str, exc: OSError) -> ArtifactError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{message}: no space left on the device ({exc.strerror or exc})")
    return ArtifactError(f"{message}: {exc}")


@contextmanager
def atomic_directory(target: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it atomically becomes ``target``.

    On any exception the temporary folder is removed and ``target`` is untouched.
    """
    target = check_output_dir(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise _artifact_error(f"cannot create a folder beside {target}", exc) from exc
    try:
        yield tmp
        fault_point("rename")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            try:
                tmp.rename(target)
            except OSError:
                old.rename(target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_dump(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


#: tokenizer classes transformers 5 writes that older transformers (the optimum stack's 4.57) cannot name, and the
#: class both read the same tokenizer.json with.
_PORTABLE_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def portable_tokenizer_config(folder: Path, tokenizer: Any = None) -> None:
    """A tokenizer saved by transformers 5 from a GGUF (or any tokenizer.json without a model-specific class) names
    ``TokenizersBackend``; name ``PreTrainedTokenizerFast`` instead, which transformers 4.57 and 5 both load, with
    the tokenizer's own input names (the generic class would add ``token_type_ids``)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    portable = _PORTABLE_TOKENIZER_CLASSES.get(config.get("tokenizer_class", ""))
    if portable is not None:
        config["tokenizer_class"] = portable
        names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
        config.setdefault("model_input_names", names)
        _json_dump(config, path)


def write_artifacts(
    target: str | Path,
    *,
    model_path: str | Path,
    model_config: Any,
    tokenizer: Any,
    report: dict[str, Any],
    spec_yaml: str,
    ort_config: dict[str, Any] | None = None,
    overwrite: bool = False,
    extra_files: dict[str, str | Path] | None = None,
) -> Path:
    """Write the artifact folder atomically and return its path."""
    with atomic_directory(target, overwrite) as tmp:
        try:
            shutil.copyfile(model_path, tmp / MODEL_FILE)
            data_file = Path(str(model_path) + "_data")
            if data_file.exists():
                shutil.copyfile(data_file, tmp / (MODEL_FILE + "_data"))
            fault_point("artifacts")
            model_config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            portable_tokenizer_config(tmp, tokenizer)
            if ort_config is not None:
                _json_dump(ort_config, tmp / ORT_CONFIG_FILE)
            for name, src in (extra_files or {}).items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            (tmp / SPEC_FILE).write_text(spec_yaml, encoding="utf-8")
            _json_dump(report, tmp / REPORT_FILE)
        except OSError as exc:
            raise _artifact_error(f"writing artifacts for {target} failed", exc) from exc
    logger.info("artifacts written to %s", target)
    return Path(target).expanduser().resolve()
