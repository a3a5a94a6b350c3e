"""Optional packages and the pyproject extra that installs each, so that a missing one ends in one
line that says what to install (a UserError), never in a traceback."""

from __future__ import annotations

import importlib.util

from scoreflow.errors import UserError

PACKAGE = "scoreflow-cli"
# import name -> extra of pyproject.toml; None marks a core dependency (a broken install).
EXTRAS: dict[str, str | None] = {
    "torch": "cuda", "peft": "cuda", "accelerate": "cuda",
    "mlx": "mlx", "mlx_lm": "mlx",
    "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
    "trl": "bench", "datasets": "bench", "pyte": "test", "pytest": "test",
    "matplotlib": None, "rich": None, "numpy": None, "transformers": None, "tokenizers": None,
    "gguf": None, "safetensors": None, "openai": None, "sympy": None,
}


def install_line(module: str) -> str:
    """The pip command that installs `module`."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    if extra:
        return f'pip install "{PACKAGE}[{extra}]"'
    return f"pip install {top}" if top in EXTRAS else f"pip install {top.replace('_', '-')}"


def missing(module: str, needed_for: str = "") -> UserError:
    top = module.split(".")[0]
    what = f"{needed_for} needs" if needed_for else "scoreflow needs"
    core = " (a core dependency: the install is incomplete)" if top in EXTRAS and EXTRAS[top] is None else ""
    return UserError(f"{what} the {top} package, which is not installed{core}: {install_line(top)}")


def require(module: str, needed_for: str = "") -> None:
    """Raise the one-line UserError when `module` cannot be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing(module, needed_for)


def from_error(e: BaseException) -> UserError | None:
    """The one-line error for a ModuleNotFoundError (also as the cause of another), else None."""
    while e is not None:
        if isinstance(e, ModuleNotFoundError) and e.name:
            return missing(e.name)
        e = e.__cause__  # type: ignore[assignment]
    return None
