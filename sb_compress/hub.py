"""Uploading a model folder to the Hugging Face Hub (``sb-compress push``).

:func:`push` checks the folder and the repo id, lists what would be sent
(``dry_run``), and otherwise uploads with ``huggingface_hub``
(``create_repo`` then ``upload_folder``). It fails before touching the
network when no token is configured, and turns an unreachable hub into one
clear message.

Authors
 * sb_compress team 2026
"""

import os
import re

#: ``owner/name`` or ``name``, as the Hub accepts them.
REPO_ID = re.compile(r"^([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


class PushError(ValueError):
    """The folder can't be pushed (bad input, no token, no network)."""


def folder_files(folder):
    """``[(relative path, bytes)]`` of every file under ``folder``, sorted.

    Hidden files and folders (``.git``, ``.cache``) are left out, as
    ``upload_folder`` leaves them out.
    """
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            files.append((os.path.relpath(path, folder), os.path.getsize(path)))
    return files


def check_push(folder, repo_id):
    """Fails with a message naming the problem; returns the file list."""
    if not os.path.isdir(folder):
        raise PushError(f"{folder}: no such folder")
    if not REPO_ID.match(repo_id or ""):
        raise PushError(
            f"--repo-id {repo_id!r}: expected NAME or OWNER/NAME (letters, "
            "digits, '-', '_', '.')"
        )
    files = folder_files(folder)
    if not files:
        raise PushError(f"{folder} is empty: nothing to push")
    return files


def push(folder, repo_id, private=False, dry_run=False, token=None):
    """Uploads ``folder`` to the Hub repo ``repo_id``.

    Arguments
    ---------
    folder : str
        The folder to upload.
    repo_id : str
        ``OWNER/NAME`` (or ``NAME`` under the token's user).
    private : bool
        Create the repo private.
    dry_run : bool
        Only list the files and sizes; no token and no network needed.
    token : str, optional
        Default: the configured one (``HF_TOKEN`` or ``hf auth login``).

    Returns
    -------
    dict
        ``files`` (``[(path, bytes)]``), ``bytes``, ``uploaded`` (bool) and,
        after an upload, ``url``.

    Raises
    ------
    PushError
        On a bad folder or repo id, a missing token, or an unreachable
        hub; nothing is uploaded.
    """
    files = check_push(folder, repo_id)
    result = {
        "files": files,
        "bytes": sum(size for _, size in files),
        "uploaded": False,
    }
    if dry_run:
        return result
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN "
            "(nothing was uploaded; --dry-run lists the files)"
        )
    api = huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo_id)
    except Exception as error:  # network, auth and offline-mode errors alike
        message = " ".join(str(error).split())[:300]
        raise PushError(
            f"could not push to {repo_id}: {type(error).__name__}: {message}"
        ) from error
    result.update(uploaded=True, url=str(url))
    return result
