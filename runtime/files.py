"""JSON side files of saved models and exports, and the one error a damaged folder raises."""

import json
import os
import tempfile


class ArtifactError(FileNotFoundError):
    """A saved-model folder is missing, incomplete, damaged or of another task; the one-line
    message says which and what to do. (A `FileNotFoundError` for the callers that catch that.)"""


def write_json(path, data):
    """Write `data` as UTF-8 JSON (non-ASCII kept readable), atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    os.chmod(handle.name, 0o644)  # temporary files are private (0600); these are meant to be shared
    os.replace(handle.name, path)


def read_json(path):
    """Read a JSON file; a missing or unreadable one raises `ArtifactError` naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path} is not readable JSON ({error})") from None
